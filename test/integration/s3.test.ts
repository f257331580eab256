import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import pLimit from 'p-limit';
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectCommand, ListBucketsCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { CephLab, LAB_S3 } from '../lab/ceph-lab.js';
import { codeOf, connect, startDriver, type CsiClients, type DriverProcess } from '../helpers/driver.js';
import { leftovers } from '../helpers/leftovers.js';
import { getObject, labS3Client, listKeys, listObjects } from '../helpers/s3.js';
import type { Volume } from '../../src/csi/gen/csi/v1/Volume.js';
import type { Snapshot } from '../../src/csi/gen/csi/v1/Snapshot.js';
import { MiB, attach, detach, fileSha, mountCap, sha256, writeRandom } from '../helpers/volumes.js';
import { run } from '../../src/util/exec.js';

/**
 * The S3 backend end to end on the lab's RGW through the real `strata`
 * binary, with both mounters and both layouts: two node plugins share a
 * volume, a non-root uid writes, fsync'ed data is in the bucket at once,
 * capacity is a bucket quota, snapshots/restores/clones keep checksums of
 * thousands of objects, and a snapshot cut off by a controller crash
 * completes after the restart without copying anything twice.
 */

const RWX = mountCap('', 'MULTI_NODE_MULTI_WRITER');
const secrets = { accessKeyID: LAB_S3.accessKeyID, secretAccessKey: LAB_S3.secretAccessKey };
const SHARED = 'team-shared';
const BIG = 40 * MiB; // above one multipart part of s3fs (10 MiB) and of Strata's copies (32 MiB)

const asUser = (uid: number, cmd: string[]) => spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', ...cmd], { encoding: 'utf8', timeout: 30_000 });

describe('s3 backend, end to end', { timeout: 900_000 }, () => {
  let lab: CephLab;
  let a: DriverProcess;
  let b: DriverProcess;
  let ca: CsiClients;
  let cb: CsiClients;
  let s3: S3Client;
  let config: string;

  before(async () => {
    lab = await CephLab.start({ components: ['s3'] });
    config = lab.writeDriverConfig();
    a = await startDriver({ config, nodeId: 'node-a', mode: 'all' });
    b = await startDriver({ config, nodeId: 'node-b', mode: 'node' });
    // Pods of other users reach their volumes through kubelet's directories, which they may traverse.
    for (const d of [a.dir, b.dir]) chmodSync(d, 0o755);
    ca = connect(a.socket);
    cb = { ...connect(b.socket), controller: ca.controller };
    s3 = labS3Client(lab);
  });

  after(async () => {
    s3?.destroy();
    ca?.close();
    cb?.close();
    await a?.stop();
    await b?.stop();
    await lab?.stop();
  });

  const create = async (c: CsiClients, name: string, bytes: number, params: Record<string, string>, extra: Record<string, unknown> = {}) => {
    // Restores and clones answer ABORTED while objects are copied; the provisioner retries, and so do we.
    for (let i = 0; ; i++) {
      try {
        return (await c.controller.CreateVolume({ name, capacity_range: { required_bytes: bytes }, volume_capabilities: [RWX], parameters: params, secrets, ...extra }))!.volume!;
      } catch (e) {
        if (codeOf(e) !== 'ABORTED' || i > 60) throw e;
        await sleep(500);
      }
    }
  };
  const where = (v: Volume) => ({ bucket: v.volume_context!.bucket!, prefix: v.volume_context!.prefix! });

  for (const layout of <Array<{ mounter: string; params: Record<string, string> }>>[
    { mounter: 's3fs', params: { backend: 's3', clusterID: 'lab', mounter: 's3fs', uid: '1000', gid: '1000', mode: '0775' } },
    { mounter: 'rclone', params: { backend: 's3', clusterID: 'lab', mounter: 'rclone', bucket: SHARED, uid: '1000', gid: '1000', mode: '0775' } },
  ]) {
    const kind = layout.params.bucket ? 'a prefix of a shared bucket' : 'a bucket of its own';
    it(`${layout.mounter} on ${kind}: two nodes share it, a non-root uid writes, fsync'ed data is in the bucket at once`, async () => {
      const name = `shared-${layout.mounter}`;
      const v = await create(ca, name, 64 * MiB, layout.params);
      assert.equal((await create(ca, name, 64 * MiB, layout.params)).volume_id, v.volume_id, 'CreateVolume is idempotent by name');
      await assert.rejects(create(ca, name, 128 * MiB, layout.params), (e) => codeOf(e) === 'ALREADY_EXISTS');
      const { bucket, prefix } = where(v);
      if (layout.params.bucket) assert.equal(bucket, SHARED);
      else assert.match(bucket, /^csi-vol-[0-9a-f]{32}$/);

      const onA = await attach(ca, v, 'node-a', path.join(a.dir, name), RWX, secrets);
      const onB = await attach(cb, v, 'node-b', path.join(b.dir, name), RWX, secrets);
      assert.deepEqual((await ca.controller.ControllerGetVolume({ volume_id: v.volume_id! }))!.status!.published_node_ids, ['node-a', 'node-b']);

      // Durable at fsync: the SDK reads it straight away, no unmount, no wait.
      const sha = writeRandom(path.join(onA.target, 'synced.bin'), 3 * MiB);
      assert.equal(sha256(await getObject(s3, bucket, `${prefix}synced.bin`)), sha, 'fsync put the data in the bucket');
      const bigSha = writeRandom(path.join(onB.target, 'big.bin'), BIG);
      assert.equal(sha256(await getObject(s3, bucket, `${prefix}big.bin`)), bigSha);

      // Each node reads what the other wrote, within the mounts' 5 s metadata cache (README).
      assert.equal(await eventually(() => fileSha(path.join(onB.target, 'synced.bin'))), sha);
      assert.equal(await eventually(() => fileSha(path.join(onA.target, 'big.bin'))), bigSha);

      // A pod running as uid 1000 (not root) creates files, owned by the volume's uid.
      const r = asUser(1000, ['cp', '/etc/hostname', path.join(onB.target, 'by-user.txt')]);
      assert.equal(r.status, 0, `uid 1000 could not write: ${r.stderr}`);
      assert.equal(await eventually(() => statSync(path.join(onA.target, 'by-user.txt')).uid), 1000);
      assert.deepEqual(await getObject(s3, bucket, `${prefix}by-user.txt`), readFileSync('/etc/hostname'));

      // Keys travel in a 0600 file or the environment: never in a command line, never in a log.
      for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
        let argv = '';
        try {
          argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        } catch {
          continue;
        }
        assert.ok(!argv.includes(LAB_S3.secretAccessKey), `process ${pid} has the secret key in its arguments`);
      }
      for (const log of [a.logFile, b.logFile]) assert.ok(!readFileSync(log, 'utf8').includes(LAB_S3.secretAccessKey), `${log} holds the secret key`);

      // Read-only publish really refuses writes.
      const ro = path.join(b.dir, name, 'ro-target');
      await cb.node.NodePublishVolume({ volume_id: v.volume_id!, staging_target_path: onB.staging, target_path: ro, volume_capability: RWX, readonly: true, volume_context: v.volume_context });
      assert.equal(fileSha(path.join(ro, 'synced.bin')), sha);
      assert.throws(() => writeFileSync(path.join(ro, 'nope'), 'x'), /EROFS|read-only/i);
      await cb.node.NodeUnpublishVolume({ volume_id: v.volume_id!, target_path: ro });

      // Stats come from the store: the objects' bytes and count against the recorded capacity.
      const stats = (await cb.node.NodeGetVolumeStats({ volume_id: v.volume_id!, volume_path: onB.target }))!;
      const bytes = stats.usage!.find((u) => u.unit === 'BYTES')!;
      assert.equal(Number(bytes.total), 64 * MiB);
      const dataKeys = await listKeys(s3, bucket, prefix);
      assert.ok(Number(bytes.used) >= 3 * MiB + BIG && Number(bytes.used) < 3 * MiB + BIG + MiB, `used ${bytes.used}`);
      assert.equal(Number(stats.usage!.find((u) => u.unit === 'INODES')!.used), dataKeys.length);

      await detach(cb, v.volume_id!, 'node-b', onB, secrets);
      await detach(ca, v.volume_id!, 'node-a', onA, secrets);
      assert.deepEqual(await leftovers(b.dir), [], `unstage leaves no mount or ${layout.mounter} process behind`);
      assert.deepEqual(await leftovers(a.dir), []);
      await ca.controller.DeleteVolume({ volume_id: v.volume_id!, secrets });
      await ca.controller.DeleteVolume({ volume_id: v.volume_id!, secrets });
      assert.deepEqual(await listKeys(s3, bucket, layout.params.bucket ? prefix.split('/')[0]! + '/' : ''), [], 'every object of the volume is gone');
    });
  }

  it('a bucket of its own holds exactly its capacity (RGW quota on raw bytes); full, it refuses a pod\'s writes and still attaches, snapshots, restores, grows and deletes', async () => {
    const v = await create(ca, 'quota', 4 * MiB, { backend: 's3', clusterID: 'lab' });
    const put = (vol: Volume, key: string, bytes: number) => s3.send(new PutObjectCommand({ Bucket: where(vol).bucket, Key: where(vol).prefix + key, Body: randomBytes(bytes) }));
    const used = async (vol: Volume) => (await listObjects(s3, where(vol).bucket, '')).reduce((n, o) => n + o.size, 0);
    // Fills the bucket to its last byte, the driver's records included; the 100-byte objects count
    // as 100 bytes (RGW would count each as 4 KiB by default, and the last write would be refused).
    const fill = async (vol: Volume, capacity: number) => {
      for (let i = 0; i < 50; i++) await put(vol, `tiny/${i}`, 100);
      const u = await used(vol);
      await put(vol, `rest-${u}`, capacity - u);
    };
    // One byte past the capacity, so the refused body is small: a big one RGW refuses by its length
    // and often closes the connection while the SDK is still sending (EPIPE), hiding the QuotaExceeded.
    const refusesOverflow = async (vol: Volume, capacity: number, what: string) => {
      const over = Math.max(1, capacity - (await used(vol)) + 1);
      await assert.rejects(put(vol, `over-${what}`, over), (e: Error) => {
        assert.equal(e.name, 'QuotaExceeded', `${what}: ${e.name}: ${e.message}`);
        return true;
      });
    };
    // Deleted whatever fails, so one failure here is not also a leftover bucket in the tests after it.
    let snap: Snapshot | undefined;
    let restored: Volume | undefined;
    let on: Awaited<ReturnType<typeof attach>> | undefined;
    try {
      await fill(v, 4 * MiB);
      await refusesOverflow(v, 4 * MiB, 'full');
      // Everything the controller must write into a full bucket still works, and the quota holds after it.
      const att = (on = await attach(ca, v, 'node-a', path.join(a.dir, 'quota'), RWX, secrets));
      // A pod writing past the capacity gets an error at fsync or close (s3fs says EPERM), not a silent loss.
      assert.throws(() => writeRandom(path.join(att.target, 'past-capacity'), 64 * 1024), /EPERM|EIO|EDQUOT|ENOSPC/);
      snap = await snapshotReady(ca, 'quota-snap', v.volume_id!);
      await refusesOverflow(v, 4 * MiB, 'after publish and snapshot');
      restored = await create(ca, 'quota-restored', 4 * MiB, { backend: 's3', clusterID: 'lab' }, { volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } });
      assert.equal(Number(restored.capacity_bytes), 4 * MiB);
      assert.equal((await listKeys(s3, where(restored).bucket, where(restored).prefix)).length, (await listKeys(s3, where(v).bucket, where(v).prefix)).length, 'the restore holds every object of the full volume');
      await refusesOverflow(restored, 4 * MiB, 'restored');
      await ca.controller.DeleteVolume({ volume_id: restored.volume_id!, secrets });
      await ca.controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id!, secrets });

      const exp = await ca.controller.ControllerExpandVolume({ volume_id: v.volume_id!, capacity_range: { required_bytes: 16 * MiB }, secrets, volume_capability: RWX });
      assert.equal(Number(exp!.capacity_bytes), 16 * MiB);
      assert.equal(exp!.node_expansion_required, false);
      assert.equal(Number((await ca.controller.ControllerGetVolume({ volume_id: v.volume_id! }))!.volume!.capacity_bytes), 16 * MiB, 'the record holds the new capacity');
      const sha = writeRandom(path.join(att.target, 'fits-now'), 6 * MiB);
      assert.equal(sha256(await getObject(s3, where(v).bucket, `${where(v).prefix}fits-now`)), sha, 'the pod writes again once the volume has grown');
      await fill(v, 16 * MiB);
      await refusesOverflow(v, 16 * MiB, 'full after growing');
      await detach(ca, v.volume_id!, 'node-a', att, secrets);
      assert.deepEqual(await leftovers(a.dir), []);
      await ca.controller.DeleteVolume({ volume_id: v.volume_id!, secrets });
      assert.deepEqual(await listKeys(s3, where(v).bucket, ''), [], 'a full volume is deleted');
    } finally {
      if (on) await detach(ca, v.volume_id!, 'node-a', on, secrets);
      if (restored) await ca.controller.DeleteVolume({ volume_id: restored.volume_id!, secrets });
      if (snap) await ca.controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id!, secrets });
      await ca.controller.DeleteVolume({ volume_id: v.volume_id!, secrets });
    }
  });

  it('a create cut off after its record is completed by the retry (mount root, quota); a conflicting request under the same name changes nothing', async () => {
    const req = (bytes: number) => ({ name: 'cut-off', capacity_range: { required_bytes: bytes, limit_bytes: bytes }, volume_capabilities: [RWX], parameters: { backend: 's3', clusterID: 'lab' }, secrets });
    const v = (await ca.controller.CreateVolume(req(4 * MiB)))!.volume!;
    const { bucket, prefix } = where(v);
    const quota = async () => {
      const stats = JSON.parse((await run('radosgw-admin', ['-c', lab.conf, 'bucket', 'stats', '--bucket', bucket], { timeoutMs: 30_000 })).stdout) as { bucket_quota: { enabled: boolean; max_size: number } };
      return stats.bucket_quota.enabled ? stats.bucket_quota.max_size : 'off';
    };
    assert.equal(await quota(), 4 * MiB);
    // What a crash right after the record leaves: the bucket and the record, no root, no quota.
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: prefix }));
    await run('radosgw-admin', ['-c', lab.conf, 'quota', 'disable', '--quota-scope', 'bucket', '--bucket', bucket], { timeoutMs: 30_000 });
    assert.equal(await quota(), 'off');
    await assert.rejects(ca.controller.CreateVolume(req(8 * MiB)), (e) => codeOf(e) === 'ALREADY_EXISTS');
    assert.equal(await quota(), 'off', 'a conflicting request set no quota');
    assert.ok(!(await listKeys(s3, bucket, '')).includes(prefix), 'a conflicting request wrote no mount root');
    const again = (await ca.controller.CreateVolume(req(4 * MiB)))!.volume!;
    assert.equal(again.volume_id, v.volume_id);
    assert.equal(await quota(), 4 * MiB, 'the retry set the quota');
    assert.ok((await listKeys(s3, bucket, '')).includes(prefix), 'the retry wrote the mount root');
    await ca.controller.DeleteVolume({ volume_id: v.volume_id, secrets });
  });

  it('single-node modes hold one node at a time; a delete cut off halfway finishes on retry', async () => {
    const v = await create(ca, 'rwo', 64 * MiB, { backend: 's3', clusterID: 'lab' });
    const rwo = mountCap('', 'SINGLE_NODE_WRITER');
    await ca.controller.ControllerPublishVolume({ volume_id: v.volume_id!, node_id: 'node-a', volume_capability: rwo, secrets });
    await ca.controller.ControllerPublishVolume({ volume_id: v.volume_id!, node_id: 'node-a', volume_capability: rwo, secrets });
    await assert.rejects(ca.controller.ControllerPublishVolume({ volume_id: v.volume_id!, node_id: 'node-b', volume_capability: rwo, secrets }), (e) => codeOf(e) === 'FAILED_PRECONDITION');
    await ca.controller.ControllerUnpublishVolume({ volume_id: v.volume_id!, node_id: 'node-a', secrets });
    await ca.controller.ControllerPublishVolume({ volume_id: v.volume_id!, node_id: 'node-b', volume_capability: rwo, secrets });
    await ca.controller.ControllerUnpublishVolume({ volume_id: v.volume_id!, node_id: 'node-b', secrets });

    // A delete that died after marking the volume and removing part of its objects.
    const { bucket, prefix } = where(v);
    const limit = pLimit(32);
    await Promise.all(Array.from({ length: 1500 }, (_, i) => limit(() => s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}x/${i}`, Body: 'x' })))));
    const rec = JSON.parse((await getObject(s3, bucket, '.strata/record.json')).toString()) as Record<string, unknown>;
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: '.strata/record.json', Body: JSON.stringify({ ...rec, state: 'deleting' }) }));
    await Promise.all(Array.from({ length: 700 }, (_, i) => limit(() => s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${prefix}x/${i}` })))));
    const got = (await ca.controller.ControllerGetVolume({ volume_id: v.volume_id! }))!;
    assert.equal(got.status!.volume_condition!.abnormal, true, 'a half-deleted volume is reported abnormal');
    await assert.rejects(ca.controller.ControllerPublishVolume({ volume_id: v.volume_id!, node_id: 'node-a', volume_capability: rwo, secrets }), (e) => codeOf(e) === 'NOT_FOUND');
    await ca.controller.DeleteVolume({ volume_id: v.volume_id!, secrets });
    assert.deepEqual(await listKeys(s3, bucket, ''), []);
    const buckets = ((await s3.send(new ListBucketsCommand({}))).Buckets ?? []).map((x) => x.Name!);
    assert.ok(!buckets.includes(bucket), 'the volume bucket is gone');
    await assert.rejects(ca.controller.ControllerGetVolume({ volume_id: v.volume_id! }), (e) => codeOf(e) === 'NOT_FOUND');
  });

  it('a bucket holding no data goes in one multi-delete, attachments and all; one a snapshot is still being copied from is refused', async () => {
    const v = await create(ca, 'empty-del', 4 * MiB, { backend: 's3', clusterID: 'lab' });
    const { bucket } = where(v);
    await ca.controller.ControllerPublishVolume({ volume_id: v.volume_id!, node_id: 'node-a', volume_capability: RWX, secrets });
    const keys = await listKeys(s3, bucket, '');
    assert.equal(keys.length, 3, `root, record and one attachment: ${keys.join(' ')}`);
    assert.ok(keys.includes('fs/') && keys.includes('.strata/record.json') && keys.some((k) => k.startsWith('.strata/attach/')));
    // A marker of a snapshot still copying (its record says so) keeps the volume, fast path or not.
    const marker = '.strata/snapshotting/csi-snap-' + '0'.repeat(32);
    const snapBucket = 'csi-snap-' + '0'.repeat(32);
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: marker, Body: '' }));
    await s3.send(new CreateBucketCommand({ Bucket: snapBucket }));
    await s3.send(new PutObjectCommand({ Bucket: snapBucket, Key: '.strata/record.json', Body: JSON.stringify({ v: 1, kind: 'snapshot', name: 'x', source: v.volume_id, size: 4 * MiB, state: 'copying', createdAt: '' }) }));
    await assert.rejects(ca.controller.DeleteVolume({ volume_id: v.volume_id!, secrets }), (e) => codeOf(e) === 'FAILED_PRECONDITION');
    assert.ok((await listKeys(s3, bucket, '')).includes('.strata/record.json'), 'the refused delete removed nothing');
    await s3.send(new DeleteObjectCommand({ Bucket: snapBucket, Key: '.strata/record.json' }));
    await s3.send(new DeleteBucketCommand({ Bucket: snapBucket }));
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: marker }));
    await ca.controller.DeleteVolume({ volume_id: v.volume_id!, secrets });
    const buckets = ((await s3.send(new ListBucketsCommand({}))).Buckets ?? []).map((x) => x.Name!);
    assert.ok(!buckets.includes(bucket), 'the volume bucket is gone');
    await ca.controller.DeleteVolume({ volume_id: v.volume_id!, secrets });
    await assert.rejects(ca.controller.ControllerGetVolume({ volume_id: v.volume_id! }), (e) => codeOf(e) === 'NOT_FOUND');
  });

  it('snapshots, restores and clones keep checksums of thousands of objects and a multipart file', async () => {
    const params = { backend: 's3', clusterID: 'lab', bucket: SHARED };
    const src = await create(ca, 'snap-src', 256 * MiB, params);
    const { bucket, prefix } = where(src);
    // Thousands of small files, put with the SDK as an app filling its bucket would; one big file through the mount.
    const want = new Map<string, string>();
    const limit = pLimit(32);
    await Promise.all(
      Array.from({ length: 2000 }, (_, i) =>
        limit(async () => {
          const data = randomBytes(100 + (i % 50) * 40);
          const rel = `tree/d${i % 25}/f${i}`;
          want.set(rel, sha256(data));
          await s3.send(new PutObjectCommand({ Bucket: bucket, Key: prefix + rel, Body: data }));
        }),
      ),
    );
    const att = await attach(ca, src, 'node-a', path.join(a.dir, 'snap-src'), RWX, secrets);
    want.set('big.bin', writeRandom(path.join(att.target, 'big.bin'), BIG));

    const snap = await snapshotReady(ca, 'snap-1', src.volume_id!);
    assert.equal(Number(snap.size_bytes), 256 * MiB);
    assert.equal((await ca.controller.CreateSnapshot({ source_volume_id: src.volume_id!, name: 'snap-1', secrets }))!.snapshot!.snapshot_id, snap.snapshot_id);
    const listed = await ca.controller.ListSnapshots({ source_volume_id: src.volume_id!, secrets });
    assert.deepEqual(listed!.entries!.map((e) => e.snapshot!.snapshot_id), [snap.snapshot_id]);

    // Changed after the snapshot: the clone sees it, the restore does not.
    const laterSha = writeRandom(path.join(att.target, 'later.bin'), MiB);
    await detach(ca, src.volume_id!, 'node-a', att, secrets);
    const restored = await create(ca, 'restored', 512 * MiB, { backend: 's3', clusterID: 'lab' }, { volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } });
    assert.equal(restored.content_source?.snapshot?.snapshot_id, snap.snapshot_id);
    const cloned = await create(ca, 'cloned', 256 * MiB, params, { volume_content_source: { volume: { volume_id: src.volume_id! } } });

    // The source goes; the snapshot is a copy and stays restorable.
    await ca.controller.DeleteVolume({ volume_id: src.volume_id!, secrets });
    const late = await create(ca, 'restored-late', 256 * MiB, params, { volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } });

    for (const [what, v] of [['restore', restored], ['restore after the source was deleted', late], ['clone', cloned]] as const) {
      const w = where(v);
      const keys = (await listKeys(s3, w.bucket, w.prefix)).map((k) => k.slice(w.prefix.length)).filter((k) => k && !k.endsWith('/'));
      const expected = [...want.keys(), ...(what === 'clone' ? ['later.bin'] : [])].sort();
      assert.deepEqual(keys.sort(), expected, `${what}: the same objects`);
      await Promise.all([...want].map(([rel, sha]) => limit(async () => assert.equal(sha256(await getObject(s3, w.bucket, w.prefix + rel)), sha, `${what}: ${rel}`))));
    }
    // And through a mount, on the other node: the big file and a sample of the small ones.
    const m = await attach(cb, cloned, 'node-b', path.join(b.dir, 'cloned'), RWX, secrets);
    assert.equal(fileSha(path.join(m.target, 'big.bin')), want.get('big.bin'));
    assert.equal(fileSha(path.join(m.target, 'later.bin')), laterSha);
    for (const rel of [...want.keys()].slice(0, 50)) assert.equal(fileSha(path.join(m.target, rel)), want.get(rel), `clone via mount: ${rel}`);
    await detach(cb, cloned.volume_id!, 'node-b', m, secrets);

    await ca.controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id!, secrets });
    await ca.controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id!, secrets });
    for (const v of [restored, cloned, late]) await ca.controller.DeleteVolume({ volume_id: v.volume_id!, secrets });
    assert.deepEqual(await listKeys(s3, SHARED, ''), [], 'nothing left in the shared bucket');
    const buckets = ((await s3.send(new ListBucketsCommand({}))).Buckets ?? []).map((x) => x.Name!);
    assert.deepEqual(buckets.filter((x) => x.startsWith('csi-')), [], 'no volume or snapshot bucket left');
  });

  it('a snapshot cut off by a controller crash completes after the restart, copying nothing twice', async () => {
    const params = { backend: 's3', clusterID: 'lab' };
    const src = await create(ca, 'crash-src', 64 * MiB, params);
    const { bucket, prefix } = where(src);
    const limit = pLimit(32);
    const total = 2500;
    await Promise.all(Array.from({ length: total }, (_, i) => limit(() => s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}o/${i}`, Body: `object ${i}` })))));

    const ctl = await startDriver({ config, mode: 'controller', dir: path.join(a.dir, 'ctl-1') });
    const c1 = connect(ctl.socket);
    // The RPC waits for the copy a while; the crash comes long before it ends.
    const pending = c1.controller.CreateSnapshot({ source_volume_id: src.volume_id!, name: 'crash-snap', secrets }).catch(() => undefined);
    const snapBucket = `csi-snap-`;
    let copied = 0;
    for (let i = 0; i < 200 && copied < 200; i++) {
      await sleep(20);
      const sb = ((await s3.send(new ListBucketsCommand({}))).Buckets ?? []).map((x) => x.Name!).find((n) => n.startsWith(snapBucket));
      copied = sb ? (await listKeys(s3, sb, 'fs/')).length : 0;
    }
    ctl.child.kill('SIGKILL');
    await pending;
    c1.close();
    await ctl.stop();
    const sb = ((await s3.send(new ListBucketsCommand({}))).Buckets ?? []).map((x) => x.Name!).find((n) => n.startsWith(snapBucket))!;
    const before = (await listKeys(s3, sb, 'fs/')).length;
    const rec = JSON.parse((await getObject(s3, sb, '.strata/record.json')).toString()) as { state: string };
    assert.equal(rec.state, 'copying', 'the crash really cut the copy off');
    assert.ok(before > 0 && before < total, `partly copied before the crash (${before} of ${total})`);

    // A fresh controller: the snapshotter polls with ListSnapshots, which resumes the copy.
    const ctl2 = await startDriver({ config, mode: 'controller', dir: path.join(a.dir, 'ctl-2') });
    const c2 = connect(ctl2.socket);
    let snap: Snapshot | undefined;
    for (let i = 0; i < 240; i++) {
      const l = await c2.controller.ListSnapshots({ source_volume_id: src.volume_id! });
      snap = l!.entries![0]?.snapshot ?? undefined;
      if (snap?.ready_to_use) break;
      await sleep(250);
    }
    assert.equal(snap?.ready_to_use, true, 'the snapshot became ready after the restart');
    const keys = await listKeys(s3, sb, 'fs/');
    assert.equal(keys.filter((k) => k.startsWith('fs/o/')).length, total, 'no object lost');
    const done = readFileSync(ctl2.logFile, 'utf8').split('\n').filter((l) => l.includes('snapshot copy complete')).map((l) => JSON.parse(l) as { copied: number; objects: number });
    assert.equal(done.length, 1);
    assert.equal(done[0]!.copied, done[0]!.objects - before, 'the resumed copy skipped every object already copied');
    assert.equal(done[0]!.objects, total + 1, 'every object of the source, and the root directory object');
    c2.close();
    await ctl2.stop();

    await ca.controller.DeleteSnapshot({ snapshot_id: snap!.snapshot_id!, secrets });
    await ca.controller.DeleteVolume({ volume_id: src.volume_id!, secrets });
    const buckets = ((await s3.send(new ListBucketsCommand({}))).Buckets ?? []).map((x) => x.Name!);
    assert.deepEqual(buckets.filter((x) => x.startsWith('csi-')), [], 'snapshot and volume buckets are gone');
  });
});

/** Retries a read until another node's write is visible through this node's metadata cache. */
async function eventually<T>(read: () => T, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return read();
    } catch (e) {
      if (Date.now() > deadline || (e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      await sleep(250);
    }
  }
}

async function snapshotReady(c: CsiClients, name: string, source: string): Promise<Snapshot> {
  for (let i = 0; i < 240; i++) {
    const s = (await c.controller.CreateSnapshot({ source_volume_id: source, name, secrets }))!.snapshot!;
    if (s.ready_to_use) return s;
    await sleep(250);
  }
  throw new Error(`snapshot ${name} never became ready`);
}
