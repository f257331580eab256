import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statfsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CephLab } from '../lab/ceph-lab.js';
import { codeOf, connect, startDriver, type CsiClients, type DriverProcess } from '../helpers/driver.js';
import { leftovers } from '../helpers/leftovers.js';
import { MiB, attach, blockCap, detach, fileSha, mountCap, readRange, sha256, writeRandom } from '../helpers/volumes.js';

/**
 * The RBD backend end to end on a real Ceph lab, through the real `strata`
 * binary: two node plugins (node-a also runs the controller), data written
 * through published volumes and read back by checksum after snapshot,
 * restore, clone, expansion and deletion of the sources.
 */

const ZONE = { 'topology.strata.csi.dev/zone': 'lab-a' };
const PARAMS = { backend: 'rbd', clusterID: 'lab', pool: 'rbd' };

describe('rbd backend, end to end', { timeout: 600_000 }, () => {
  let lab: CephLab;
  let a: DriverProcess;
  let b: DriverProcess;
  let ca: CsiClients;
  let cb: CsiClients;
  let secrets: Record<string, string>;

  before(async () => {
    lab = await CephLab.start({ components: ['rbd'] });
    const config = lab.writeDriverConfig({ topology: ZONE });
    a = await startDriver({ config, nodeId: 'node-a', mode: 'all' });
    b = await startDriver({ config, nodeId: 'node-b', mode: 'node' });
    ca = connect(a.socket);
    // node-b runs only the node service; its controller calls go to the one controller, as in a cluster.
    const nodeB = connect(b.socket);
    cb = { ...nodeB, controller: ca.controller };
    secrets = { userID: 'admin', userKey: lab.adminKey };
  });

  after(async () => {
    ca?.close();
    cb?.close();
    await a?.stop();
    await b?.stop();
    await lab?.stop();
  });

  const create = async (name: string, bytes: number, extra: Record<string, unknown> = {}) =>
    (await ca.controller.CreateVolume({ name, capacity_range: { required_bytes: bytes }, volume_capabilities: [mountCap()], parameters: PARAMS, secrets, ...extra }))!.volume!;

  let sourceId = '';
  let sourceSha = '';
  let restoredId = '';
  let clonedId = '';
  let snapshotId = '';

  it('creates a volume idempotently by name, with the cluster topology', async () => {
    const v = await create('data-xfs', 64 * MiB, { parameters: { ...PARAMS, fsType: 'xfs' } });
    // mkfs.xfs needs 300 MB: the driver provisions at least that for xfs.
    sourceId = v.volume_id!;
    assert.match(sourceId, /^s1:v:rbd:lab:rbd:csi-vol-[0-9a-f]{32}$/);
    assert.equal(Number(v.capacity_bytes), 300 * MiB);
    assert.deepEqual(v.accessible_topology?.[0]?.segments, ZONE);
    assert.equal(v.volume_context?.fsType, 'xfs');
    const again = await create('data-xfs', 64 * MiB, { parameters: { ...PARAMS, fsType: 'xfs' } });
    assert.equal(again.volume_id, sourceId);
    await assert.rejects(create('data-xfs', 512 * MiB, { parameters: { ...PARAMS, fsType: 'xfs' } }), (e) => codeOf(e) === 'ALREADY_EXISTS');
    const info = await ca.node.NodeGetInfo({});
    assert.equal(info!.node_id, 'node-a');
  });

  it('writes through a published volume, then snapshots, restores and clones it', async () => {
    const att = await attach(ca, sourceId, 'node-a', path.join(a.dir, 'src'), mountCap('xfs'), secrets);
    sourceSha = writeRandom(path.join(att.target, 'data.bin'), 8 * MiB);
    const snap = (await ca.controller.CreateSnapshot({ source_volume_id: sourceId, name: 'snap-1', secrets }))!.snapshot!;
    snapshotId = snap.snapshot_id!;
    assert.equal(snap.ready_to_use, true);
    assert.equal(snap.source_volume_id, sourceId);
    const again = (await ca.controller.CreateSnapshot({ source_volume_id: sourceId, name: 'snap-1', secrets }))!.snapshot!;
    assert.equal(again.snapshot_id, snapshotId, 'CreateSnapshot is idempotent by name');
    const listed = await ca.controller.ListSnapshots({ source_volume_id: sourceId, secrets });
    assert.deepEqual(listed!.entries!.map((e) => e.snapshot!.snapshot_id), [snapshotId]);

    // Written after the snapshot: must show in the clone, not in the restore.
    const laterSha = writeRandom(path.join(att.target, 'later.bin'), MiB);
    restoredId = (await create('restored', 300 * MiB, { volume_content_source: { snapshot: { snapshot_id: snapshotId } } })).volume_id!;
    // Mounted beside its source on the same node: same xfs UUID, which only mounts with nouuid.
    const side = await attach(ca, restoredId, 'node-a', path.join(a.dir, 'beside'), mountCap(), secrets);
    assert.equal(fileSha(path.join(side.target, 'data.bin')), sourceSha);
    await detach(ca, restoredId, 'node-a', side, secrets);
    clonedId = (await create('cloned', 400 * MiB, { volume_content_source: { volume: { volume_id: sourceId } } })).volume_id!;
    assert.notEqual(restoredId, clonedId);

    // Grow the source online (xfs grows while mounted; ext4 would need CAP_SYS_RESOURCE, FACTS pitfall 15).
    const exp = await ca.controller.ControllerExpandVolume({ volume_id: sourceId, capacity_range: { required_bytes: 512 * MiB }, secrets, volume_capability: mountCap('xfs') });
    assert.equal(Number(exp!.capacity_bytes), 512 * MiB);
    assert.equal(exp!.node_expansion_required, true);
    const before = statfsSync(att.target);
    const nodeExp = await ca.node.NodeExpandVolume({ volume_id: sourceId, volume_path: att.target, staging_target_path: att.staging, volume_capability: mountCap('xfs') });
    assert.equal(Number(nodeExp!.capacity_bytes), 512 * MiB);
    const grown = statfsSync(att.target);
    assert.ok(grown.blocks * grown.bsize > before.blocks * before.bsize + 150 * MiB, 'the mounted file system grew');
    assert.equal(fileSha(path.join(att.target, 'data.bin')), sourceSha, 'data survives online growth');

    const stats = (await ca.node.NodeGetVolumeStats({ volume_id: sourceId, volume_path: att.target }))!;
    const bytes = stats.usage!.find((u) => u.unit === 'BYTES')!;
    const inodes = stats.usage!.find((u) => u.unit === 'INODES')!;
    assert.ok(Number(bytes.used) >= 9 * MiB && Number(bytes.total) > 400 * MiB);
    assert.ok(Number(inodes.total) > 0 && Number(inodes.used) > 0);
    assert.equal(stats.volume_condition?.abnormal, false);

    const got = await ca.controller.ControllerGetVolume({ volume_id: sourceId });
    assert.deepEqual(got!.status!.published_node_ids, ['node-a']);
    await detach(ca, sourceId, 'node-a', att, secrets);

    // The clone was taken after later.bin was written; the restore from the earlier snapshot was not.
    const cl = await attach(cb, clonedId, 'node-b', path.join(b.dir, 'clone-check'), mountCap(), secrets);
    assert.equal(fileSha(path.join(cl.target, 'later.bin')), laterSha);
    await detach(cb, clonedId, 'node-b', cl, secrets);
  });

  it('refuses a second node for a single-writer volume, at the controller and on the node', async () => {
    const att = await attach(ca, restoredId, 'node-a', path.join(a.dir, 'fence'), mountCap(), secrets);
    await assert.rejects(
      ca.controller.ControllerPublishVolume({ volume_id: restoredId, node_id: 'node-b', volume_capability: mountCap(), secrets }),
      (e) => codeOf(e) === 'FAILED_PRECONDITION',
    );
    // Even if the controller were bypassed (a stale VolumeAttachment), node-b sees node-a's watcher and refuses.
    await assert.rejects(
      cb.node.NodeStageVolume({ volume_id: restoredId, staging_target_path: path.join(b.dir, 'fence-staging'), volume_capability: mountCap(), secrets }),
      (e) => codeOf(e) === 'FAILED_PRECONDITION',
    );
    await detach(ca, restoredId, 'node-a', att, secrets);
  });

  it('keeps restored and cloned volumes intact after the source and snapshot are deleted', async () => {
    await ca.controller.DeleteSnapshot({ snapshot_id: snapshotId, secrets });
    await ca.controller.DeleteSnapshot({ snapshot_id: snapshotId, secrets }); // idempotent
    await ca.controller.DeleteVolume({ volume_id: sourceId, secrets });
    await ca.controller.DeleteVolume({ volume_id: sourceId, secrets });
    assert.equal((await ca.controller.ListSnapshots({ snapshot_id: snapshotId, secrets }))!.entries!.length, 0);

    const r = await attach(cb, restoredId, 'node-b', path.join(b.dir, 'restored'), mountCap(), secrets);
    assert.equal(fileSha(path.join(r.target, 'data.bin')), sourceSha, 'restore holds the snapshot data');
    assert.deepEqual(readdirSync(r.target).filter((f) => f.endsWith('.bin')).sort(), ['data.bin'], 'restore does not see later writes');
    await detach(cb, restoredId, 'node-b', r, secrets);

    const c = await attach(ca, clonedId, 'node-a', path.join(a.dir, 'cloned'), mountCap(), secrets);
    assert.equal(fileSha(path.join(c.target, 'data.bin')), sourceSha, 'clone holds the source data');
    assert.ok(statfsSync(c.target).blocks * statfsSync(c.target).bsize > 320 * MiB, 'clone was grown to its requested 400 MiB (xfs keeps 64 MiB of log out of statfs; ungrown it shows 236 MiB)');
    await detach(ca, clonedId, 'node-a', c, secrets);

    await ca.controller.DeleteVolume({ volume_id: restoredId, secrets });
    await ca.controller.DeleteVolume({ volume_id: clonedId, secrets });
    assert.deepEqual((await lab.rbd(['ls', 'rbd'])).split('\n').filter(Boolean), []);
    // Trashed parents are purged in the background once nothing needs them.
    let trash: unknown[] = [];
    for (let i = 0; i < 50; i++) {
      trash = JSON.parse(await lab.rbd(['trash', 'ls', '--all', 'rbd', '--format', 'json'])) as unknown[];
      if (!trash.length) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.deepEqual(trash, [], 'trashed parents are purged once nothing needs them');
  });

  it('never reformats: data stays across unstage and restage, and growth while unstaged (ext4)', async () => {
    const id = (await create('keep-ext4', 32 * MiB)).volume_id!;
    let att = await attach(ca, id, 'node-a', path.join(a.dir, 'keep'), mountCap(), secrets);
    const sha = writeRandom(path.join(att.target, 'f'), 2 * MiB);
    await detach(ca, id, 'node-a', att, secrets);
    att = await attach(ca, id, 'node-a', path.join(a.dir, 'keep'), mountCap(), secrets);
    assert.equal(fileSha(path.join(att.target, 'f')), sha);
    // A read-only publish of the same staged volume refuses writes.
    const ro = path.join(a.dir, 'keep', 'ro-target');
    await ca.node.NodePublishVolume({ volume_id: id, staging_target_path: att.staging, target_path: ro, volume_capability: mountCap(), readonly: true });
    assert.throws(() => writeRandom(path.join(ro, 'g'), 1024), /EROFS|read-only/i);
    await ca.node.NodeUnpublishVolume({ volume_id: id, target_path: ro });
    await detach(ca, id, 'node-a', att, secrets);
    // Grown while unstaged (ext4 grows offline, at the next stage): NodeExpand then finds nothing to
    // do from the superblock, without a resize2fs.
    await ca.controller.ControllerExpandVolume({ volume_id: id, capacity_range: { required_bytes: 64 * MiB }, secrets, volume_capability: mountCap() });
    att = await attach(ca, id, 'node-a', path.join(a.dir, 'keep'), mountCap(), secrets);
    const grown = statfsSync(att.target);
    assert.ok(grown.blocks * grown.bsize > 48 * MiB, 'the stage grew the file system');
    const resizes = () => readFileSync(a.logFile, 'utf8').split('\n').filter((l) => l.includes('"cmd":"resize2fs"')).length;
    const before = resizes();
    assert.ok(before > 0, 'the stage ran resize2fs, and the log shows the commands run');
    const nodeExp = await ca.node.NodeExpandVolume({ volume_id: id, volume_path: att.target, staging_target_path: att.staging, volume_capability: mountCap() });
    assert.equal(Number(nodeExp!.capacity_bytes), 64 * MiB);
    assert.equal(resizes(), before, 'no resize2fs for a file system that already spans its device');
    assert.equal(fileSha(path.join(att.target, 'f')), sha);
    await detach(ca, id, 'node-a', att, secrets);
    await ca.controller.DeleteVolume({ volume_id: id, secrets });
  });

  it('serves raw block volumes', async () => {
    const v = (await ca.controller.CreateVolume({ name: 'raw', capacity_range: { required_bytes: 16 * MiB }, volume_capabilities: [blockCap()], parameters: PARAMS, secrets }))!.volume!;
    let att = await attach(ca, v.volume_id!, 'node-a', path.join(a.dir, 'raw'), blockCap(), secrets);
    const sha = writeRandom(att.target, MiB, 4 * MiB);
    await detach(ca, v.volume_id!, 'node-a', att, secrets);
    att = await attach(ca, v.volume_id!, 'node-a', path.join(a.dir, 'raw'), blockCap(), secrets);
    assert.equal(sha256(readRange(att.target, 4 * MiB, MiB)), sha);
    const st = await ca.node.NodeGetVolumeStats({ volume_id: v.volume_id!, volume_path: att.target });
    assert.equal(Number(st!.usage![0]!.total), 16 * MiB);
    await detach(ca, v.volume_id!, 'node-a', att, secrets);
    await ca.controller.DeleteVolume({ volume_id: v.volume_id!, secrets });
  });

  it('lists volumes page by page with their published nodes, and reports capacity', async () => {
    const ids: string[] = [];
    for (const n of ['list-1', 'list-2', 'list-3']) ids.push((await create(n, 8 * MiB)).volume_id!);
    await ca.controller.ControllerPublishVolume({ volume_id: ids[1]!, node_id: 'node-b', volume_capability: mountCap(), secrets });
    const p1 = (await ca.controller.ListVolumes({ max_entries: 2 }))!;
    assert.equal(p1.entries!.length, 2);
    assert.ok(p1.next_token);
    const p2 = (await ca.controller.ListVolumes({ max_entries: 2, starting_token: p1.next_token! }))!;
    const all = [...p1.entries!, ...p2.entries!];
    assert.deepEqual(all.map((e) => e.volume!.volume_id).sort(), [...ids].sort());
    assert.deepEqual(all.find((e) => e.volume!.volume_id === ids[1])!.status!.published_node_ids, ['node-b']);
    await assert.rejects(ca.controller.ListVolumes({ starting_token: 'bogus' }), (e) => codeOf(e) === 'ABORTED');
    const cap = await ca.controller.GetCapacity({ parameters: PARAMS });
    assert.ok(Number(cap!.available_capacity) > 1024 * MiB, 'the lab pool has gigabytes free');
    await ca.controller.ControllerUnpublishVolume({ volume_id: ids[1]!, node_id: 'node-b', secrets });
    for (const id of ids) await ca.controller.DeleteVolume({ volume_id: id, secrets });
  });

  it('keeps keys out of process arguments and logs, and leaves nothing behind', async () => {
    const id = (await create('secret-check', 8 * MiB)).volume_id!;
    const att = await attach(ca, id, 'node-a', path.join(a.dir, 'secret'), mountCap(), secrets);
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      let cmd = '';
      try {
        cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      } catch {
        continue;
      }
      assert.ok(!cmd.includes(lab.adminKey), `process ${pid} has the key in argv: ${cmd.split('\0')[0]}`);
    }
    await detach(ca, id, 'node-a', att, secrets);
    await ca.controller.DeleteVolume({ volume_id: id, secrets });
    for (const d of [a, b]) {
      assert.ok(!readFileSync(d.logFile, 'utf8').includes(lab.adminKey), `${d.logFile} contains the key`);
      assert.deepEqual(await leftovers(d.dir), []);
    }
  });
});
