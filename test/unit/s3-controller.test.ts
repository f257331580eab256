import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { S3Controller, type SnapshotRecord, type VolumeRecord } from '../../src/backends/s3/controller.js';
import { attachKey, copyingPrefix, idOf, locationOf } from '../../src/backends/s3/layout.js';
import { prefixPolicy, prefixUser, volumeUser } from '../../src/backends/s3/volume-keys.js';
import { parseConfig } from '../../src/config/config.js';
import { nameHash, parseId, type ObjectId } from '../../src/csi/ids.js';
import type * as csi from '../../src/csi/types.js';
import { isCsiError } from '../../src/errors.js';
import { FakeS3, type FakeOp } from '../helpers/fake-s3.js';

/**
 * The S3 controller's logic on an in-memory S3 store and RGW admin API
 * (test/helpers/fake-s3.ts): which requests each RPC sends, idempotent
 * retries, and the crash-recovery branches a real store reaches only by a
 * kill at the right instant (a bucket without its record, a record without
 * its mount root or quota, a deletion or a copy cut short). A "restart" is a
 * new controller on the same store: copies running in the old one are lost.
 */

const dir = mkdtempSync(join(tmpdir(), 'strata-s3-unit-'));
after(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'id'), 'AKIDCONFIG');
writeFileSync(join(dir, 'secret'), 'config-secret');
const cfg = parseConfig(`clusters:\n  - id: lab\n    s3: { endpoint: "http://127.0.0.1:9", accessKeyIDFile: ${dir}/id, secretAccessKeyFile: ${dir}/secret }\n`);
const ctx = { reqId: 't', log: pino({ level: 'silent' }) };
const SECRETS = { accessKeyID: 'AKIDREQUEST', secretAccessKey: 'request-secret' };
const GiB = 2 ** 30;
const SHARED = 'team-data';
const cap = (mode = 'SINGLE_NODE_WRITER') => ({ mount: { fs_type: '', mount_flags: [], volume_mount_group: '' }, access_mode: { mode } }) as unknown as csi.VolumeCapability;
const killed = () => new Error('killed');
const WRITES: FakeOp[] = ['createBucket', 'put', 'putJson', 'putJsonIfAbsent', 'deleteKey', 'deleteBatch', 'deletePrefix', 'deleteBucket', 'copy', 'putBucketPolicy', 'admin PUT bucket', 'admin PUT user', 'admin DELETE user'];

interface VolOpts {
  bytes?: number;
  limit?: number;
  bucket?: string;
  snapshot?: string;
  volume?: string;
  /** No capacity_range at all (a restore or clone then takes its source's size). */
  noRange?: boolean;
}

function setup(opts: { rgw?: boolean } = {}) {
  const s3 = new FakeS3();
  s3.rgw = opts.rgw ?? true;
  let ctrl = new S3Controller(cfg, ctx.log, s3.connector());
  const restart = () => (ctrl = new S3Controller(cfg, ctx.log, s3.connector()));
  const volReq = (name: string, o: VolOpts = {}) =>
    ({
      name,
      capacity_range: o.noRange ? null : { required_bytes: o.bytes ?? GiB, limit_bytes: o.limit ?? 0 },
      volume_capabilities: [cap()],
      parameters: { backend: 's3', clusterID: 'lab', ...(o.bucket ? { bucket: o.bucket } : {}) },
      secrets: SECRETS,
      volume_content_source: o.snapshot ? { snapshot: { snapshot_id: o.snapshot } } : o.volume ? { volume: { volume_id: o.volume } } : null,
    }) as unknown as csi.CreateVolumeRequest;
  const vid = (id: string | undefined): ObjectId => parseId(id!, 'v')!;
  const sid = (id: string | undefined): ObjectId => parseId(id!, 's')!;
  const hash = (name: string) => nameHash(cfg.driverName, name);
  const api = {
    s3,
    get ctrl() {
      return ctrl;
    },
    restart,
    vid,
    sid,
    create: (name: string, o?: VolOpts) => ctrl.createVolume(volReq(name, o), ctx),
    del: (id: string | undefined) => ctrl.deleteVolume(vid(id), SECRETS, ctx),
    snapshot: (source: string | undefined, name: string) => ctrl.createSnapshot(vid(source), { source_volume_id: source, name, secrets: SECRETS, parameters: {} } as unknown as csi.CreateSnapshotRequest, ctx),
    delSnap: (id: string | undefined) => ctrl.deleteSnapshot(sid(id), SECRETS, ctx),
    publish: (id: string | undefined, node: string, mode = 'SINGLE_NODE_WRITER') =>
      ctrl.publish(vid(id), { volume_id: id, node_id: node, volume_capability: cap(mode), readonly: false, secrets: SECRETS, volume_context: {} } as unknown as csi.ControllerPublishVolumeRequest, ctx),
    unpublish: (id: string | undefined, node: string) => ctrl.unpublish(vid(id), node, SECRETS, ctx),
    expand: (id: string | undefined, bytes: number) => ctrl.expand(vid(id), { volume_id: id, capacity_range: { required_bytes: bytes, limit_bytes: 0 }, secrets: SECRETS } as unknown as csi.ControllerExpandVolumeRequest, ctx),
    /** The bucket of a volume or snapshot with a bucket of its own. */
    bucket: (kind: 'vol' | 'snap', name: string) => `csi-${kind}-${hash(name)}`,
    /** The root of a volume in the shared bucket. */
    prefix: (name: string) => `csi-vol-${hash(name)}/`,
    writes: () => s3.calls.filter((c) => WRITES.includes(c)),
  };
  return api;
}

async function rejects(p: Promise<unknown>, code: status, msg?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isCsiError(e, code), `expected ${status[code]}, got ${String(e)}`);
    if (msg) assert.match((e as Error).message, msg);
    return true;
  });
}

/** Polls until `f` holds: background copies finish on their own after the RPC that started them answered. */
async function until(f: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await f()) return;
    await sleep(5);
  }
  assert.fail(`never: ${what}`);
}

describe('s3 controller: CreateVolume, a bucket of its own on RGW', () => {
  it('makes bucket, record, root and quota in as many requests as the bare calls, and answers a retry from the record', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    const b = t.bucket('vol', 'pvc-1');
    assert.deepEqual(t.s3.calls, ['createBucket', 'putJsonIfAbsent', 'put', 'admin GET bucket', 'admin PUT bucket']);
    assert.deepEqual(t.s3.keys(b), ['.strata/record.json', 'fs/']);
    assert.deepEqual(t.s3.buckets.get(b)!.quota, { enabled: true, max_size: GiB });
    const rec = t.s3.json<VolumeRecord>(b, '.strata/record.json')!;
    assert.equal(rec.name, 'pvc-1');
    assert.equal(rec.state, 'ready');
    assert.equal(v.capacity_bytes, GiB);
    assert.deepEqual(v.volume_context, { clusterID: 'lab', bucket: b, prefix: 'fs/', mounter: 's3fs' });
    assert.deepEqual(t.s3.identities.at(-1), SECRETS, 'the request identity made it');

    // The bucket owner is remembered: the next volume's quota is one admin request.
    t.s3.clearCalls();
    await t.create('pvc-2');
    assert.deepEqual(t.s3.calls, ['createBucket', 'putJsonIfAbsent', 'put', 'admin PUT bucket']);

    t.s3.clearCalls();
    const again = await t.create('pvc-1');
    assert.equal(again.volume_id, v.volume_id);
    assert.deepEqual(t.s3.calls, ['createBucket', 'putJsonIfAbsent', 'getJson', 'hasKey', 'admin PUT bucket'], 'a retry checks the root and sets the quota again');
    assert.equal(t.s3.keys(b).length, 2);
  });

  it('answers ALREADY_EXISTS to a conflicting retry and writes nothing', async () => {
    const t = setup();
    await t.create('pvc-1');
    const b = t.bucket('vol', 'pvc-1');
    const before = JSON.stringify(t.s3.json(b, '.strata/record.json'));
    t.s3.clearCalls();
    await rejects(t.create('pvc-1', { bytes: 2 * GiB }), status.ALREADY_EXISTS, /size/);
    // createBucket of a bucket already ours and a conditional PUT refused are no writes.
    assert.deepEqual(t.s3.calls, ['createBucket', 'putJsonIfAbsent', 'getJson']);
    assert.equal(JSON.stringify(t.s3.json(b, '.strata/record.json')), before);
    assert.deepEqual(t.s3.buckets.get(b)!.quota, { enabled: true, max_size: GiB });
  });

  it('checks sizes before any bucket is made', async () => {
    const t = setup();
    await rejects(t.create('pvc-1', { bytes: 2 * GiB, limit: GiB }), status.OUT_OF_RANGE);
    await rejects(t.create('pvc-2', { bytes: -1 }), status.INVALID_ARGUMENT);
    assert.deepEqual(t.s3.calls, []);
    assert.equal(t.s3.buckets.size, 0);
  });

  it('finishes a volume whose create stopped after its bucket', async () => {
    const t = setup();
    t.s3.failNext('putJsonIfAbsent', killed());
    await assert.rejects(t.create('pvc-1'), /killed/);
    const b = t.bucket('vol', 'pvc-1');
    assert.deepEqual(t.s3.keys(b), [], 'an empty bucket is left');
    t.restart();
    await t.create('pvc-1');
    assert.deepEqual(t.s3.keys(b), ['.strata/record.json', 'fs/']);
    assert.equal(t.s3.buckets.get(b)!.quota?.max_size, GiB);
  });

  it('finishes a volume whose create stopped after its record, before root and quota', async () => {
    const t = setup();
    t.s3.failNext('put', killed());
    t.s3.failNext('admin GET bucket', killed());
    await assert.rejects(t.create('pvc-1'), /killed/);
    const b = t.bucket('vol', 'pvc-1');
    assert.deepEqual(t.s3.keys(b), ['.strata/record.json'], 'a record without its root');
    assert.equal(t.s3.buckets.get(b)!.quota, undefined, 'and without its quota');
    t.restart();
    t.s3.clearCalls();
    const v = await t.create('pvc-1');
    // Root and quota go side by side: their requests interleave.
    assert.deepEqual(t.s3.calls.slice(0, 4), ['createBucket', 'putJsonIfAbsent', 'getJson', 'hasKey']);
    assert.deepEqual(t.s3.calls.slice(4).sort(), ['admin GET bucket', 'admin PUT bucket', 'put']);
    assert.deepEqual(t.s3.keys(b), ['.strata/record.json', 'fs/']);
    assert.equal(t.s3.buckets.get(b)!.quota?.max_size, GiB);
    assert.equal(v.capacity_bytes, GiB);
  });

  it('does not write the root again where only the quota was missing', async () => {
    const t = setup();
    t.s3.failNext('admin GET bucket', killed());
    await assert.rejects(t.create('pvc-1'), /killed/);
    assert.deepEqual(t.s3.keys(t.bucket('vol', 'pvc-1')), ['.strata/record.json', 'fs/'], 'root and record went side by side with the failed quota');
    t.s3.clearCalls();
    await t.create('pvc-1');
    assert.ok(!t.s3.calls.includes('put'), String(t.s3.calls));
    assert.equal(t.s3.buckets.get(t.bucket('vol', 'pvc-1'))!.quota?.max_size, GiB);
  });

  it('answers ABORTED when the record it lost the race to is gone when read', async () => {
    const t = setup();
    await t.create('pvc-1');
    const b = t.bucket('vol', 'pvc-1');
    const get = t.s3.getJson.bind(t.s3);
    // A DeleteVolume running beside the retry removes the record between the two requests.
    t.s3.getJson = async <T>(bucket: string, key: string) => {
      t.s3.buckets.get(bucket)?.objects.delete(key);
      return get<T>(bucket, key);
    };
    await rejects(t.create('pvc-1'), status.ABORTED, /changed while it was being created/);
    assert.deepEqual(t.s3.keys(b), ['fs/'], 'nothing written after the lost race');
  });
});

describe('s3 controller: CreateVolume, a prefix in a shared bucket', () => {
  it('makes the shared bucket when missing, then root and record; a retry reads only the record', async () => {
    const t = setup();
    const v = await t.create('pvc-1', { bucket: SHARED });
    const p = t.prefix('pvc-1');
    assert.deepEqual(t.s3.calls, ['getJson', 'bucketExists', 'createBucket', 'put', 'putJson'], 'no quota: a prefix has none');
    assert.deepEqual(t.s3.keys(SHARED), [`${p}.strata/record.json`, `${p}fs/`]);
    assert.deepEqual(v.volume_context, { clusterID: 'lab', bucket: SHARED, prefix: `${p}fs/`, mounter: 's3fs' });
    t.s3.clearCalls();
    await t.create('pvc-2', { bucket: SHARED });
    assert.deepEqual(t.s3.calls, ['getJson', 'bucketExists', 'put', 'putJson'], 'an existing shared bucket is not made again');
    t.s3.clearCalls();
    assert.equal((await t.create('pvc-1', { bucket: SHARED })).volume_id, v.volume_id);
    assert.deepEqual(t.s3.calls, ['getJson']);
    await rejects(t.create('pvc-1', { bucket: SHARED, bytes: 3 * GiB }), status.ALREADY_EXISTS);
    assert.deepEqual(t.writes(), []);
  });

  it('checks sizes before the shared bucket is made', async () => {
    const t = setup();
    await rejects(t.create('pvc-1', { bucket: SHARED, bytes: 2 * GiB, limit: GiB }), status.OUT_OF_RANGE);
    assert.deepEqual(t.writes(), []);
    assert.equal(t.s3.buckets.size, 0);
  });

  for (const step of ['put', 'putJson'] as const) {
    it(`finishes a prefix whose create stopped at its ${step === 'put' ? 'root' : 'record'}`, async () => {
      const t = setup();
      t.s3.failNext(step, killed());
      await assert.rejects(t.create('pvc-1', { bucket: SHARED }), /killed/);
      assert.equal(t.s3.keys(SHARED, t.prefix('pvc-1')).filter((k) => k.endsWith('record.json')).length, 0, 'no record yet');
      t.restart();
      await t.create('pvc-1', { bucket: SHARED });
      assert.deepEqual(t.s3.keys(SHARED), [`${t.prefix('pvc-1')}.strata/record.json`, `${t.prefix('pvc-1')}fs/`]);
    });
  }

  it('refuses a shared bucket that belongs to someone else, making nothing', async () => {
    const t = setup();
    t.s3.buckets.set(SHARED, { owner: 'someone', objects: new Map() });
    const head = t.s3.bucketExists.bind(t.s3);
    // S3 answers HeadBucket of a stranger's bucket 403/404 depending on the store: the create is what decides.
    t.s3.bucketExists = async (b: string) => (await head(b)) && false;
    await rejects(t.create('pvc-1', { bucket: SHARED }), status.FAILED_PRECONDITION, /belongs to someone else/);
    assert.deepEqual(t.s3.keys(SHARED), []);
  });
});

describe('s3 controller: CreateVolume without an RGW admin identity', () => {
  it('looks the record up first and sets no quota', async () => {
    const t = setup({ rgw: false });
    await t.create('pvc-1');
    assert.deepEqual(t.s3.calls, ['getJson', 'createBucket', 'put', 'putJson']);
    assert.equal(t.s3.buckets.get(t.bucket('vol', 'pvc-1'))!.quota, undefined);
    t.s3.clearCalls();
    await rejects(t.create('pvc-1', { bytes: 5 * GiB }), status.ALREADY_EXISTS);
    assert.deepEqual(t.s3.calls, ['getJson'], 'refused before the bucket');
  });
});

describe('s3 controller: DeleteVolume', () => {
  it('removes an empty volume in three requests and its RGW user, and a retry finds nothing', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    await t.publish(v.volume_id, 'node-a');
    await t.unpublish(v.volume_id, 'node-a');
    const b = t.bucket('vol', 'pvc-1');
    const uid = volumeUser(locationOf(t.vid(v.volume_id))!);
    assert.ok(t.s3.users.has(uid));
    t.s3.clearCalls();
    await t.del(v.volume_id);
    assert.deepEqual(t.s3.calls, ['list', 'deleteBatch', 'deleteBucket', 'admin DELETE user']);
    assert.equal(t.s3.buckets.has(b), false);
    assert.equal(t.s3.users.has(uid), false);
    t.s3.clearCalls();
    await t.del(v.volume_id);
    assert.deepEqual(t.s3.calls, ['list', 'deleteBucket', 'admin DELETE user']);
  });

  it('marks a volume with data deleting first, and a retry finishes a removal cut short', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    const b = t.bucket('vol', 'pvc-1');
    for (let i = 0; i < 5; i++) t.s3.write(b, `fs/file-${i}`, 10);
    t.s3.pageSize = 2;
    // The second DeleteObjects is lost: the root and one file gone, four files left.
    t.s3.failNext('deleteBatch', killed(), 1);
    await assert.rejects(t.del(v.volume_id), /killed/);
    assert.equal(t.s3.json<VolumeRecord>(b, '.strata/record.json')!.state, 'deleting');
    assert.deepEqual(t.s3.keys(b, 'fs/'), ['fs/file-1', 'fs/file-2', 'fs/file-3', 'fs/file-4']);

    t.restart();
    const seen = await t.ctrl.getVolume(t.vid(v.volume_id), {}, ctx);
    assert.match(seen!.abnormal!, /being deleted/);
    await rejects(t.create('pvc-1'), status.ABORTED, /being deleted/);
    assert.equal(t.s3.json<VolumeRecord>(b, '.strata/record.json')!.state, 'deleting', 'the create changed nothing');

    t.s3.clearCalls();
    await t.del(v.volume_id);
    assert.ok(!t.s3.calls.includes('putJson'), 'already marked');
    assert.equal(t.s3.buckets.has(b), false);
    await t.create('pvc-1');
    assert.deepEqual(t.s3.keys(b), ['.strata/record.json', 'fs/'], 'the name is free again, with nothing inherited');
  });

  it('leaves a volume with data to the careful way also when the store answers a short first page', async () => {
    // RGW may answer fewer keys than asked with IsTruncated set (entries it filters out of the listing, such as
    // parts of unfinished multipart uploads): the fast removal must not take the record of a volume whose data
    // it has not seen, or a crash before the data is gone leaves it unrecorded for a same-named volume to inherit.
    const t = setup();
    const v = await t.create('pvc-1');
    const b = t.bucket('vol', 'pvc-1');
    t.s3.write(b, 'fs/a', 10);
    t.s3.pageSize = 2;
    t.s3.failNext('deletePrefix', killed());
    await assert.rejects(t.del(v.volume_id), /killed/);
    assert.deepEqual(t.s3.keys(b), ['.strata/record.json', 'fs/', 'fs/a']);
    assert.equal(t.s3.json<VolumeRecord>(b, '.strata/record.json')!.state, 'deleting');
    await rejects(t.create('pvc-1'), status.ABORTED, /being deleted/);
    assert.deepEqual(t.s3.keys(b, 'fs/'), ['fs/', 'fs/a'], 'a same-named create inherits nothing');
    await t.del(v.volume_id);
    assert.equal(t.s3.buckets.has(b), false);
  });

  it('removes a prefix of a shared bucket, leaving the bucket and its other volumes', async () => {
    const t = setup();
    const v1 = await t.create('pvc-1', { bucket: SHARED });
    await t.create('pvc-2', { bucket: SHARED });
    t.s3.write(SHARED, `${t.prefix('pvc-1')}fs/a`, 3);
    await t.del(v1.volume_id);
    assert.deepEqual(t.s3.keys(SHARED), [`${t.prefix('pvc-2')}.strata/record.json`, `${t.prefix('pvc-2')}fs/`]);
    await t.del(v1.volume_id);
    assert.ok(t.s3.buckets.has(SHARED));
  });

  it('is FAILED_PRECONDITION while a snapshot is still being copied from the volume, and removes nothing', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    const b = t.bucket('vol', 'pvc-1');
    t.s3.write(b, 'fs/a', 100);
    t.s3.failNext('copy', killed());
    await assert.rejects(t.snapshot(v.volume_id, 'snap-1'), /killed/);
    assert.equal(t.s3.json<SnapshotRecord>(t.bucket('snap', 'snap-1'), '.strata/record.json')!.state, 'copying');
    t.s3.clearCalls();
    await rejects(t.del(v.volume_id), status.FAILED_PRECONDITION, /still being copied/);
    assert.deepEqual(t.writes(), []);
    assert.equal(t.s3.json<VolumeRecord>(b, '.strata/record.json')!.state, 'ready');
    assert.deepEqual(t.s3.keys(b, 'fs/'), ['fs/', 'fs/a']);
  });

  it('drops the marker of a snapshot that was never recorded (a crash between the two) and deletes', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    const b = t.bucket('vol', 'pvc-1');
    t.s3.write(b, 'fs/a', 100);
    t.s3.failNext('putJson', killed());
    await assert.rejects(t.snapshot(v.volume_id, 'snap-1'), /killed/);
    const l = locationOf(t.vid(v.volume_id))!;
    assert.equal(t.s3.keys(b, copyingPrefix(l)).length, 1, 'the marker is there');
    await t.del(v.volume_id);
    assert.equal(t.s3.buckets.has(b), false);
  });
});

describe('s3 controller: snapshots and restores', () => {
  it('copies the data into a bucket of its own and removes the marker', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    const b = t.bucket('vol', 'pvc-1');
    t.s3.write(b, 'fs/a', 100);
    t.s3.write(b, 'fs/dir/b', 7);
    const s = await t.snapshot(v.volume_id, 'snap-1');
    assert.equal(s.ready_to_use, true);
    assert.equal(s.size_bytes, GiB);
    assert.equal(s.source_volume_id, v.volume_id);
    const sb = t.bucket('snap', 'snap-1');
    assert.deepEqual(t.s3.keys(sb, 'fs/'), ['fs/', 'fs/a', 'fs/dir/b']);
    assert.equal(t.s3.buckets.get(sb)!.objects.get('fs/a')!.size, 100);
    const rec = t.s3.json<SnapshotRecord>(sb, '.strata/record.json')!;
    assert.deepEqual([rec.state, rec.objects, rec.bytes], ['ready', 3, 107]);
    assert.deepEqual(t.s3.keys(b, '.strata/snapshotting/'), []);
    t.s3.clearCalls();
    assert.equal((await t.snapshot(v.volume_id, 'snap-1')).snapshot_id, s.snapshot_id);
    assert.deepEqual(t.s3.calls, ['getJson'], 'a retry reads the record');
  });

  it('keeps the snapshot of a prefix in the same shared bucket, and DeleteSnapshot takes only its prefix', async () => {
    const t = setup();
    const v = await t.create('pvc-1', { bucket: SHARED });
    t.s3.write(SHARED, `${t.prefix('pvc-1')}fs/a`, 4);
    const s = await t.snapshot(v.volume_id, 'snap-1');
    const sp = `csi-snap-${nameHash(cfg.driverName, 'snap-1')}/`;
    assert.equal(s.snapshot_id, idOfSnap('snap-1', v.volume_id));
    assert.equal(t.s3.buckets.has(t.bucket('snap', 'snap-1')), false, 'no bucket of its own');
    assert.deepEqual(t.s3.keys(SHARED, sp), [`${sp}.strata/record.json`, `${sp}fs/`, `${sp}fs/a`]);
    assert.deepEqual(await t.ctrl.listVolumeIds('lab', ctx), [v.volume_id], 'a snapshot prefix is no volume');
    await t.delSnap(s.snapshot_id);
    assert.deepEqual(t.s3.keys(SHARED, sp), []);
    assert.deepEqual(t.s3.keys(SHARED, t.prefix('pvc-1')), [`${t.prefix('pvc-1')}.strata/record.json`, `${t.prefix('pvc-1')}fs/`, `${t.prefix('pvc-1')}fs/a`]);
  });

  it('answers ALREADY_EXISTS for a name taken by a snapshot of another volume, writing nothing', async () => {
    const t = setup();
    const v1 = await t.create('pvc-1');
    const v2 = await t.create('pvc-2');
    await t.snapshot(v1.volume_id, 'snap-1');
    t.s3.clearCalls();
    await rejects(t.snapshot(v2.volume_id, 'snap-1'), status.ALREADY_EXISTS);
    assert.deepEqual(t.writes(), []);
  });

  it('resumes a copy cut short after a restart, copying only what is missing', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    const b = t.bucket('vol', 'pvc-1');
    for (let i = 0; i < 6; i++) t.s3.write(b, `fs/f${i}`, 10 + i);
    t.s3.pageSize = 4;
    // The third object copy fails; the others of the same page already went.
    t.s3.failNext('copy', killed(), 2);
    await assert.rejects(t.snapshot(v.volume_id, 'snap-1'), /killed/);
    const sb = t.bucket('snap', 'snap-1');
    const copied = t.s3.keys(sb, 'fs/');
    assert.ok(copied.length >= 2 && copied.length < 7, `partly copied: ${copied}`);

    t.restart();
    t.s3.clearCalls();
    // A restore from it is refused while it fills, before any bucket is made.
    await rejects(t.create('pvc-r', { snapshot: idOfSnap('snap-1', v.volume_id) }), status.ABORTED, /still being copied/);
    assert.equal(t.s3.buckets.has(t.bucket('vol', 'pvc-r')), false);
    // The snapshotter's ListSnapshots poll (no secrets: the config's identity) resumes it.
    t.s3.clearCalls();
    await t.ctrl.getSnapshot(t.sid(idOfSnap('snap-1', v.volume_id)), {}, ctx);
    await until(() => t.s3.json<SnapshotRecord>(sb, '.strata/record.json')?.state === 'ready', 'the snapshot is ready');
    const again = t.s3.trail.filter((x) => x.startsWith('copy '));
    assert.equal(again.length, 7 - copied.length, `only the missing objects: ${again}`);
    assert.deepEqual(t.s3.identities.at(-1), { accessKeyID: 'AKIDCONFIG', secretAccessKey: 'config-secret' });
    assert.equal(t.s3.keys(sb, 'fs/').length, 7);
    const rec = t.s3.json<SnapshotRecord>(sb, '.strata/record.json')!;
    assert.deepEqual([rec.objects, rec.bytes], [7, 10 + 11 + 12 + 13 + 14 + 15]);
    assert.deepEqual(t.s3.keys(b, '.strata/snapshotting/'), [], 'the marker went with the finished copy');
  });

  it('restores a snapshot into a new volume, its quota set once the data is in, resuming a cut copy', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    t.s3.write(t.bucket('vol', 'pvc-1'), 'fs/a', 50);
    t.s3.write(t.bucket('vol', 'pvc-1'), 'fs/b', 60);
    const s = await t.snapshot(v.volume_id, 'snap-1');
    t.s3.failNext('copy', killed(), 1);
    await assert.rejects(t.create('pvc-r', { snapshot: s.snapshot_id, bytes: 2 * GiB }), /killed/);
    const rb = t.bucket('vol', 'pvc-r');
    assert.equal(t.s3.json<VolumeRecord>(rb, '.strata/record.json')!.state, 'copying');
    assert.equal(t.s3.buckets.get(rb)!.quota, undefined, 'no quota while the copy runs');
    t.restart();
    const seen = await t.ctrl.getVolume(t.vid(idOfVol('pvc-r')), {}, ctx);
    assert.match(seen!.abnormal!, /still being filled/);
    // A retry with another source is a conflict, not a resume.
    await rejects(t.create('pvc-r', { bytes: 2 * GiB }), status.ALREADY_EXISTS, /content source/);
    const r = await t.create('pvc-r', { snapshot: s.snapshot_id, bytes: 2 * GiB });
    assert.deepEqual(r.content_source, { snapshot: { snapshot_id: s.snapshot_id } });
    assert.deepEqual(t.s3.keys(rb, 'fs/'), ['fs/', 'fs/a', 'fs/b']);
    assert.equal(t.s3.json<VolumeRecord>(rb, '.strata/record.json')!.state, 'ready');
    assert.equal(t.s3.json<VolumeRecord>(rb, '.strata/record.json')!.copyFrom, undefined);
    assert.equal(t.s3.buckets.get(rb)!.quota?.max_size, 2 * GiB);
  });

  it('clones a volume, taking its size when the request names none; an unready source is NOT_FOUND', async () => {
    const t = setup();
    const v = await t.create('pvc-1', { bytes: 3 * GiB });
    t.s3.write(t.bucket('vol', 'pvc-1'), 'fs/a', 9);
    const c = await t.create('pvc-c', { volume: v.volume_id, noRange: true });
    assert.equal(c.capacity_bytes, 3 * GiB);
    assert.deepEqual(c.content_source, { volume: { volume_id: v.volume_id } });
    assert.deepEqual(t.s3.keys(t.bucket('vol', 'pvc-c'), 'fs/'), ['fs/', 'fs/a']);
    assert.equal(t.s3.buckets.get(t.bucket('vol', 'pvc-c'))!.quota?.max_size, 3 * GiB);
    t.s3.write(t.bucket('vol', 'pvc-1'), '.strata/record.json', JSON.stringify({ ...t.s3.json(t.bucket('vol', 'pvc-1'), '.strata/record.json'), state: 'deleting' }));
    t.s3.clearCalls();
    await rejects(t.create('pvc-d', { volume: v.volume_id }), status.NOT_FOUND);
    assert.deepEqual(t.writes(), []);
  });

  it('refuses a restore smaller than its snapshot before any bucket is made', async () => {
    const t = setup();
    const v = await t.create('pvc-1', { bytes: 2 * GiB });
    const s = await t.snapshot(v.volume_id, 'snap-1');
    t.s3.clearCalls();
    await rejects(t.create('pvc-r', { snapshot: s.snapshot_id, bytes: GiB }), status.OUT_OF_RANGE, /smaller than the source/);
    assert.deepEqual(t.writes(), []);
  });

  it('DeleteSnapshot of a snapshot whose copy was cut short removes it and the marker, freeing its source', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    t.s3.write(t.bucket('vol', 'pvc-1'), 'fs/a', 5);
    t.s3.failNext('copy', killed());
    await assert.rejects(t.snapshot(v.volume_id, 'snap-1'), /killed/);
    await t.delSnap(idOfSnap('snap-1', v.volume_id));
    assert.equal(t.s3.buckets.has(t.bucket('snap', 'snap-1')), false);
    assert.deepEqual(t.s3.keys(t.bucket('vol', 'pvc-1'), '.strata/snapshotting/'), []);
    await t.del(v.volume_id);
    assert.equal(t.s3.buckets.has(t.bucket('vol', 'pvc-1')), false);
  });
});

describe('s3 controller: publish and unpublish', () => {
  it('records the attachment, then gives the node a key of its own; a retry gives the same key', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    const l = locationOf(t.vid(v.volume_id))!;
    t.s3.clearCalls();
    const pc = await t.publish(v.volume_id, 'node-a');
    assert.deepEqual(t.s3.calls, ['getJson', 'list', 'admin GET user', 'putJson', 'admin GET user', 'admin PUT user', 'putBucketPolicy', 'admin PUT user', 'admin GET user']);
    assert.deepEqual(t.s3.json(t.bucket('vol', 'pvc-1'), attachKey(l, 'node-a')), { mode: 'SINGLE_NODE_WRITER', readonly: false });
    assert.match(pc.accessKeyID!, /^STRATA[0-9A-F]{32}$/);
    assert.ok(t.s3.buckets.get(t.bucket('vol', 'pvc-1'))!.policy?.includes(volumeUser(l)));
    t.s3.clearCalls();
    assert.deepEqual(await t.publish(v.volume_id, 'node-a'), pc);
    assert.deepEqual(t.writes(), []);
    await rejects(t.publish(v.volume_id, 'node-b'), status.FAILED_PRECONDITION, /node-a/);
    assert.equal(t.s3.json(t.bucket('vol', 'pvc-1'), attachKey(l, 'node-b')), undefined);
    assert.equal(t.s3.users.get(volumeUser(l))!.keys.length, 1, 'no key for the refused node');
  });

  it('finishes a publish cut short between the attachment and the key', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    t.s3.failNext('admin PUT user', killed());
    await assert.rejects(t.publish(v.volume_id, 'node-a'), /killed/);
    const l = locationOf(t.vid(v.volume_id))!;
    assert.ok(t.s3.json(t.bucket('vol', 'pvc-1'), attachKey(l, 'node-a')));
    const pc = await t.publish(v.volume_id, 'node-a');
    assert.equal(t.s3.users.get(volumeUser(l))!.keys[0]!.access_key, pc.accessKeyID);
  });

  it('unpublish revokes the key before the attachment; a retry after a cut finishes it', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    const l = locationOf(t.vid(v.volume_id))!;
    await t.publish(v.volume_id, 'node-a');
    t.s3.failNext('deleteKey', killed());
    await assert.rejects(t.unpublish(v.volume_id, 'node-a'), /killed/);
    assert.deepEqual(t.s3.users.get(volumeUser(l))!.keys, [], 'the key is gone first');
    assert.ok(t.s3.json(t.bucket('vol', 'pvc-1'), attachKey(l, 'node-a')), 'the attachment is still there');
    await rejects(t.publish(v.volume_id, 'node-b'), status.FAILED_PRECONDITION);
    await t.unpublish(v.volume_id, 'node-a');
    assert.equal(t.s3.json(t.bucket('vol', 'pvc-1'), attachKey(l, 'node-a')), undefined);
    await t.unpublish(v.volume_id, 'node-a');
    const pc = await t.publish(v.volume_id, 'node-b');
    assert.ok(pc.accessKeyID);
  });

  it('revokes the keys of nodes the volume is no longer published to before a new node comes', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    const l = locationOf(t.vid(v.volume_id))!;
    const a = await t.publish(v.volume_id, 'node-a', 'MULTI_NODE_MULTI_WRITER');
    // An unpublish of node-a that lost its key removal: the attachment went, the key stayed.
    t.s3.buckets.get(t.bucket('vol', 'pvc-1'))!.objects.delete(attachKey(l, 'node-a'));
    const b = await t.publish(v.volume_id, 'node-b', 'MULTI_NODE_MULTI_WRITER');
    assert.deepEqual(t.s3.users.get(volumeUser(l))!.keys.map((k) => k.access_key), [b.accessKeyID]);
    assert.notEqual(a.accessKeyID, b.accessKeyID);
  });

  it('publishes a full volume: the quota is lifted for the attachment write alone', async () => {
    const t = setup();
    const v = await t.create('pvc-1', { bytes: 1000 });
    t.s3.write(t.bucket('vol', 'pvc-1'), 'fs/big', 1000);
    t.s3.clearCalls();
    await t.publish(v.volume_id, 'node-a');
    const l = locationOf(t.vid(v.volume_id))!;
    assert.ok(t.s3.json(t.bucket('vol', 'pvc-1'), attachKey(l, 'node-a')));
    assert.equal(t.s3.calls.filter((c) => c === 'putJson').length, 2, 'refused once, then written');
    assert.deepEqual(t.s3.buckets.get(t.bucket('vol', 'pvc-1'))!.quota, { enabled: true, max_size: 1000 }, 'set again');
  });

  it('gives each node of a prefix an RGW user of its own with a policy on that prefix, removed at unpublish', async () => {
    const t = setup();
    const v = await t.create('pvc-1', { bucket: SHARED });
    const l = locationOf(t.vid(v.volume_id))!;
    const a = await t.publish(v.volume_id, 'node-a', 'MULTI_NODE_MULTI_WRITER');
    const b = await t.publish(v.volume_id, 'node-b', 'MULTI_NODE_MULTI_WRITER');
    const ua = t.s3.users.get(prefixUser(l, 'node-a'))!;
    assert.equal(ua.keys[0]!.access_key, a.accessKeyID);
    assert.equal(ua.policies.get('volume'), prefixPolicy(l, 's3fs'));
    assert.notEqual(a.accessKeyID, b.accessKeyID);
    assert.deepEqual(await t.publish(v.volume_id, 'node-a', 'MULTI_NODE_MULTI_WRITER'), a, 'a retry gives the same key');
    await t.unpublish(v.volume_id, 'node-a');
    assert.equal(t.s3.users.has(prefixUser(l, 'node-a')), false);
    assert.ok(t.s3.users.has(prefixUser(l, 'node-b')));
    await t.del(v.volume_id);
    assert.equal(t.s3.users.size, 0, 'DeleteVolume removes the users of the nodes still attached');
  });

  it('unpublish without a node id revokes every key and removes every attachment', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    const l = locationOf(t.vid(v.volume_id))!;
    await t.publish(v.volume_id, 'node-a', 'MULTI_NODE_MULTI_WRITER');
    await t.publish(v.volume_id, 'node-b', 'MULTI_NODE_MULTI_WRITER');
    assert.equal(t.s3.users.get(volumeUser(l))!.keys.length, 2);
    await t.unpublish(v.volume_id, '');
    assert.deepEqual(t.s3.users.get(volumeUser(l))!.keys, []);
    assert.deepEqual(t.s3.keys(t.bucket('vol', 'pvc-1'), '.strata/attach/'), []);
  });

  it('without RGW admin: records the attachment and hands over no key', async () => {
    const t = setup({ rgw: false });
    const v = await t.create('pvc-1');
    assert.deepEqual(await t.publish(v.volume_id, 'node-a'), {});
    await t.unpublish(v.volume_id, 'node-a');
    assert.deepEqual(t.s3.keys(t.bucket('vol', 'pvc-1'), '.strata/attach/'), []);
    assert.equal(t.s3.users.size, 0);
  });
});

describe('s3 controller: expand', () => {
  it('sets the quota, then the record; never shrinks; a retry after a cut finishes', async () => {
    const t = setup();
    const v = await t.create('pvc-1');
    const b = t.bucket('vol', 'pvc-1');
    t.s3.failNext('putJson', killed());
    await assert.rejects(t.expand(v.volume_id, 2 * GiB), /killed/);
    assert.equal(t.s3.buckets.get(b)!.quota?.max_size, 2 * GiB, 'quota first');
    assert.equal(t.s3.json<VolumeRecord>(b, '.strata/record.json')!.capacity, GiB);
    t.s3.clearCalls();
    assert.deepEqual(await t.expand(v.volume_id, 2 * GiB), { capacity_bytes: 2 * GiB, node_expansion_required: false });
    assert.deepEqual(t.s3.calls, ['getJson', 'admin GET bucket', 'admin PUT bucket', 'putJson']);
    assert.equal(t.s3.json<VolumeRecord>(b, '.strata/record.json')!.capacity, 2 * GiB);
    t.s3.clearCalls();
    assert.equal((await t.expand(v.volume_id, GiB)).capacity_bytes, 2 * GiB);
    assert.deepEqual(t.s3.calls, ['getJson'], 'nothing to do');
    assert.equal((await t.create('pvc-1', { bytes: 2 * GiB })).capacity_bytes, 2 * GiB, 'CreateVolume agrees with the new size');
  });

  it('grows a full volume (its record write fits under the new quota) and answers NOT_FOUND for a missing one', async () => {
    const t = setup();
    const v = await t.create('pvc-1', { bytes: 1000 });
    t.s3.write(t.bucket('vol', 'pvc-1'), 'fs/big', 1000);
    await t.expand(v.volume_id, 10_000);
    assert.equal(t.s3.json<VolumeRecord>(t.bucket('vol', 'pvc-1'), '.strata/record.json')!.capacity, 10_000);
    await t.del(v.volume_id);
    await rejects(t.expand(v.volume_id, 20_000), status.NOT_FOUND);
  });
});

describe('s3 controller: listing', () => {
  it('lists volumes with buckets of their own and prefixes of shared buckets, snapshots apart', async () => {
    const t = setup();
    const v1 = await t.create('pvc-1');
    const v2 = await t.create('pvc-2', { bucket: SHARED });
    await t.snapshot(v1.volume_id, 'snap-1');
    t.s3.buckets.set('unrelated', { owner: 'x', objects: new Map([['a/b', { body: Buffer.alloc(0), size: 0 }]]) });
    assert.deepEqual(await t.ctrl.listVolumeIds('lab', ctx), [v1.volume_id, v2.volume_id].sort());
    assert.deepEqual(await t.ctrl.listSnapshotIds('lab', t.vid(v1.volume_id), {}, ctx), [idOfSnap('snap-1', v1.volume_id)]);
    assert.deepEqual(await t.ctrl.listSnapshotIds('lab', t.vid(v2.volume_id), {}, ctx), []);
  });
});

/** The id a volume with a bucket of its own gets. */
function idOfVol(name: string): string {
  return idOf({ kind: 'v', cluster: 'lab', hash: nameHash(cfg.driverName, name) });
}
/** The id of a snapshot of `source` (it lives where its volume does). */
function idOfSnap(name: string, source: string | undefined): string {
  return idOf({ kind: 's', cluster: 'lab', hash: nameHash(cfg.driverName, name), shared: locationOf(parseId(source!, 'v')!)!.shared });
}
