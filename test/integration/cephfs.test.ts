import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, statfsSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { CephLab } from '../lab/ceph-lab.js';
import { codeOf, connect, startDriver, type CsiClients, type DriverProcess } from '../helpers/driver.js';
import { leftovers } from '../helpers/leftovers.js';
import type { Volume } from '../../src/csi/gen/csi/v1/Volume.js';
import { MiB, attach, detach, fileSha, mountCap, sha256, writeRandom } from '../helpers/volumes.js';

/**
 * The CephFS backend end to end on a real Ceph lab through the real `strata`
 * binary, mounted with ceph-fuse: two node plugins share a volume, the quota
 * is the size and is enforced, snapshots/restores/clones keep checksums, and
 * one volume's Ceph user cannot mount another volume.
 */

const PARAMS = { backend: 'cephfs', clusterID: 'lab', fsName: 'cephfs' };
// README "CephFS volumes": the least caps of the controller's Ceph user.
const CONTROLLER_CAPS = [
  'mon',
  'allow r, allow command "auth get-key" with entity prefix client.strata-, allow command "config-key get" with key prefix strata/, ' +
    'allow command "config-key set" with key prefix strata/, allow command "config-key rm" with key prefix strata/',
  'mgr',
  'allow rw',
];
const RWX = mountCap('', 'MULTI_NODE_MULTI_WRITER');

const statfsBytes = (p: string) => {
  const s = statfsSync(p);
  return s.blocks * s.bsize;
};

/** A small tree: many files of a few KiB plus one of several MiB; returns name -> sha256. */
function writeTree(dir: string, files: number): Map<string, string> {
  const out = new Map<string, string>();
  mkdirSync(path.join(dir, 'tree/sub'), { recursive: true });
  for (let i = 0; i < files; i++) {
    const rel = `tree/${i % 2 ? 'sub/' : ''}f${i}`;
    const data = randomBytes(1024 + i * 37);
    writeFileSync(path.join(dir, rel), data);
    out.set(rel, sha256(data));
  }
  out.set('big.bin', writeRandom(path.join(dir, 'big.bin'), 12 * MiB));
  return out;
}

function assertTree(dir: string, want: Map<string, string>, what: string): void {
  for (const [rel, sha] of want) assert.equal(fileSha(path.join(dir, rel)), sha, `${what}: ${rel}`);
}

describe('cephfs backend, end to end', { timeout: 600_000 }, () => {
  let lab: CephLab;
  let a: DriverProcess;
  let b: DriverProcess;
  let ca: CsiClients;
  let cb: CsiClients;
  let secrets: Record<string, string>;

  before(async () => {
    lab = await CephLab.start({ components: ['rbd', 'cephfs'] });
    const config = lab.writeDriverConfig();
    a = await startDriver({ config, nodeId: 'node-a', mode: 'all' });
    b = await startDriver({ config, nodeId: 'node-b', mode: 'node' });
    ca = connect(a.socket);
    cb = { ...connect(b.socket), controller: ca.controller };
    // The controller's calls run as a user with exactly the caps the README lists.
    await lab.ceph(['auth', 'get-or-create', 'client.k8s-strata', ...CONTROLLER_CAPS]);
    secrets = { userID: 'k8s-strata', userKey: (await lab.ceph(['auth', 'get-key', 'client.k8s-strata'])).trim() };
  });

  after(async () => {
    ca?.close();
    cb?.close();
    await a?.stop();
    await b?.stop();
    await lab?.stop();
  });

  const create = async (name: string, bytes: number, extra: Record<string, unknown> = {}) => {
    // Restores and clones answer ABORTED while the mgr copies; the provisioner retries, and so do we.
    for (let i = 0; ; i++) {
      try {
        return (await ca.controller.CreateVolume({ name, capacity_range: { required_bytes: bytes }, volume_capabilities: [RWX], parameters: PARAMS, secrets, ...extra }))!.volume!;
      } catch (e) {
        if (codeOf(e) !== 'ABORTED' || i > 20) throw e;
      }
    }
  };

  let sharedId = '';
  let shared: Volume;

  it('two node plugins write and read the same volume at once', async () => {
    const v = await create('shared', 256 * MiB);
    shared = v;
    sharedId = v.volume_id!;
    assert.match(sharedId, /^s1:v:cephfs:lab:cephfs:csi:csi-vol-[0-9a-f]{32}$/);
    assert.equal((await create('shared', 256 * MiB)).volume_id, sharedId, 'CreateVolume is idempotent by name');
    await assert.rejects(create('shared', 512 * MiB), (e) => codeOf(e) === 'ALREADY_EXISTS');

    const onA = await attach(ca, shared, 'node-a', path.join(a.dir, 'shared'), RWX, secrets);
    const onB = await attach(cb, shared, 'node-b', path.join(b.dir, 'shared'), RWX, secrets);
    const got = await ca.controller.ControllerGetVolume({ volume_id: sharedId });
    assert.deepEqual(got!.status!.published_node_ids, ['node-a', 'node-b']);

    // Both nodes write at the same time, each into the shared directory.
    const payload = (node: string, i: number) => Buffer.from(`${node}:${i}:`.padEnd(4096, node));
    await Promise.all([
      ...Array.from({ length: 20 }, (_, i) => writeFile(path.join(onA.target, `a-${i}`), payload('a', i), { flush: true })),
      ...Array.from({ length: 20 }, (_, i) => writeFile(path.join(onB.target, `b-${i}`), payload('b', i), { flush: true })),
    ]);
    for (let i = 0; i < 20; i++) {
      assert.deepEqual(readFileSync(path.join(onA.target, `b-${i}`)), payload('b', i), 'node-a reads what node-b wrote');
      assert.deepEqual(readFileSync(path.join(onB.target, `a-${i}`)), payload('a', i), 'node-b reads what node-a wrote');
    }
    assert.equal(readdirSync(onA.target).length, 40);

    // The quota is the size both nodes see, and the volume's stats report it.
    assert.equal(statfsBytes(onA.target), 256 * MiB);
    assert.equal(statfsBytes(onB.target), 256 * MiB);
    const stats = (await cb.node.NodeGetVolumeStats({ volume_id: sharedId, volume_path: onB.target }))!;
    assert.equal(Number(stats.usage!.find((u) => u.unit === 'BYTES')!.total), 256 * MiB);

    // Grown online: no node step, both mounts see the new size.
    const exp = await ca.controller.ControllerExpandVolume({ volume_id: sharedId, capacity_range: { required_bytes: 384 * MiB }, secrets, volume_capability: RWX });
    assert.equal(Number(exp!.capacity_bytes), 384 * MiB);
    assert.equal(exp!.node_expansion_required, false);
    for (let i = 0; i < 50 && (statfsBytes(onA.target) !== 384 * MiB || statfsBytes(onB.target) !== 384 * MiB); i++) await sleep(200);
    assert.equal(statfsBytes(onA.target), 384 * MiB);
    assert.equal(statfsBytes(onB.target), 384 * MiB);
    // A retry, and a smaller size, change nothing: the mgr's resize --no-shrink would set a smaller quota.
    for (const required of [384 * MiB, 128 * MiB]) {
      const again = await ca.controller.ControllerExpandVolume({ volume_id: sharedId, capacity_range: { required_bytes: required }, secrets, volume_capability: RWX });
      assert.equal(Number(again!.capacity_bytes), 384 * MiB);
    }
    assert.equal(statfsBytes(onA.target), 384 * MiB, 'the quota never shrinks');

    // A read-only publish of the staged volume refuses writes.
    const ro = path.join(b.dir, 'shared', 'ro-target');
    await cb.node.NodePublishVolume({ volume_id: sharedId, staging_target_path: onB.staging, target_path: ro, volume_capability: RWX, readonly: true });
    assert.equal(readFileSync(path.join(ro, 'a-0')).length, 4096);
    assert.throws(() => writeFileSync(path.join(ro, 'nope'), 'x'), /EROFS|read-only/i);
    await cb.node.NodeUnpublishVolume({ volume_id: sharedId, target_path: ro });

    await detach(cb, sharedId, 'node-b', onB, secrets);
    await detach(ca, sharedId, 'node-a', onA, secrets);
    assert.deepEqual(await leftovers(b.dir), [], 'unstage leaves no mount or ceph-fuse behind');
    assert.deepEqual(await leftovers(a.dir), []);
  });

  it('enforces the quota: writes past it fail with EDQUOT', async () => {
    const v = await create('small', 32 * MiB);
    const att = await attach(ca, v, 'node-a', path.join(a.dir, 'small'), RWX, secrets);
    assert.equal(statfsBytes(att.target), 32 * MiB);
    let err: NodeJS.ErrnoException | undefined;
    let written = 0;
    try {
      // Clients learn the used bytes from the MDS with a little lag, so allow some overshoot.
      for (; written < 128 * MiB; written += 4 * MiB) writeRandom(path.join(att.target, `fill-${written / MiB}`), 4 * MiB);
    } catch (e) {
      err = e as NodeJS.ErrnoException;
    }
    // libuv has no name for EDQUOT (node reports code UNKNOWN), so compare the errno.
    assert.equal(err?.errno, -constants.errno.EDQUOT, `expected EDQUOT, got ${err?.code ?? 'no error'} (${err?.errno}) after ${written / MiB} MiB`);
    assert.ok(written >= 28 * MiB && written <= 64 * MiB, `quota of 32 MiB stopped writes after ${written / MiB} MiB`);
    await detach(ca, v.volume_id!, 'node-a', att, secrets);
    await ca.controller.DeleteVolume({ volume_id: v.volume_id!, secrets });
  });

  it("refuses one volume's Ceph user on another volume's path", async () => {
    const one = await create('tenant-1', 16 * MiB);
    const two = await create('tenant-2', 16 * MiB);
    const pub = await ca.controller.ControllerPublishVolume({ volume_id: one.volume_id!, node_id: 'node-a', volume_capability: RWX, secrets });
    const ctx = pub!.publish_context!;
    assert.match(ctx.userID!, /^strata-csi-vol-/);
    assert.ok(ctx.userKey && ctx.userKey !== lab.adminKey, 'the node gets a key of its own, not the admin key');
    const staging = path.join(a.dir, 'tenant-2', 'staging');
    // Volume one's context names volume one's path: refused before any mount.
    await assert.rejects(
      ca.node.NodeStageVolume({ volume_id: two.volume_id!, staging_target_path: staging, volume_capability: RWX, volume_context: two.volume_context, publish_context: ctx, secrets: {} }),
      (e) => codeOf(e) === 'INVALID_ARGUMENT',
    );
    // With volume two's path, Ceph refuses volume one's user.
    const twoPath = (await lab.ceph(['fs', 'subvolume', 'getpath', 'cephfs', two.volume_id!.split(':').at(-1)!, '--group_name', 'csi'])).trim();
    await assert.rejects(
      ca.node.NodeStageVolume({ volume_id: two.volume_id!, staging_target_path: staging, volume_capability: RWX, volume_context: two.volume_context, publish_context: { ...ctx, subvolumePath: twoPath }, secrets: {} }),
      (e) => codeOf(e) === 'FAILED_PRECONDITION',
    );
    assert.deepEqual(await leftovers(path.join(a.dir, 'tenant-2')), []);
    // The user's capabilities name this subvolume's path and RADOS namespace only.
    const caps = JSON.parse(await lab.ceph(['auth', 'get', `client.${ctx.userID}`, '--format', 'json'])) as Array<{ caps: Record<string, string> }>;
    assert.match(caps[0]!.caps.mds!, new RegExp(`path=${ctx.subvolumePath}`));
    assert.match(caps[0]!.caps.osd!, /namespace=fsvolumens_csi-vol-/);
    // With its own context, volume one mounts fine.
    const own = path.join(a.dir, 'tenant-1', 'staging');
    await ca.node.NodeStageVolume({ volume_id: one.volume_id!, staging_target_path: own, volume_capability: RWX, volume_context: one.volume_context, publish_context: ctx, secrets: {} });
    await ca.node.NodeUnstageVolume({ volume_id: one.volume_id!, staging_target_path: own });
    await ca.controller.ControllerUnpublishVolume({ volume_id: one.volume_id!, node_id: 'node-a', secrets });
    await ca.controller.DeleteVolume({ volume_id: one.volume_id!, secrets });
    await ca.controller.DeleteVolume({ volume_id: two.volume_id!, secrets });
    // The volume's user went with it.
    assert.notEqual((await lab.cephAllowFail(['auth', 'get', `client.${ctx.userID}`])).exitCode, 0);
  });

  it('snapshots, restores and clones keep checksums; snapshots outlive their deleted source', async () => {
    const att = await attach(ca, shared, 'node-a', path.join(a.dir, 'snap-src'), RWX, secrets);
    const tree = writeTree(att.target, 300);
    const snap = (await ca.controller.CreateSnapshot({ source_volume_id: sharedId, name: 'snap-1', secrets }))!.snapshot!;
    assert.equal(snap.ready_to_use, true);
    assert.equal(Number(snap.size_bytes), 384 * MiB);
    assert.equal((await ca.controller.CreateSnapshot({ source_volume_id: sharedId, name: 'snap-1', secrets }))!.snapshot!.snapshot_id, snap.snapshot_id);
    const listed = await ca.controller.ListSnapshots({ source_volume_id: sharedId, secrets });
    assert.deepEqual(listed!.entries!.map((e) => e.snapshot!.snapshot_id), [snap.snapshot_id]);

    // Written after the snapshot: in the clone, not in the restore.
    const laterSha = writeRandom(path.join(att.target, 'later.bin'), MiB);
    const restored = await create('restored', 512 * MiB, { volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } });
    assert.equal(restored.content_source?.snapshot?.snapshot_id, snap.snapshot_id);
    await assert.rejects(create('too-small', 64 * MiB, { volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } }), (e) => codeOf(e) === 'OUT_OF_RANGE');
    const cloned = await create('cloned', 384 * MiB, { volume_content_source: { volume: { volume_id: sharedId } } });
    await detach(ca, sharedId, 'node-a', att, secrets);

    // The source goes; its snapshot stays restorable.
    await ca.controller.DeleteVolume({ volume_id: sharedId, secrets });
    await ca.controller.DeleteVolume({ volume_id: sharedId, secrets });
    const late = await create('restored-late', 384 * MiB, { volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } });

    const r = await attach(cb, restored, 'node-b', path.join(b.dir, 'restored'), RWX, secrets);
    assertTree(r.target, tree, 'restore');
    assert.equal(existsSync(path.join(r.target, 'later.bin')), false, 'the restore does not see later writes');
    assert.equal(statfsBytes(r.target), 512 * MiB, 'a restore gets the size it asked for, not the source quota');
    await detach(cb, restored.volume_id!, 'node-b', r, secrets);

    const c = await attach(ca, cloned, 'node-a', path.join(a.dir, 'cloned'), RWX, secrets);
    assertTree(c.target, tree, 'clone');
    assert.equal(fileSha(path.join(c.target, 'later.bin')), laterSha);
    await detach(ca, cloned.volume_id!, 'node-a', c, secrets);

    const l = await attach(ca, late, 'node-a', path.join(a.dir, 'late'), RWX, secrets);
    assertTree(l.target, tree, 'restore after the source was deleted');
    await detach(ca, late.volume_id!, 'node-a', l, secrets);

    await ca.controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id!, secrets });
    await ca.controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id!, secrets });
    for (const v of [restored, cloned, late]) await ca.controller.DeleteVolume({ volume_id: v.volume_id!, secrets });
    const left = JSON.parse(await lab.ceph(['fs', 'subvolume', 'ls', 'cephfs', '--group_name', 'csi', '--format', 'json'])) as unknown[];
    assert.deepEqual(left, [], 'the retained source went with its last snapshot; nothing is left');
    const users = JSON.parse(await lab.ceph(['auth', 'ls', '--format', 'json'])) as { auth_dump: Array<{ entity: string }> };
    assert.deepEqual(users.auth_dump.map((u) => u.entity).filter((e) => e.startsWith('client.strata-')), [], 'every volume user was removed');
  });
});
