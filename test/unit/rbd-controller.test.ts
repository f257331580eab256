import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { RbdController } from '../../src/backends/rbd/controller.js';
import { EBUSY, ENOENT } from '../../src/backends/rbd/rbd-api.js';
import { parseConfig } from '../../src/config/config.js';
import { nameHash, parseId, type ObjectId } from '../../src/csi/ids.js';
import type * as csi from '../../src/csi/types.js';
import { failedPrecondition, isCsiError } from '../../src/errors.js';
import { ExecError } from '../../src/util/exec.js';
import { FakeRbd } from '../helpers/fake-rbd.js';

/**
 * The RBD controller's logic on an in-memory RBD (test/helpers/fake-rbd.ts):
 * ids, records, idempotent retries, and the crash-recovery branches a real
 * cluster reaches only by a kill at the right instant (an image without its
 * record, temporary snapshots left on a source, half-made restores).
 */

const cfg = parseConfig('clusters:\n  - id: c\n    ceph: { monitors: ["m:6789"], userID: u, userKeyFile: /nonexistent/key }\n');
const ctx = { reqId: 't', log: pino({ level: 'silent' }) };
const PARAMS = { backend: 'rbd', clusterID: 'c', pool: 'rbd' };
const MiB = 2 ** 20;
const cap = { mount: { fs_type: 'ext4', mount_flags: [], volume_mount_group: '' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } } as unknown as csi.VolumeCapability;

function setup() {
  const rbd = new FakeRbd();
  const ctrl = new RbdController(cfg, ctx.log, () => rbd);
  const volReq = (name: string, bytes = 64 * MiB, source?: csi.CreateVolumeRequest['volume_content_source']) =>
    ({ name, capacity_range: { required_bytes: bytes, limit_bytes: 0 }, volume_capabilities: [cap], parameters: PARAMS, secrets: {}, volume_content_source: source ?? null }) as unknown as csi.CreateVolumeRequest;
  const create = (name: string, bytes?: number, source?: csi.CreateVolumeRequest['volume_content_source']) => ctrl.createVolume(volReq(name, bytes, source), ctx);
  const snapshot = async (source: string | undefined, name: string) => ctrl.createSnapshot(parseId(source!, 'v')!, { source_volume_id: source, name, secrets: {}, parameters: {} } as unknown as csi.CreateSnapshotRequest, ctx);
  const vid = (id: string | undefined): ObjectId => parseId(id!, 'v')!;
  const sid = (id: string | undefined): ObjectId => parseId(id!, 's')!;
  const image = (kind: 'vol' | 'snap', name: string) => `csi-${kind}-${nameHash(cfg.driverName, name)}`;
  return { rbd, ctrl, create, snapshot, vid, sid, image };
}

async function rejects(p: Promise<unknown>, code: status, msg?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isCsiError(e, code), `expected ${status[code]}, got ${String(e)}`);
    if (msg) assert.match((e as Error).message, msg);
    return true;
  });
}

describe('rbd controller: volumes', () => {
  it('creates an image with its record in two calls, and answers a retry from the record', async () => {
    const { rbd, create, image } = setup();
    const v = await create('pvc-1');
    assert.deepEqual(rbd.calls, ['create', 'metaSet']);
    const img = rbd.find('rbd', image('vol', 'pvc-1'))!;
    assert.equal(img.size, 64 * MiB);
    assert.deepEqual(img.features, ['layering', 'exclusive-lock', 'object-map', 'fast-diff', 'deep-flatten']);
    assert.equal(JSON.parse(img.meta.get('strata.volume')!).name, 'pvc-1');
    const again = await create('pvc-1');
    assert.equal(again.volume_id, v.volume_id);
    assert.equal(again.capacity_bytes, 64 * MiB);
    await rejects(create('pvc-1', 128 * MiB), status.ALREADY_EXISTS, /size/);
  });

  it('answers INVALID_ARGUMENT, making nothing, for a pool or data pool the cluster lacks, in CreateVolume and GetCapacity', async () => {
    const { rbd, ctrl } = setup();
    for (const [key, p] of [['pool', { pool: 'nopool' }], ['dataPool', { dataPool: 'nopool' }], ['pool', { pool: 'nopool', radosNamespace: 'ns' }]] as const) {
      const req = { name: 'pvc-x', capacity_range: { required_bytes: MiB, limit_bytes: 0 }, volume_capabilities: [cap], parameters: { ...PARAMS, ...p }, secrets: {} } as unknown as csi.CreateVolumeRequest;
      await rejects(ctrl.createVolume(req, ctx), status.INVALID_ARGUMENT, new RegExp(`"${key}": cluster c has no pool "nopool"`));
      await rejects(ctrl.getCapacity('c', { ...PARAMS, ...p }, ctx), status.INVALID_ARGUMENT, new RegExp(`"${key}"`));
    }
    assert.equal(rbd.images.size, 0);
    assert.equal(rbd.namespaceSpecs.size, 0);
    rbd.pools.add('ec-data');
    assert.equal(await ctrl.getCapacity('c', { ...PARAMS, dataPool: 'ec-data' }, ctx), 10 * 2 ** 30);
  });

  it('finishes a blank image whose create stopped before its record', async () => {
    const { rbd, create, image } = setup();
    rbd.failNext('metaSet', new ExecError('rbd (rados client)', undefined, 'killed', false, true));
    await assert.rejects(create('pvc-1'));
    const img = rbd.find('rbd', image('vol', 'pvc-1'))!;
    assert.equal(img.meta.size, 0, 'the crash left an image without a record');
    const id = img.id;
    const v = await create('pvc-1');
    assert.equal(rbd.find('rbd', image('vol', 'pvc-1'))!.id, id, 'the same image, finished');
    assert.equal(JSON.parse(rbd.find('rbd', image('vol', 'pvc-1'))!.meta.get('strata.volume')!).name, 'pvc-1');
    assert.equal(v.capacity_bytes, 64 * MiB);
  });

  it('grows on expand, never shrinks, and answers NOT_FOUND for a missing volume', async () => {
    const { rbd, ctrl, create, vid } = setup();
    const v = await create('pvc-1');
    const expand = (bytes: number) => ctrl.expand(vid(v.volume_id), { volume_id: v.volume_id!, capacity_range: { required_bytes: bytes, limit_bytes: 0 }, secrets: {}, volume_capability: cap } as unknown as csi.ControllerExpandVolumeRequest, ctx);
    rbd.calls.length = 0;
    assert.deepEqual(await expand(128 * MiB), { capacity_bytes: 128 * MiB, node_expansion_required: true });
    assert.deepEqual(rbd.calls, ['grow'], 'one call');
    assert.equal((await expand(32 * MiB)).capacity_bytes, 128 * MiB);
    assert.equal((await rbd.info('rbd', vid(v.volume_id).location[1]!))!.size, 128 * MiB);
    await ctrl.deleteVolume(vid(v.volume_id), {}, ctx);
    await rejects(expand(256 * MiB), status.NOT_FOUND);
  });

  it('answers ABORTED while a killed client still holds the image, FAILED_PRECONDITION while it is published', async () => {
    const { rbd, ctrl, create, vid, image } = setup();
    const v = await create('pvc-1');
    const img = rbd.find('rbd', image('vol', 'pvc-1'))!;
    img.watchers.push('10.0.0.9:0/1');
    await rejects(ctrl.deleteVolume(vid(v.volume_id), {}, ctx), status.ABORTED);
    img.meta.set('strata.attach.node-a', '{"mode":"SINGLE_NODE_WRITER","readonly":false}');
    await rejects(ctrl.deleteVolume(vid(v.volume_id), {}, ctx), status.FAILED_PRECONDITION, /in use/);
    img.watchers.length = 0;
    await ctrl.deleteVolume(vid(v.volume_id), {}, ctx);
    assert.equal(rbd.find('rbd', image('vol', 'pvc-1')), undefined);
    await ctrl.deleteVolume(vid(v.volume_id), {}, ctx);
  });
});

describe('rbd controller: snapshots and restores', () => {
  it('makes a snapshot as a clone with one snapshot "csi", leaving nothing on the source', async () => {
    const { rbd, create, snapshot, image } = setup();
    const v = await create('pvc-1');
    const s = await snapshot(v.volume_id, 'snap-1');
    assert.equal(s.source_volume_id, v.volume_id);
    assert.equal(s.size_bytes, 64 * MiB);
    const src = rbd.find('rbd', image('vol', 'pvc-1'))!;
    assert.deepEqual([...src.snaps.values()].map((x) => x.namespace), ['trash'], 'the temporary snapshot waits in the trash namespace for its clone');
    const simg = rbd.find('rbd', image('snap', 'snap-1'))!;
    assert.deepEqual([...simg.snaps.keys()], ['csi']);
    assert.equal(JSON.parse(simg.meta.get('strata.snapshot')!).name, 'snap-1');
    assert.deepEqual((await snapshot(v.volume_id, 'snap-1')).snapshot_id, s.snapshot_id, 'a retry answers from the record');
    const other = await create('pvc-2');
    await rejects(snapshot(other.volume_id, 'snap-1'), status.ALREADY_EXISTS);
    assert.deepEqual([...rbd.find('rbd', image('vol', 'pvc-2'))!.snaps.keys()], [], 'the refused retry removed its temporary snapshot');
  });

  it('makes a snapshot image cut short by a crash again, and removes the temporary snapshot it left', async () => {
    const { rbd, create, snapshot, image } = setup();
    const v = await create('pvc-1');
    rbd.failNext('metaSet', new ExecError('rbd (rados client)', undefined, 'killed', false, true));
    await assert.rejects(snapshot(v.volume_id, 'snap-1'));
    const half = rbd.find('rbd', image('snap', 'snap-1'))!;
    assert.ok(half.meta.has('strata.volume') && !half.meta.has('strata.snapshot'), 'a half-made snapshot image: its source record, not its own');
    const s = await snapshot(v.volume_id, 'snap-1');
    const simg = rbd.find('rbd', image('snap', 'snap-1'))!;
    assert.notEqual(simg.id, half.id, 'made again, not finished');
    assert.equal(JSON.parse(simg.meta.get('strata.snapshot')!).source, v.volume_id);
    assert.equal(s.size_bytes, 64 * MiB);
    const srcSnaps = [...rbd.find('rbd', image('vol', 'pvc-1'))!.snaps.values()];
    assert.ok(srcSnaps.every((x) => x.namespace === 'trash'), 'no user snapshot left on the source');
  });

  it('answers ABORTED when an earlier attempt still finishing removes the temporary snapshot under it, and the retry converges', async () => {
    const { rbd, create, snapshot, image } = setup();
    const v = await create('pvc-1');
    // A killed attempt's last steps reach the OSDs after the retry found its temporary snapshot made: the clone finds it gone.
    rbd.failNext('clone', new ExecError('rbd clone', ENOENT, 'ImageNotFound: [errno 2] RBD image not found (error creating clone)', false));
    await rejects(snapshot(v.volume_id, 'snap-1'), status.ABORTED, /earlier attempt/);
    const s = await snapshot(v.volume_id, 'snap-1');
    assert.equal(JSON.parse(rbd.find('rbd', image('snap', 'snap-1'))!.meta.get('strata.snapshot')!).source, v.volume_id);
    assert.equal(s.size_bytes, 64 * MiB);
    rbd.failNext('clone', new ExecError('rbd clone', ENOENT, 'ImageNotFound: [errno 2] RBD image not found (error creating clone)', false));
    await rejects(create('clone-1', 64 * MiB, { volume: { volume_id: v.volume_id } } as never), status.ABORTED, /earlier attempt/);
    const c = await create('clone-1', 64 * MiB, { volume: { volume_id: v.volume_id } } as never);
    assert.equal(JSON.parse(rbd.find('rbd', image('vol', 'clone-1'))!.meta.get('strata.volume')!).source.volume, v.volume_id);
    assert.equal(c.capacity_bytes, 64 * MiB);
  });

  it('answers NOT_FOUND for a missing source, unless the snapshot was finished before', async () => {
    const { ctrl, create, snapshot, vid } = setup();
    const v = await create('pvc-1');
    const s = await snapshot(v.volume_id, 'snap-1');
    await ctrl.deleteVolume(vid(v.volume_id), {}, ctx);
    assert.equal((await snapshot(v.volume_id, 'snap-1')).snapshot_id, s.snapshot_id);
    await rejects(snapshot(v.volume_id, 'snap-2'), status.NOT_FOUND);
  });

  it('restores a snapshot with only its own record, grown to the size asked', async () => {
    const { rbd, create, snapshot, image } = setup();
    const v = await create('pvc-1');
    rbd.find('rbd', image('vol', 'pvc-1'))!.meta.set('strata.attach.node-a', '{}');
    const s = await snapshot(v.volume_id, 'snap-1');
    rbd.calls.length = 0;
    const r = await create('restore-1', 128 * MiB, { snapshot: { snapshot_id: s.snapshot_id } } as never);
    assert.deepEqual(rbd.calls, ['info', 'clone', 'grow', 'metaStrip']);
    const img = rbd.find('rbd', image('vol', 'restore-1'))!;
    assert.deepEqual([...img.meta.keys()], ['strata.volume'], 'inherited records and attachments are gone');
    assert.equal(JSON.parse(img.meta.get('strata.volume')!).source.snapshot, s.snapshot_id);
    assert.equal(img.size, 128 * MiB);
    assert.equal(r.capacity_bytes, 128 * MiB);
    assert.equal((await create('restore-1', 128 * MiB, { snapshot: { snapshot_id: s.snapshot_id } } as never)).volume_id, r.volume_id);
    await rejects(create('restore-1', 128 * MiB), status.ALREADY_EXISTS, /content source/);
    await rejects(create('restore-2', 32 * MiB, { snapshot: { snapshot_id: s.snapshot_id } } as never), status.OUT_OF_RANGE);
  });

  it('makes a restore cut short before its record again, even with the record it inherited', async () => {
    const { rbd, create, snapshot, image } = setup();
    const v = await create('pvc-1');
    const s = await snapshot(v.volume_id, 'snap-1');
    rbd.failNext('metaStrip', new ExecError('rbd (rados client)', undefined, 'killed', false, true));
    await assert.rejects(create('restore-1', 64 * MiB, { snapshot: { snapshot_id: s.snapshot_id } } as never));
    const half = rbd.find('rbd', image('vol', 'restore-1'))!;
    assert.equal(JSON.parse(half.meta.get('strata.volume')!).name, 'pvc-1', 'the crash left the source record');
    await create('restore-1', 64 * MiB, { snapshot: { snapshot_id: s.snapshot_id } } as never);
    const img = rbd.find('rbd', image('vol', 'restore-1'))!;
    assert.notEqual(img.id, half.id);
    assert.equal(JSON.parse(img.meta.get('strata.volume')!).name, 'restore-1');
  });

  it('answers a retry of a finished restore whose snapshot is gone since', async () => {
    const { ctrl, create, snapshot, sid } = setup();
    const v = await create('pvc-1');
    const s = await snapshot(v.volume_id, 'snap-1');
    const r = await create('restore-1', 64 * MiB, { snapshot: { snapshot_id: s.snapshot_id } } as never);
    await ctrl.deleteSnapshot(sid(s.snapshot_id), {}, ctx);
    assert.equal((await create('restore-1', 64 * MiB, { snapshot: { snapshot_id: s.snapshot_id } } as never)).volume_id, r.volume_id);
    await rejects(create('restore-2', 64 * MiB, { snapshot: { snapshot_id: s.snapshot_id } } as never), status.NOT_FOUND);
  });

  it('clones a volume through a temporary snapshot, and removes it when a retry finds the clone done', async () => {
    const { rbd, create, image } = setup();
    const v = await create('pvc-1');
    const c = await create('clone-1', 64 * MiB, { volume: { volume_id: v.volume_id } } as never);
    const src = rbd.find('rbd', image('vol', 'pvc-1'))!;
    assert.ok([...src.snaps.values()].every((x) => x.namespace === 'trash'));
    assert.equal(JSON.parse(rbd.find('rbd', image('vol', 'clone-1'))!.meta.get('strata.volume')!).source.volume, v.volume_id);
    assert.equal((await create('clone-1', 64 * MiB, { volume: { volume_id: v.volume_id } } as never)).volume_id, c.volume_id);
    assert.ok([...src.snaps.values()].every((x) => x.namespace === 'trash'), 'the retry left no user snapshot on the source');
  });
});

describe('rbd controller: deletion and the trash', () => {
  it('answers ABORTED, not INTERNAL, for a volume whose removal a kill cut short after its id object went', async () => {
    const { rbd, ctrl, create, vid, image } = setup();
    const v = await create('pvc-1');
    rbd.find('rbd', image('vol', 'pvc-1'))!.watchers.push('10.0.0.9:0/1');
    rbd.failNext('metaList', new ExecError('rbd meta_list', ENOENT, 'ObjectNotFound: failed to read rbd_id.csi-vol-x', false));
    await rejects(ctrl.deleteVolume(vid(v.volume_id), {}, ctx), status.ABORTED, /still open/);
    rbd.find('rbd', image('vol', 'pvc-1'))!.watchers.length = 0;
    await ctrl.deleteVolume(vid(v.volume_id), {}, ctx);
    assert.equal(rbd.find('rbd', image('vol', 'pvc-1')), undefined);
  });

  it('removes temporary snapshots a crash left on a volume before removing it', async () => {
    const { rbd, ctrl, create, vid, image } = setup();
    const v = await create('pvc-1');
    const name = image('vol', 'clone-x');
    await rbd.snapCreate('rbd', image('vol', 'pvc-1'), name);
    await rbd.snapCreate('rbd', image('vol', 'pvc-1'), 'not-ours');
    await ctrl.deleteVolume(vid(v.volume_id), {}, ctx);
    const left = rbd.find('rbd', image('vol', 'pvc-1'));
    assert.ok(left === undefined || left.trashed, 'gone or in the trash');
    assert.equal([...rbd.images.values()].find((i) => i.name === image('vol', 'pvc-1'))?.snaps.has(name), false, 'our temporary snapshot went');
  });

  it('moves a volume whose snapshots clones still need to the trash, and purges it after its last clone', async () => {
    const { rbd, ctrl, create, snapshot, vid, sid, image } = setup();
    const v = await create('pvc-1');
    const s = await snapshot(v.volume_id, 'snap-1');
    await ctrl.deleteVolume(vid(v.volume_id), {}, ctx);
    assert.deepEqual((await rbd.trashList('rbd')).map((e) => e.name), [image('vol', 'pvc-1')]);
    await ctrl.deleteSnapshot(sid(s.snapshot_id), {}, ctx);
    for (let i = 0; i < 50 && (await rbd.trashList('rbd')).length; i++) await sleep(5);
    assert.deepEqual(await rbd.trashList('rbd'), [], 'the background purge took the trashed source');
    assert.equal(rbd.images.size, 0);
    await ctrl.deleteSnapshot(sid(s.snapshot_id), {}, ctx);
  });

  it('answers ABORTED when an unfinished image is still held by a killed command', async () => {
    const { rbd, create, snapshot, image } = setup();
    const v = await create('pvc-1');
    const s = await snapshot(v.volume_id, 'snap-1');
    rbd.failNext('metaStrip', new ExecError('rbd (rados client)', undefined, 'killed', false, true));
    await assert.rejects(create('restore-1', 64 * MiB, { snapshot: { snapshot_id: s.snapshot_id } } as never));
    rbd.find('rbd', image('vol', 'restore-1'))!.watchers.push('10.0.0.9:0/1');
    rbd.failNext('remove', new ExecError('rbd remove', EBUSY, 'image has watchers', false));
    await rejects(create('restore-1', 64 * MiB, { snapshot: { snapshot_id: s.snapshot_id } } as never), status.ABORTED, /killed command/);
  });
});

describe('rbd controller: listing and lookups', () => {
  it('lists only its own volumes and snapshots, and snapshots by source', async () => {
    const { rbd, ctrl, create, snapshot } = setup();
    const a = await create('a');
    const b = await create('b');
    await rbd.create('rbd', 'someone-else', MiB, { features: ['layering'] });
    const sa = await snapshot(a.volume_id, 'sa');
    await snapshot(b.volume_id, 'sb');
    assert.deepEqual(await ctrl.listVolumeIds('c', ctx), [a.volume_id, b.volume_id].sort());
    assert.deepEqual(await ctrl.listSnapshotIds('c', parseId(a.volume_id!, 'v'), {}, ctx), [sa.snapshot_id]);
    assert.equal((await ctrl.listSnapshotIds('c', undefined, {}, ctx)).length, 2);
    const got = await ctrl.getVolume(parseId(a.volume_id!, 'v')!, {}, ctx);
    assert.equal(got?.volume.volume_id, a.volume_id);
    assert.equal(got?.abnormal, undefined);
  });
});

describe('rbd controller: a RADOS namespace', () => {
  const NS_PARAMS = { ...PARAMS, radosNamespace: 'tenant-a' };
  const nsReq = (name: string, bytes = 64 * MiB, source?: csi.CreateVolumeRequest['volume_content_source'], parameters: Record<string, string> = NS_PARAMS) =>
    ({ name, capacity_range: { required_bytes: bytes, limit_bytes: 0 }, volume_capabilities: [cap], parameters, secrets: {}, volume_content_source: source ?? null }) as unknown as csi.CreateVolumeRequest;

  it('makes the namespace on first use, and keeps volumes, snapshots, restores and clones in it', async () => {
    const { rbd, ctrl, snapshot, vid, image } = setup();
    const v = await ctrl.createVolume(nsReq('pvc-1'), ctx);
    assert.equal(v.volume_id, `s1:v:rbd:c:rbd:tenant-a:${image('vol', 'pvc-1')}`);
    assert.deepEqual(rbd.calls, ['create', 'namespaceCreate', 'create', 'metaSet']);
    assert.equal(v.volume_context?.radosNamespace, 'tenant-a');
    assert.ok(rbd.find('rbd/tenant-a', image('vol', 'pvc-1')));
    assert.equal(rbd.find('rbd', image('vol', 'pvc-1')), undefined, 'nothing in the default namespace');
    rbd.calls.length = 0;
    await ctrl.createVolume(nsReq('pvc-2'), ctx);
    assert.deepEqual(rbd.calls, ['create', 'metaSet'], 'an existing namespace costs nothing');

    const s = await snapshot(v.volume_id, 'snap-1');
    assert.equal(s.snapshot_id, `s1:s:rbd:c:rbd:tenant-a:${image('snap', 'snap-1')}`);
    const r = await ctrl.createVolume(nsReq('restore-1', 128 * MiB, { snapshot: { snapshot_id: s.snapshot_id } } as never), ctx);
    assert.equal(rbd.find('rbd/tenant-a', image('vol', 'restore-1'))?.size, 128 * MiB);
    const c = await ctrl.createVolume(nsReq('clone-1', 64 * MiB, { volume: { volume_id: v.volume_id } } as never), ctx);
    assert.ok(rbd.find('rbd/tenant-a', image('vol', 'clone-1')));
    // Restores and clones stay in the namespace of their source.
    await rejects(ctrl.createVolume(nsReq('x', 64 * MiB, { snapshot: { snapshot_id: s.snapshot_id } } as never, PARAMS), ctx), status.INVALID_ARGUMENT, /namespace/);
    await rejects(ctrl.createVolume(nsReq('y', 64 * MiB, { volume: { volume_id: v.volume_id } } as never, { ...PARAMS, radosNamespace: 'other' }), ctx), status.INVALID_ARGUMENT, /namespace/);

    const exp = await ctrl.expand(vid(v.volume_id), { volume_id: v.volume_id, capacity_range: { required_bytes: 256 * MiB }, secrets: {} } as unknown as csi.ControllerExpandVolumeRequest, ctx);
    assert.equal(exp.capacity_bytes, 256 * MiB);
    assert.equal(rbd.find('rbd/tenant-a', image('vol', 'pvc-1'))?.size, 256 * MiB);

    const mine = await ctrl.createVolume(nsReq('default-ns', 64 * MiB, undefined, PARAMS), ctx);
    assert.deepEqual(await ctrl.listVolumeIds('c', ctx), [v.volume_id, mine.volume_id, r.volume_id, c.volume_id, `s1:v:rbd:c:rbd:tenant-a:${image('vol', 'pvc-2')}`].sort());
    assert.deepEqual(await ctrl.listSnapshotIds('c', vid(v.volume_id), {}, ctx), [s.snapshot_id]);
    assert.equal((await ctrl.getVolume(vid(v.volume_id), {}, ctx))?.volume.volume_context?.radosNamespace, 'tenant-a');
  });

  it('deletes in the namespace, trashing a source its snapshots need and purging it after', async () => {
    const { rbd, ctrl, snapshot, vid, sid, image } = setup();
    const v = await ctrl.createVolume(nsReq('pvc-1'), ctx);
    const s = await snapshot(v.volume_id, 'snap-1');
    await ctrl.deleteVolume(vid(v.volume_id), {}, ctx);
    assert.deepEqual((await rbd.trashList('rbd/tenant-a')).map((e) => e.name), [image('vol', 'pvc-1')]);
    await ctrl.deleteSnapshot(sid(s.snapshot_id), {}, ctx);
    for (let i = 0; i < 50 && (await rbd.trashList('rbd/tenant-a')).length; i++) await sleep(5);
    assert.deepEqual(await rbd.trashList('rbd/tenant-a'), [], 'the background purge ran in the namespace');
    assert.equal(rbd.images.size, 0);
  });

  it('says what to do when the identity may not create the namespace', async () => {
    const { rbd, ctrl } = setup();
    rbd.failNext('namespaceCreate', failedPrecondition('client.u is not allowed to reach pool rbd'));
    await rejects(ctrl.createVolume(nsReq('pvc-1'), ctx), status.FAILED_PRECONDITION, /rbd namespace create rbd\/tenant-a/);
  });
});
