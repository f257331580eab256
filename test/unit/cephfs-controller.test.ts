import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { CephfsController, nodeUser, volumeUser, type CloneWait } from '../../src/backends/cephfs/controller.js';
import { EPERM } from '../../src/backends/cephfs/subvolume-api.js';
import { attachKey } from '../../src/backends/attachments.js';
import { parseConfig } from '../../src/config/config.js';
import { encodeId, nameHash, parseId, type ObjectId } from '../../src/csi/ids.js';
import type * as csi from '../../src/csi/types.js';
import { isCsiError } from '../../src/errors.js';
import { ExecError } from '../../src/util/exec.js';
import { FakeCephFs, type FakeSubvolume } from '../helpers/fake-cephfs.js';

/**
 * The CephFS controller's logic on an in-memory mgr (test/helpers/fake-cephfs.ts):
 * ids, records, idempotent retries, and the crash-recovery branches a real
 * cluster reaches only by a kill at the right instant (a subvolume without its
 * record, a clone's temporary snapshot left on its source, name claims and
 * deletions cut short), and clones still running.
 */

const cfg = parseConfig('clusters:\n  - id: c\n    ceph: { monitors: ["m:6789"], userID: u, userKeyFile: /nonexistent/key }\n');
const ctx = { reqId: 't', log: pino({ level: 'silent' }) };
const PARAMS = { backend: 'cephfs', clusterID: 'c', fsName: 'cephfs' };
const MiB = 2 ** 20;
const FS = 'cephfs';
const GROUP = 'csi';
const cap = (mode = 'SINGLE_NODE_WRITER') => ({ mount: { fs_type: '', mount_flags: [], volume_mount_group: '' }, access_mode: { mode } }) as unknown as csi.VolumeCapability;
const killed = (op = 'fs subvolume') => new ExecError(`ceph ${op} (rados client)`, undefined, 'killed', false, true);
const MUTATIONS = ['create', 'resize', 'remove', 'metaSet', 'metaRemove', 'snapCreate', 'snapRemove', 'snapMetaSet', 'retainedSet', 'retainedRemove', 'claimSet', 'claimRemove', 'clone', 'authorize', 'deauthorize', 'evict', 'ensureGroup'];

type Source = csi.CreateVolumeRequest['volume_content_source'];

function setup(wait: CloneWait = { totalMs: 40, pollMs: 5 }) {
  const fake = new FakeCephFs();
  const ctrl = new CephfsController(cfg, (_conn, fs, group) => fake.api(fs, group), wait);
  const volReq = (name: string, bytes: number | null, source?: Source, params: Record<string, string> = {}) =>
    ({
      name,
      capacity_range: bytes === null ? null : { required_bytes: bytes, limit_bytes: 0 },
      volume_capabilities: [cap()],
      parameters: { ...PARAMS, ...params },
      secrets: {},
      volume_content_source: source ?? null,
    }) as unknown as csi.CreateVolumeRequest;
  /** bytes null: no capacity range. */
  const create = (name: string, bytes: number | null = 64 * MiB, source?: Source, params?: Record<string, string>) => ctrl.createVolume(volReq(name, bytes, source, params), ctx);
  const snapshot = (source: string | undefined, name: string) => ctrl.createSnapshot(vid(source), { source_volume_id: source, name, secrets: {}, parameters: {} } as unknown as csi.CreateSnapshotRequest, ctx);
  const vid = (id: string | undefined): ObjectId => parseId(id!, 'v')!;
  const sid = (id: string | undefined): ObjectId => parseId(id!, 's')!;
  const vol = (name: string) => `csi-vol-${nameHash(cfg.driverName, name)}`;
  const snap = (name: string) => `csi-snap-${nameHash(cfg.driverName, name)}`;
  const sv = (name: string): FakeSubvolume | undefined => fake.find(FS, GROUP, vol(name));
  const record = (name: string) => JSON.parse(sv(name)!.meta.get('strata.volume')!) as { name: string; source?: { snapshot?: string; volume?: string } };
  const fromSnapshot = (id: string | undefined): Source => ({ snapshot: { snapshot_id: id! } }) as Source;
  const fromVolume = (id: string | undefined): Source => ({ volume: { volume_id: id! } }) as Source;
  const expand = (id: string | undefined, bytes: number) =>
    ctrl.expand(vid(id), { volume_id: id!, capacity_range: { required_bytes: bytes, limit_bytes: 0 }, secrets: {}, volume_capability: cap() } as unknown as csi.ControllerExpandVolumeRequest, ctx);
  const publish = (id: string | undefined, node: string, mode = 'SINGLE_NODE_WRITER', readonly = false) =>
    ctrl.publish(vid(id), { volume_id: id!, node_id: node, volume_capability: cap(mode), readonly, secrets: {}, volume_context: {} } as unknown as csi.ControllerPublishVolumeRequest, ctx);
  /** The calls the next action makes. */
  const callsOf = async (p: () => Promise<unknown>): Promise<string[]> => {
    fake.calls.length = 0;
    await p();
    return [...fake.calls];
  };
  return { fake, ctrl, create, snapshot, vid, sid, vol, snap, sv, record, fromSnapshot, fromVolume, expand, publish, callsOf };
}

async function rejects(p: Promise<unknown>, code: status, msg?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isCsiError(e, code), `expected ${status[code]}, got ${String(e)}`);
    if (msg) assert.match((e as Error).message, msg);
    return true;
  });
}

const mutations = (calls: string[]) => calls.filter((c) => MUTATIONS.includes(c));

describe('cephfs controller: CreateVolume', () => {
  it('makes the group on first use, then a subvolume and its record; a retry answers from the record', async () => {
    const { fake, create, sv, record, callsOf, vol } = setup();
    let v!: csi.Volume;
    // The lookup, create and record go in one round trip (createIfMissing); after the group is made, all three again.
    assert.deepEqual(await callsOf(async () => (v = await create('pvc-1'))), ['getpath', 'create', 'dataPools', 'ensureGroup', 'getpath', 'create', 'metaSet']);
    assert.equal(v.volume_id, encodeId({ kind: 'v', backend: 'cephfs', cluster: 'c', location: [FS, GROUP, vol('pvc-1')] }));
    assert.equal(v.capacity_bytes, 64 * MiB);
    assert.equal(v.volume_context!.subvolumePath, undefined, 'the path comes with ControllerPublish');
    assert.equal(sv('pvc-1')!.quota, 64 * MiB);
    assert.equal(record('pvc-1').name, 'pvc-1');
    assert.deepEqual(await callsOf(() => create('pvc-2')), ['getpath', 'create', 'metaSet'], 'the group is there: no lookup of it');
    let again!: csi.Volume;
    assert.deepEqual(await callsOf(async () => (again = await create('pvc-1'))), ['getpath', 'info', 'metaList'], 'a retry changes nothing');
    assert.deepEqual(again, v);
    assert.equal(fake.subvolumes.size, 2);
  });

  it('answers a conflicting retry with ALREADY_EXISTS and changes nothing', async () => {
    const { fake, create, snapshot, sv, callsOf, fromSnapshot } = setup();
    const v = await create('pvc-1');
    const s = await snapshot(v.volume_id, 'snap-1');
    const before = JSON.stringify([...sv('pvc-1')!.meta]);
    fake.calls.length = 0;
    await rejects(create('pvc-1', 128 * MiB), status.ALREADY_EXISTS, /size/);
    await rejects(create('pvc-1', null), status.ALREADY_EXISTS, /size/);
    await rejects(create('pvc-1', 64 * MiB, fromSnapshot(s.snapshot_id)), status.ALREADY_EXISTS, /content source/);
    assert.deepEqual(mutations(fake.calls), []);
    assert.equal(sv('pvc-1')!.quota, 64 * MiB);
    assert.equal(JSON.stringify([...sv('pvc-1')!.meta]), before);
    assert.deepEqual(await callsOf(() => create('pvc-1', 64 * MiB)), ['getpath', 'info', 'metaList']);
  });

  it('finishes a subvolume whose create stopped before its record, dropping stray strata keys', async () => {
    const { fake, create, sv, record, callsOf } = setup();
    fake.failNext('metaSet', killed());
    await assert.rejects(create('pvc-1'));
    const left = sv('pvc-1')!;
    assert.equal(left.meta.size, 0, 'the crash left a subvolume without its record');
    left.meta.set(attachKey('node-x'), '{"mode":"SINGLE_NODE_WRITER","readonly":false}');
    left.meta.set('other.key', 'kept');
    const path = left.path;
    let v!: csi.Volume;
    assert.deepEqual(await callsOf(async () => (v = await create('pvc-1'))), ['getpath', 'info', 'metaList', 'metaRemove', 'metaSet'], 'no second create, no resize');
    assert.equal(sv('pvc-1')!.path, path, 'the same subvolume, finished');
    assert.equal(record('pvc-1').name, 'pvc-1');
    assert.deepEqual([...sv('pvc-1')!.meta.keys()].sort(), ['other.key', 'strata.volume']);
    assert.equal(v.capacity_bytes, 64 * MiB);
  });

  it('gives a subvolume left by a crash the size of the retry', async () => {
    const { fake, create, sv } = setup();
    fake.failNext('metaSet', killed());
    await assert.rejects(create('pvc-1', 64 * MiB));
    const v = await create('pvc-1', 96 * MiB);
    assert.equal(v.capacity_bytes, 96 * MiB);
    assert.equal(sv('pvc-1')!.quota, 96 * MiB);
  });

  it('reads only ENOENT from the lookup as a free name: any other error stops the call before a create', async () => {
    const { fake, create } = setup();
    fake.failNext('getpath', new ExecError('ceph fs subvolume getpath', EPERM, 'permission denied', false));
    await assert.rejects(create('pvc-1'), (e: unknown) => e instanceof ExecError && e.exitCode === EPERM);
    assert.deepEqual(fake.calls, ['getpath']);
    assert.equal(fake.subvolumes.size, 0);
  });

  it('keeps a name with "%" (which the mgr reads as interpolation) in the record', async () => {
    const { create, record, sv } = setup();
    await create('a%00');
    assert.ok(!sv('a%00')!.meta.get('strata.volume')!.includes('%'));
    assert.equal(record('a%00').name, 'a%00');
    await create('a%00');
  });

  it('answers INVALID_ARGUMENT, making nothing, for a file system or pool layout the cluster lacks (CreateVolume, restores, GetCapacity)', async () => {
    const { fake, ctrl, create, snapshot, fromSnapshot } = setup();
    await rejects(create('pvc-x', 64 * MiB, undefined, { fsName: 'nofs' }), status.INVALID_ARGUMENT, /"fsName": cluster c has no file system "nofs"/);
    await rejects(create('pvc-x', 64 * MiB, undefined, { pool: 'nopool' }), status.INVALID_ARGUMENT, /"pool": "nopool" is not a data pool of file system "cephfs"/);
    assert.equal(fake.subvolumes.size, 0);
    assert.equal(fake.groups.size, 0, 'no group made for a class that cannot be served');
    await rejects(ctrl.getCapacity('c', { ...PARAMS, fsName: 'nofs' }, ctx), status.INVALID_ARGUMENT, /"fsName"/);
    await rejects(ctrl.getCapacity('c', { ...PARAMS, pool: 'nopool' }, ctx), status.INVALID_ARGUMENT, /"pool"/);

    const v = await create('pvc-1');
    const s = await snapshot(v.volume_id, 'snap-1');
    fake.calls.length = 0;
    await rejects(create('pvc-2', 64 * MiB, fromSnapshot(s.snapshot_id), { pool: 'nopool' }), status.INVALID_ARGUMENT, /"pool"/);
    assert.deepEqual(mutations(fake.calls), [], 'no clone started');
    assert.equal(fake.subvolumes.size, 1);

    fake.fileSystems.get(FS)!.push('ec-data');
    fake.pools.set('ec-data', 3 * 2 ** 30);
    assert.equal(await ctrl.getCapacity('c', { ...PARAMS, pool: 'ec-data' }, ctx), 3 * 2 ** 30);
    assert.equal(await ctrl.getCapacity('c', PARAMS, ctx), 10 * 2 ** 30, 'the default data pool');
    const e = await create('pvc-ec', 64 * MiB, undefined, { pool: 'ec-data' });
    assert.equal(fake.find(FS, GROUP, vid(e.volume_id).location[2]!)!.pool, 'ec-data');
  });
});

const vid = (id: string | undefined): ObjectId => parseId(id!, 'v')!;

describe('cephfs controller: restores and clones', () => {
  it('answers ABORTED while a restore is cloning (the lookup meets EAGAIN), and finishes it on retry', async () => {
    const { fake, create, snapshot, sv, record, fromSnapshot, callsOf } = setup();
    const v = await create('pvc-1');
    const s = await snapshot(v.volume_id, 'snap-1');
    fake.clonePolls = Infinity;
    await rejects(create('restore', 128 * MiB, fromSnapshot(s.snapshot_id)), status.ABORTED, /still being cloned/);
    assert.equal(sv('restore')!.state, 'in-progress');
    assert.equal(sv('restore')!.meta.size, 0);
    const retry = await callsOf(() => rejects(create('restore', 128 * MiB, fromSnapshot(s.snapshot_id)), status.ABORTED));
    assert.equal(retry[0], 'getpath');
    assert.equal(retry[1], 'info', 'the clone target was found by its EAGAIN');
    assert.ok(!retry.includes('clone'), 'no second clone');
    assert.ok(retry.includes('cloneState'));
    fake.finishClone(FS, GROUP, sv('restore')!.name);
    const r = await create('restore', 128 * MiB, fromSnapshot(s.snapshot_id));
    assert.equal(r.capacity_bytes, 128 * MiB);
    assert.equal(sv('restore')!.quota, 128 * MiB, 'grown from the snapshot size to the request');
    assert.deepEqual(r.content_source, { snapshot: { snapshot_id: s.snapshot_id } });
    assert.equal(record('restore').source!.snapshot, s.snapshot_id);
    assert.deepEqual(await callsOf(() => create('restore', 128 * MiB, fromSnapshot(s.snapshot_id))), ['getpath', 'info', 'metaList']);
  });

  it('refuses a restore smaller than its snapshot (OUT_OF_RANGE), a snapshot that is not there (NOT_FOUND), one of another file system (INVALID_ARGUMENT)', async () => {
    const { fake, create, snapshot, fromSnapshot } = setup();
    const v = await create('pvc-1', 128 * MiB);
    const s = await snapshot(v.volume_id, 'snap-1');
    fake.calls.length = 0;
    await rejects(create('small', 64 * MiB, fromSnapshot(s.snapshot_id)), status.OUT_OF_RANGE);
    const gone = encodeId({ kind: 's', backend: 'cephfs', cluster: 'c', location: [FS, GROUP, vid(v.volume_id).location[2]!, `csi-snap-${nameHash(cfg.driverName, 'nobody')}`] });
    await rejects(create('r2', 128 * MiB, fromSnapshot(gone)), status.NOT_FOUND);
    const other = encodeId({ kind: 's', backend: 'cephfs', cluster: 'c', location: ['otherfs', GROUP, vid(v.volume_id).location[2]!, `csi-snap-${nameHash(cfg.driverName, 'nobody')}`] });
    await rejects(create('r3', 128 * MiB, fromSnapshot(other)), status.INVALID_ARGUMENT);
    assert.deepEqual(mutations(fake.calls), []);
    assert.equal(fake.subvolumes.size, 1);
  });

  it('clones a volume through a temporary snapshot removed once the clone is complete', async () => {
    const { fake, create, sv, record, fromVolume } = setup();
    const v = await create('pvc-1');
    sv('pvc-1')!.meta.set(attachKey('node-a'), '{"mode":"SINGLE_NODE_WRITER","readonly":false}');
    const c = await create('clone-1', 64 * MiB, fromVolume(v.volume_id));
    assert.deepEqual(c.content_source, { volume: { volume_id: v.volume_id } });
    assert.equal(record('clone-1').source!.volume, v.volume_id);
    assert.deepEqual([...sv('pvc-1')!.snaps.keys()], [], 'the temporary snapshot is gone');
    assert.ok(!fake.calls.includes('resize'), 'a clone of the same size keeps its quota');
    assert.equal(sv('clone-1')!.state, 'complete');
  });

  it('removes a temporary snapshot a crash left on the source once the clone completed', async () => {
    const { fake, create, sv, record, fromVolume, callsOf } = setup();
    const v = await create('pvc-1');
    fake.failNext('snapRemove', killed());
    await assert.rejects(create('clone-1', 64 * MiB, fromVolume(v.volume_id)));
    assert.deepEqual([...sv('pvc-1')!.snaps.keys()], [sv('clone-1')!.name], 'left on the source');
    assert.equal(sv('clone-1')!.meta.size, 0);
    const calls = await callsOf(() => create('clone-1', 64 * MiB, fromVolume(v.volume_id)));
    assert.deepEqual(calls, ['getpath', 'info', 'metaList', 'snapRemove', 'metaSet']);
    assert.deepEqual([...sv('pvc-1')!.snaps.keys()], []);
    assert.equal(record('clone-1').source!.volume, v.volume_id);
  });

  it('reuses a temporary snapshot a crash left before the clone started', async () => {
    const { fake, create, sv, fromVolume } = setup();
    const v = await create('pvc-1');
    fake.failNext('clone', killed());
    await assert.rejects(create('clone-1', 64 * MiB, fromVolume(v.volume_id)));
    assert.equal(sv('clone-1'), undefined);
    assert.equal(sv('pvc-1')!.snaps.size, 1);
    await create('clone-1', 64 * MiB, fromVolume(v.volume_id));
    assert.equal(sv('clone-1')!.state, 'complete');
    assert.deepEqual([...sv('pvc-1')!.snaps.keys()], []);
  });

  it('refuses a clone smaller than its source (OUT_OF_RANGE) without leaving a snapshot on the source', async () => {
    const { fake, create, sv, fromVolume } = setup();
    const v = await create('pvc-1', 128 * MiB);
    await rejects(create('clone-1', 64 * MiB, fromVolume(v.volume_id)), status.OUT_OF_RANGE);
    assert.deepEqual([...sv('pvc-1')!.snaps.keys()], [], 'nothing refers to it: it would stay until the source is deleted');
    assert.equal(fake.subvolumes.size, 1);
  });

  it('removes a failed clone (INTERNAL) so that a retry starts over', async () => {
    const { fake, create, snapshot, sv, fromSnapshot } = setup();
    const v = await create('pvc-1');
    const s = await snapshot(v.volume_id, 'snap-1');
    fake.clonePolls = Infinity;
    await rejects(create('restore', 64 * MiB, fromSnapshot(s.snapshot_id)), status.ABORTED);
    fake.finishClone(FS, GROUP, sv('restore')!.name, 'failed');
    await rejects(create('restore', 64 * MiB, fromSnapshot(s.snapshot_id)), status.INTERNAL, /failed.*retry starts over/);
    assert.equal(sv('restore'), undefined);
    fake.clonePolls = 1;
    await create('restore', 64 * MiB, fromSnapshot(s.snapshot_id));
    assert.equal(sv('restore')!.state, 'complete');
  });

  it('removes a failed clone of a volume with its temporary snapshot on the source', async () => {
    const { fake, create, sv, fromVolume } = setup();
    const v = await create('pvc-1');
    fake.clonePolls = Infinity;
    await rejects(create('copy', 64 * MiB, fromVolume(v.volume_id)), status.ABORTED);
    assert.equal(sv('pvc-1')!.snaps.size, 1, 'the temporary snapshot the clone copies from');
    fake.finishClone(FS, GROUP, sv('copy')!.name, 'failed');
    await rejects(create('copy', 64 * MiB, fromVolume(v.volume_id)), status.INTERNAL, /failed.*retry starts over/);
    assert.equal(sv('copy'), undefined);
    assert.equal(sv('pvc-1')!.snaps.size, 0, 'nothing is left on the source');
    fake.clonePolls = 1;
    await create('copy', 64 * MiB, fromVolume(v.volume_id));
    assert.equal(sv('copy')!.state, 'complete');
    assert.equal(sv('pvc-1')!.snaps.size, 0);
  });

  it('cancels a clone in progress on DeleteVolume (the mgr refuses to remove it before), releasing its source snapshot', async () => {
    const { fake, ctrl, create, snapshot, sv, fromSnapshot, callsOf } = setup();
    const v = await create('pvc-1');
    const s = await snapshot(v.volume_id, 'snap-1');
    fake.clonePolls = Infinity;
    await rejects(create('restore', 64 * MiB, fromSnapshot(s.snapshot_id)), status.ABORTED);
    const target = encodeId({ kind: 'v', backend: 'cephfs', cluster: 'c', location: [FS, GROUP, sv('restore')!.name] });
    assert.deepEqual(await callsOf(() => ctrl.deleteVolume(vid(target), {}, ctx)), ['info', 'cloneCancel', 'remove']);
    assert.equal(sv('restore'), undefined);
    await ctrl.deleteSnapshot(parseId(s.snapshot_id!, 's')!, {}, ctx);
    assert.equal(sv('pvc-1')!.snaps.size, 0, 'no pending clone holds the snapshot');
  });
});

describe('cephfs controller: snapshots', () => {
  it('claims the name, takes the snapshot and records it; a retry answers from the record', async () => {
    const { fake, create, snapshot, sv, snap, callsOf } = setup();
    const v = await create('pvc-1');
    let s!: csi.Snapshot;
    assert.deepEqual(await callsOf(async () => (s = await snapshot(v.volume_id, 'snap-1'))), ['snapMetaList', 'info', 'claimGet', 'claimSet', 'snapCreate', 'snapMetaSet']);
    assert.equal(s.snapshot_id, encodeId({ kind: 's', backend: 'cephfs', cluster: 'c', location: [FS, GROUP, sv('pvc-1')!.name, snap('snap-1')] }));
    assert.equal(s.size_bytes, 64 * MiB);
    assert.equal(s.source_volume_id, v.volume_id);
    assert.equal(fake.configKeys.get(`strata/cephfs/snapshot-names/${snap('snap-1')}`), s.snapshot_id);
    assert.equal(JSON.parse(sv('pvc-1')!.snaps.get(snap('snap-1'))!.meta.get('strata.snapshot')!).name, 'snap-1');
    let again!: csi.Snapshot;
    assert.deepEqual(await callsOf(async () => (again = await snapshot(v.volume_id, 'snap-1'))), ['snapMetaList', 'info', 'claimGet']);
    assert.deepEqual(again, s);
  });

  it('answers the same name on another volume with ALREADY_EXISTS, changing nothing', async () => {
    const { fake, create, snapshot, sv } = setup();
    const v1 = await create('pvc-1');
    const v2 = await create('pvc-2');
    const s = await snapshot(v1.volume_id, 'snap-1');
    fake.calls.length = 0;
    await rejects(snapshot(v2.volume_id, 'snap-1'), status.ALREADY_EXISTS, /another source volume/);
    assert.deepEqual(mutations(fake.calls), []);
    assert.equal(sv('pvc-2')!.snaps.size, 0);
    assert.equal([...fake.configKeys.values()][0], s.snapshot_id);
  });

  it('finishes a create cut short after the claim, or after the snapshot', async () => {
    const { fake, create, snapshot, sv, snap, callsOf } = setup();
    const v = await create('pvc-1');
    fake.failNext('snapCreate', killed());
    await assert.rejects(snapshot(v.volume_id, 'snap-1'));
    assert.equal(fake.configKeys.size, 1, 'the claim was written first');
    assert.equal(sv('pvc-1')!.snaps.size, 0);
    assert.deepEqual(await callsOf(() => snapshot(v.volume_id, 'snap-1')), ['snapMetaList', 'info', 'claimGet', 'snapCreate', 'snapMetaSet'], 'the claim is reused');

    fake.failNext('snapMetaSet', killed());
    await assert.rejects(snapshot(v.volume_id, 'snap-2'));
    assert.equal(sv('pvc-1')!.snaps.get(snap('snap-2'))!.meta.size, 0, 'a snapshot without its record');
    const s2 = await snapshot(v.volume_id, 'snap-2');
    assert.equal(JSON.parse(sv('pvc-1')!.snaps.get(snap('snap-2'))!.meta.get('strata.snapshot')!).name, 'snap-2');
    assert.equal(s2.source_volume_id, v.volume_id);
  });

  it('does not let a stale claim (a DeleteSnapshot cut short) block the name; a retried DeleteSnapshot clears it', async () => {
    const { fake, ctrl, create, snapshot, sv, snap, sid } = setup();
    const v1 = await create('pvc-1');
    const v2 = await create('pvc-2');
    const s = await snapshot(v1.volume_id, 'snap-1');
    fake.failNext('claimRemove', killed('config-key rm'));
    await assert.rejects(ctrl.deleteSnapshot(sid(s.snapshot_id), {}, ctx));
    assert.equal(sv('pvc-1')!.snaps.size, 0);
    const key = `strata/cephfs/snapshot-names/${snap('snap-1')}`;
    assert.equal(fake.configKeys.get(key), s.snapshot_id, 'the claim outlived its snapshot');
    await ctrl.deleteSnapshot(sid(s.snapshot_id), {}, ctx);
    assert.equal(fake.configKeys.get(key), undefined);

    const s1 = await snapshot(v1.volume_id, 'snap-1');
    fake.failNext('claimRemove', killed('config-key rm'));
    await assert.rejects(ctrl.deleteSnapshot(sid(s1.snapshot_id), {}, ctx));
    const s2 = await snapshot(v2.volume_id, 'snap-1');
    assert.equal(fake.configKeys.get(key), s2.snapshot_id, 'taken over by the new snapshot');
    await ctrl.deleteSnapshot(sid(s1.snapshot_id), {}, ctx);
    assert.equal(fake.configKeys.get(key), s2.snapshot_id, "the old id's retry leaves another snapshot's claim alone");
    assert.ok(await ctrl.getSnapshot(sid(s2.snapshot_id), {}, ctx));
  });

  it('answers FAILED_PRECONDITION when file-system and group names leave no room for a snapshot id, NOT_FOUND when the source is missing', async () => {
    const { fake, create, snapshot } = setup();
    const long = 'f'.repeat(40);
    fake.fileSystems.set(long, [`${long}.data`]);
    const v = await create('pvc-1', 64 * MiB, undefined, { fsName: long, subvolumeGroup: 'g'.repeat(30) });
    fake.calls.length = 0;
    await rejects(snapshot(v.volume_id, 'snap-1'), status.FAILED_PRECONDITION, /too long for a snapshot id/);
    assert.deepEqual(fake.calls, ['info']);
    await fake.api(long, 'g'.repeat(30)).remove(vid(v.volume_id).location[2]!, false);
    await rejects(snapshot(v.volume_id, 'snap-1'), status.NOT_FOUND);
    assert.equal(fake.configKeys.size, 0, 'no claim');
  });

  it('answers NOT_FOUND for a snapshot of a missing volume, and GetSnapshot/ListSnapshots see only csi snapshots', async () => {
    const { ctrl, create, snapshot, sv, sid, fake } = setup();
    const v = await create('pvc-1');
    const s = await snapshot(v.volume_id, 'snap-1');
    sv('pvc-1')!.snaps.set('manual', { size: 1, meta: new Map(), pendingClones: 0 });
    assert.deepEqual(await ctrl.listSnapshotIds('c', undefined, {}, ctx), [s.snapshot_id]);
    assert.deepEqual(await ctrl.listSnapshotIds('c', vid(v.volume_id), {}, ctx), [s.snapshot_id]);
    assert.equal((await ctrl.getSnapshot(sid(s.snapshot_id), {}, ctx))!.snapshot_id, s.snapshot_id);
    const missing = encodeId({ kind: 'v', backend: 'cephfs', cluster: 'c', location: [FS, GROUP, `csi-vol-${nameHash(cfg.driverName, 'nobody')}`] });
    fake.calls.length = 0;
    await rejects(snapshot(missing, 'snap-2'), status.NOT_FOUND);
    assert.deepEqual(mutations(fake.calls), []);
  });
});

describe('cephfs controller: DeleteVolume and DeleteSnapshot', () => {
  it('keeps snapshots of a deleted volume restorable (retained, records in config-key); the last DeleteSnapshot removes the rest', async () => {
    const { fake, ctrl, create, snapshot, sv, snap, sid, fromSnapshot, callsOf } = setup();
    const v = await create('pvc-1');
    const s = await snapshot(v.volume_id, 'snap-1');
    await ctrl.deleteVolume(vid(v.volume_id), {}, ctx);
    assert.equal(sv('pvc-1')!.state, 'snapshot-retained');
    const rkey = `strata/cephfs/${FS}/${GROUP}/${sv('pvc-1')!.name}/${snap('snap-1')}`;
    assert.equal(JSON.parse(fake.configKeys.get(rkey)!).name, 'snap-1');
    assert.deepEqual(await callsOf(() => ctrl.deleteVolume(vid(v.volume_id), {}, ctx)), ['info'], 'a retry finds it done');
    assert.equal(await ctrl.getVolume(vid(v.volume_id), {}, ctx), undefined);
    assert.deepEqual(await ctrl.listVolumeIds('c', ctx), [v.volume_id], 'listed as the mgr lists it');

    const g = await ctrl.getSnapshot(sid(s.snapshot_id), {}, ctx);
    assert.equal(g!.source_volume_id, v.volume_id);
    assert.deepEqual((await snapshot(v.volume_id, 'snap-1')).snapshot_id, s.snapshot_id, 'CreateSnapshot retried after the source went answers from config-key');
    const r = await create('restore', 64 * MiB, fromSnapshot(s.snapshot_id));
    assert.equal(sv('restore')!.state, 'complete');
    assert.equal(r.capacity_bytes, 64 * MiB);

    await ctrl.deleteSnapshot(sid(s.snapshot_id), {}, ctx);
    assert.equal(sv('pvc-1'), undefined, 'the subvolume went with its last snapshot');
    assert.equal(fake.configKeys.size, 0, 'record and claim gone');
    assert.equal(await ctrl.getSnapshot(sid(s.snapshot_id), {}, ctx), undefined);
    await ctrl.deleteSnapshot(sid(s.snapshot_id), {}, ctx);
  });

  it('removes record-less snapshots and every user of the volume; a removal cut short is finished by a retry', async () => {
    const { fake, ctrl, create, snapshot, sv, snap, publish } = setup();
    const v = await create('pvc-1');
    await snapshot(v.volume_id, 'snap-1');
    const name = sv('pvc-1')!.name;
    sv('pvc-1')!.snaps.set('csi-vol-temporary', { size: 1, meta: new Map(), pendingClones: 0 });
    await publish(v.volume_id, 'node-a');
    sv('pvc-1')!.authorized.add(volumeUser(name));
    fake.users.set(volumeUser(name), 'k');
    sv('pvc-1')!.authorized.add('someone-else');
    fake.failNext('remove', killed());
    await assert.rejects(ctrl.deleteVolume(vid(v.volume_id), {}, ctx));
    assert.equal(sv('pvc-1')!.state, 'complete');
    assert.deepEqual([...sv('pvc-1')!.snaps.keys()], [snap('snap-1')], 'the record-less snapshot went');
    assert.deepEqual([...sv('pvc-1')!.authorized], ['someone-else'], 'node and shared users went, a foreign one stays');
    assert.ok(!fake.users.has(nodeUser(name, 'node-a')));
    await ctrl.deleteVolume(vid(v.volume_id), {}, ctx);
    assert.equal(sv('pvc-1')!.state, 'snapshot-retained');
    assert.equal([...fake.configKeys.keys()].filter((k) => k.includes(name)).length, 1);
  });

  it('removes a volume without snapshots outright, and deauthorizes a shared user only when it exists', async () => {
    const { fake, ctrl, create, sv, callsOf } = setup();
    const v = await create('pvc-1');
    const calls = await callsOf(() => ctrl.deleteVolume(vid(v.volume_id), {}, ctx));
    assert.deepEqual(calls.sort(), ['authorizedUsers', 'info', 'remove', 'snapList', 'userExists']);
    assert.equal(sv('pvc-1'), undefined);
    assert.equal(fake.subvolumes.size, 0);
    assert.deepEqual(await callsOf(() => ctrl.deleteVolume(vid(v.volume_id), {}, ctx)), ['info']);
  });

  it('finishes a DeleteSnapshot cut short after the snapshot went', async () => {
    const { fake, ctrl, create, snapshot, sv, sid } = setup();
    const v = await create('pvc-1');
    const s = await snapshot(v.volume_id, 'snap-1');
    await ctrl.deleteVolume(vid(v.volume_id), {}, ctx);
    fake.failNext('retainedRemove', killed('config-key rm'));
    await assert.rejects(ctrl.deleteSnapshot(sid(s.snapshot_id), {}, ctx));
    assert.equal(sv('pvc-1'), undefined);
    assert.equal(fake.configKeys.size, 1, 'the retained record outlived the snapshot');
    await ctrl.deleteSnapshot(sid(s.snapshot_id), {}, ctx);
    assert.equal(fake.configKeys.size, 0);
  });
  it('leaves a source whose clone is still running as it is (the mgr keeps the temporary snapshot until the copy ends); a retry then deletes it', async () => {
    const { fake, ctrl, create, sv, fromVolume } = setup();
    const v = await create('pvc-1');
    fake.clonePolls = Infinity;
    await rejects(create('clone-1', 64 * MiB, fromVolume(v.volume_id)), status.ABORTED);
    await assert.rejects(ctrl.deleteVolume(vid(v.volume_id), {}, ctx), /pending clones/);
    assert.equal(sv('pvc-1')!.state, 'complete', 'not removed while its snapshot feeds a clone');
    fake.finishClone(FS, GROUP, sv('clone-1')!.name);
    await ctrl.deleteVolume(vid(v.volume_id), {}, ctx);
    assert.equal(sv('pvc-1'), undefined, 'the temporary snapshot (no record) went with it: nothing retained');
    assert.equal(fake.configKeys.size, 0);
  });
});

describe('cephfs controller: ControllerExpandVolume', () => {
  it('grows the quota with no node step, and answers NOT_FOUND for a missing volume or a clone target', async () => {
    const { fake, ctrl, create, snapshot, sv, expand, fromSnapshot } = setup();
    const v = await create('pvc-1');
    assert.deepEqual(await expand(v.volume_id, 128 * MiB), { capacity_bytes: 128 * MiB, node_expansion_required: false });
    assert.equal(sv('pvc-1')!.quota, 128 * MiB);
    assert.deepEqual(await expand(v.volume_id, 128 * MiB), { capacity_bytes: 128 * MiB, node_expansion_required: false });
    const s = await snapshot(v.volume_id, 'snap-1');
    fake.clonePolls = Infinity;
    const r = await create('restore', 128 * MiB, fromSnapshot(s.snapshot_id)).catch(() => undefined);
    assert.equal(r, undefined);
    const target = encodeId({ kind: 'v', backend: 'cephfs', cluster: 'c', location: [FS, GROUP, sv('restore')!.name] });
    await rejects(expand(target, 256 * MiB), status.NOT_FOUND);
    const missing = encodeId({ kind: 'v', backend: 'cephfs', cluster: 'c', location: [FS, GROUP, `csi-vol-${nameHash(cfg.driverName, 'nobody')}`] });
    await rejects(expand(missing, 256 * MiB), status.NOT_FOUND);
    assert.equal(fake.find(FS, GROUP, `csi-vol-${nameHash(cfg.driverName, 'nobody')}`), undefined);
    await ctrl.deleteVolume(vid(v.volume_id), {}, ctx);
  });

  it('never shrinks the quota: a smaller request (the mgr shrinks above the bytes used even with --no-shrink) answers the current size', async () => {
    const { create, sv, expand, callsOf } = setup();
    const v = await create('pvc-1', 128 * MiB);
    assert.deepEqual(await callsOf(() => expand(v.volume_id, 128 * MiB)), ['info'], 'nothing to send');
    assert.deepEqual(await callsOf(() => expand(v.volume_id, 64 * MiB)), ['info']);
    assert.deepEqual(await expand(v.volume_id, 64 * MiB), { capacity_bytes: 128 * MiB, node_expansion_required: false });
    assert.equal(sv('pvc-1')!.quota, 128 * MiB);
    assert.deepEqual(await callsOf(() => expand(v.volume_id, 160 * MiB)), ['info', 'resize']);
    assert.equal(sv('pvc-1')!.quota, 160 * MiB);
    sv('pvc-1')!.used = 100 * MiB;
    assert.deepEqual(await expand(v.volume_id, 64 * MiB), { capacity_bytes: 160 * MiB, node_expansion_required: false }, 'below the bytes used (EINVAL from the mgr)');
    assert.equal(sv('pvc-1')!.quota, 160 * MiB);
  });
});

describe('cephfs controller: publish, unpublish, GetVolume, ListVolumes', () => {
  it('records the attachment and hands over a per-node key; a retry is the same; unpublish fences the node and drops the record', async () => {
    const { fake, ctrl, create, sv, publish, callsOf } = setup();
    const v = await create('pvc-1');
    const name = sv('pvc-1')!.name;
    const ctxA = await publish(v.volume_id, 'node-a');
    assert.deepEqual(ctxA, { userID: nodeUser(name, 'node-a'), userKey: `key-${nodeUser(name, 'node-a')}`, subvolumePath: sv('pvc-1')!.path });
    assert.deepEqual(JSON.parse(sv('pvc-1')!.meta.get(attachKey('node-a'))!), { mode: 'SINGLE_NODE_WRITER', readonly: false });
    assert.deepEqual(mutations(await callsOf(() => publish(v.volume_id, 'node-a'))), ['authorize'], 'a retry records nothing again');
    await rejects(publish(v.volume_id, 'node-b'), status.FAILED_PRECONDITION);
    await rejects(publish(v.volume_id, 'node-a', 'SINGLE_NODE_WRITER', true), status.ALREADY_EXISTS);
    assert.deepEqual((await ctrl.getVolume(vid(v.volume_id), {}, ctx))!.publishedNodes, ['node-a']);

    sv('pvc-1')!.sessions.add(nodeUser(name, 'node-a'));
    fake.failNext('metaRemove', killed());
    await assert.rejects(ctrl.unpublish(vid(v.volume_id), 'node-a', {}, ctx));
    assert.deepEqual(fake.evicted, [nodeUser(name, 'node-a')], 'evicted before the record goes');
    assert.ok(!fake.users.has(nodeUser(name, 'node-a')));
    assert.ok(sv('pvc-1')!.meta.has(attachKey('node-a')), 'the crash left the attachment');
    await ctrl.unpublish(vid(v.volume_id), 'node-a', {}, ctx);
    assert.ok(!sv('pvc-1')!.meta.has(attachKey('node-a')));
    await ctrl.unpublish(vid(v.volume_id), 'node-a', {}, ctx);
    await publish(v.volume_id, 'node-b');
  });

  it('fences users of nodes no longer attached before a new node comes; unpublish without a node fences them all', async () => {
    const { fake, ctrl, create, sv, publish } = setup();
    const v = await create('pvc-1', 64 * MiB);
    const name = sv('pvc-1')!.name;
    await publish(v.volume_id, 'node-a', 'MULTI_NODE_MULTI_WRITER');
    sv('pvc-1')!.authorized.add(nodeUser(name, 'node-stale'));
    sv('pvc-1')!.sessions.add(nodeUser(name, 'node-stale'));
    await publish(v.volume_id, 'node-b', 'MULTI_NODE_MULTI_WRITER');
    assert.deepEqual(fake.evicted, [nodeUser(name, 'node-stale')]);
    assert.deepEqual([...sv('pvc-1')!.authorized].sort(), [nodeUser(name, 'node-a'), nodeUser(name, 'node-b')].sort());
    await ctrl.unpublish(vid(v.volume_id), '', {}, ctx);
    assert.deepEqual([...sv('pvc-1')!.authorized], []);
    assert.deepEqual([...sv('pvc-1')!.meta.keys()], ['strata.volume']);
  });

  it('answers NOT_FOUND for a publish of a missing volume, and reports a subvolume without record as abnormal', async () => {
    const { fake, ctrl, create, sv, publish } = setup();
    const v = await create('pvc-1');
    sv('pvc-1')!.meta.clear();
    const g = await ctrl.getVolume(vid(v.volume_id), {}, ctx);
    assert.match(g!.abnormal!, /missing its Strata record/);
    await ctrl.deleteVolume(vid(v.volume_id), {}, ctx);
    await rejects(publish(v.volume_id, 'node-a'), status.NOT_FOUND);
    await ctrl.unpublish(vid(v.volume_id), 'node-a', {}, ctx);
    assert.equal(fake.subvolumes.size, 0);
  });

  it('lists the volumes of every file system and group, nothing else', async () => {
    const { fake, ctrl, create } = setup();
    fake.fileSystems.set('fs2', ['fs2.data']);
    const a = await create('pvc-1');
    const b = await create('pvc-2', 64 * MiB, undefined, { fsName: 'fs2', subvolumeGroup: 'g2' });
    fake.add(FS, GROUP, 'not-ours', MiB);
    assert.deepEqual(await ctrl.listVolumeIds('c', ctx), [a.volume_id, b.volume_id].sort());
  });
});
