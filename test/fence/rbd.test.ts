import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { leftovers } from '../helpers/leftovers.js';
import { MiB, attach, detach, mountCap } from '../helpers/volumes.js';
import { assertFencedWritesRefused, attachedTo, blocklist, clientRecordOf, fusePids, imageMeta, imageOf, syncWrite, watchers } from './helpers.js';
import { useTwoNodes } from './two-nodes.js';

/**
 * RBD fencing on a real lab with two node plugins (node-a, node-b) and one
 * controller. Node A's rbd-fuse is frozen (SIGSTOP), as a partitioned node
 * would be; the controller's ControllerUnpublish must cut A's client off
 * before it answers, B takes the volume over, and A, thawed, writes nothing
 * that reaches the cluster. A's restarted plugin removes its dead mounts and
 * never heals the volume back.
 */

const PARAMS = { backend: 'rbd', clusterID: 'lab', pool: 'rbd' };
const RWO = mountCap('ext4');

describe('rbd fencing', { timeout: 600_000 }, () => {
  const n = useTwoNodes(['rbd']);

  const create = async (name: string) =>
    (await n.cc.controller.CreateVolume({ name, capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [RWO], parameters: PARAMS, secrets: n.secrets }))!.volume!;

  it('a frozen node is fenced at ControllerUnpublish, the new node writes within seconds, the old node writes nothing', async (t) => {
    const { lab, a, b, cc, ca, cb, secrets } = n;
    const vol = await create('fence-frozen');
    const image = imageOf(vol.volume_id!);
    const attA = await attach(ca, vol, 'node-a', path.join(a.dir, 'frozen'), RWO, secrets);
    assert.ok(syncWrite(path.join(attA.target, 'a.txt'), 'from node-a, before the failure').ok);
    const recA = clientRecordOf(await imageMeta(lab, image), 'node-a');
    assert.ok(recA && recA.addrs.length === 1, 'node-a recorded its one rbd-fuse client at stage');
    assert.deepEqual(await watchers(lab, image), recA.addrs, 'the recorded client is the image watcher');

    const [pid] = fusePids(a.dir, /rbd-fuse$/);
    assert.ok(pid, 'node-a rbd-fuse daemon');
    process.kill(pid, 'SIGSTOP');
    let failoverMs = 0;
    try {
      const t0 = Date.now();
      await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
      const unpublishMs = Date.now() - t0;
      const bl = await blocklist(lab);
      assert.ok(bl.has(recA.addrs[0]!), 'node-a client blocklisted before ControllerUnpublish answered');
      assert.ok(Date.parse(bl.get(recA.addrs[0]!)!.replace(/\+0000$/, 'Z')) > Date.now() + 365 * 86400_000, 'the entry outlives any partition');
      const meta = await imageMeta(lab, image);
      assert.equal(clientRecordOf(meta, 'node-a'), undefined);
      assert.equal(attachedTo(meta, 'node-a'), false);

      const attB = await attach(cb, vol, 'node-b', path.join(b.dir, 'frozen'), RWO, secrets);
      const w = syncWrite(path.join(attB.target, 'b.txt'), 'from node-b, after the failover');
      failoverMs = Date.now() - t0;
      assert.ok(w.ok, w.detail);
      t.diagnostic(`failover: ControllerUnpublish (fencing) ${unpublishMs} ms; to the first acknowledged write on node-b ${failoverMs} ms`);
      assert.ok(failoverMs < 10_000, `failover took ${failoverMs} ms`);
    } finally {
      process.kill(pid, 'SIGCONT');
    }

    // Thawed, node-a tries to write: new data and an overwrite, each fsynced. Neither may be acknowledged.
    assertFencedWritesRefused(attA.target, (m) => t.diagnostic(m));
    assert.deepEqual(await watchers(lab, image), clientRecordOf(await imageMeta(lab, image), 'node-b')!.addrs, 'only node-b watches the image');

    // Node-a's plugin restarts: its start-up pass finds the volume is not its own any more.
    await n.restartA(path.join(a.dir, 'frozen'), () => fusePids(a.dir, /rbd-fuse$/).length === 0);
    assert.deepEqual(await watchers(lab, image), clientRecordOf(await imageMeta(lab, image), 'node-b')!.addrs, 'node-a did not take the volume back');

    // What the cluster holds, read through a fresh mount: node-b's file and node-a's pre-failure one, nothing later.
    const attB = { staging: path.join(b.dir, 'frozen', 'staging'), target: path.join(b.dir, 'frozen', 'target') };
    await detach(cb, vol.volume_id!, 'node-b', attB, secrets);
    const check = await attach(cb, vol, 'node-b', path.join(b.dir, 'frozen-check'), RWO, secrets);
    assert.deepEqual(readdirSync(check.target).filter((f) => f !== 'lost+found').sort(), ['a.txt', 'b.txt']);
    assert.equal(readFileSync(path.join(check.target, 'a.txt'), 'utf8'), 'from node-a, before the failure');
    assert.equal(readFileSync(path.join(check.target, 'b.txt'), 'utf8'), 'from node-b, after the failover');
    await detach(cb, vol.volume_id!, 'node-b', check, secrets);
    await cc.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets });
  });

  it('a clean detach fences nothing and takes no longer', async (t) => {
    const { lab, a, cc, ca, secrets } = n;
    const vol = await create('fence-clean');
    const image = imageOf(vol.volume_id!);
    const before = (await blocklist(lab)).size;
    // Baseline in the same run: publish and unpublish with no node ever staging.
    await cc.controller.ControllerPublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', volume_capability: RWO, secrets });
    let t0 = Date.now();
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
    const baseMs = Date.now() - t0;

    const att = await attach(ca, vol, 'node-a', path.join(a.dir, 'clean'), RWO, secrets);
    assert.ok(syncWrite(path.join(att.target, 'f'), 'clean').ok);
    await ca.node.NodeUnpublishVolume({ volume_id: vol.volume_id!, target_path: att.target });
    await ca.node.NodeUnstageVolume({ volume_id: vol.volume_id!, staging_target_path: att.staging });
    assert.equal(clientRecordOf(await imageMeta(lab, image), 'node-a'), undefined, 'a clean unstage removes the client record');
    t0 = Date.now();
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
    const cleanMs = Date.now() - t0;
    t.diagnostic(`ControllerUnpublish: ${cleanMs} ms after a clean unstage; ${baseMs} ms baseline (never staged)`);
    assert.equal((await blocklist(lab)).size, before, 'nothing was blocklisted');
    assert.ok(cleanMs < baseMs + 1000, `clean unpublish ${cleanMs} ms vs baseline ${baseMs} ms`);
    assert.equal(fencedImage(await ctrlLog(), image), false, 'the controller fenced nothing for this volume');
    await cc.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets });
  });

  it('fencing is idempotent: repeated and crash-cut ControllerUnpublish converge, the node unstages afterwards', async () => {
    const { lab, a, cc, ca, secrets } = n;
    const vol = await create('fence-repeat');
    const image = imageOf(vol.volume_id!);
    const att = await attach(ca, vol, 'node-a', path.join(a.dir, 'repeat'), RWO, secrets);
    const rec = clientRecordOf(await imageMeta(lab, image), 'node-a')!;
    const before = await blocklist(lab);
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
    const once = await blocklist(lab);
    assert.equal(once.size, before.size + 1);
    assert.ok(once.has(rec.addrs[0]!));
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
    assert.deepEqual([...(await blocklist(lab)).keys()].sort(), [...once.keys()].sort(), 'a repeat adds nothing');
    // A controller killed after blocklisting, before dropping the records: the retry fences again and finishes.
    await lab.rbd(['image-meta', 'set', `rbd/${image}`, `strata.client.${Buffer.from('node-a').toString('hex')}`, JSON.stringify(rec)]);
    await lab.rbd(['image-meta', 'set', `rbd/${image}`, `strata.attach.${Buffer.from('node-a').toString('hex')}`, JSON.stringify({ mode: 'SINGLE_NODE_WRITER', readonly: false })]);
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
    const meta = await imageMeta(lab, image);
    assert.equal(clientRecordOf(meta, 'node-a'), undefined);
    assert.equal(attachedTo(meta, 'node-a'), false);
    assert.equal((await blocklist(lab)).size, once.size);
    // The fenced (but alive) node's late kubelet calls still tear down cleanly.
    assert.equal(syncWrite(path.join(att.target, 'late'), 'late').ok, false, 'the fenced node cannot write');
    await ca.node.NodeUnpublishVolume({ volume_id: vol.volume_id!, target_path: att.target });
    await ca.node.NodeUnstageVolume({ volume_id: vol.volume_id!, staging_target_path: att.staging });
    assert.deepEqual(await leftovers(path.join(a.dir, 'repeat')), []);
    assert.deepEqual(await watchers(lab, image), []);
    await cc.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets });
  });

  it('ControllerPublish fences a node that still has the volume open without being published', async () => {
    const { lab, a, b, cc, ca, cb, secrets } = n;
    const vol = await create('fence-publish');
    const image = imageOf(vol.volume_id!);
    const att = await attach(ca, vol, 'node-a', path.join(a.dir, 'publish'), RWO, secrets);
    const rec = clientRecordOf(await imageMeta(lab, image), 'node-a')!;
    // The attachment is gone but node-a's client is not (a stage that raced the unpublish, or a controller of a version that did not fence).
    await lab.rbd(['image-meta', 'remove', `rbd/${image}`, `strata.attach.${Buffer.from('node-a').toString('hex')}`]);
    const attB = await attach(cb, vol, 'node-b', path.join(b.dir, 'publish'), RWO, secrets);
    assert.ok((await blocklist(lab)).has(rec.addrs[0]!), 'node-a was fenced before node-b was published');
    assert.ok(syncWrite(path.join(attB.target, 'b'), 'b').ok);
    assert.equal(syncWrite(path.join(att.target, 'a'), 'a').ok, false);
    await ca.node.NodeUnpublishVolume({ volume_id: vol.volume_id!, target_path: att.target });
    await ca.node.NodeUnstageVolume({ volume_id: vol.volume_id!, staging_target_path: att.staging });
    assert.ok(clientRecordOf(await imageMeta(lab, image), 'node-b'), "node-a's unstage leaves node-b's record alone");
    await detach(cb, vol.volume_id!, 'node-b', attB, secrets);
    await cc.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets });
  });

  it('a fenced node given the volume again stages it afresh; a live stage without a record (an older version) is adopted', async () => {
    const { lab, a, cc, ca, secrets } = n;
    const vol = await create('fence-again');
    const image = imageOf(vol.volume_id!);
    const att = await attach(ca, vol, 'node-a', path.join(a.dir, 'again'), RWO, secrets);
    assert.ok(syncWrite(path.join(att.target, 'one'), 'one').ok);
    const first = clientRecordOf(await imageMeta(lab, image), 'node-a')!.addrs;

    // Staged by a version that kept no record: kubelet's repeated NodeStage records the live client and keeps the mount.
    await lab.rbd(['image-meta', 'remove', `rbd/${image}`, `strata.client.${Buffer.from('node-a').toString('hex')}`]);
    await ca.node.NodeStageVolume({ volume_id: vol.volume_id!, staging_target_path: att.staging, volume_capability: RWO, secrets, volume_context: vol.volume_context });
    assert.deepEqual(clientRecordOf(await imageMeta(lab, image), 'node-a')!.addrs, first);
    assert.ok(syncWrite(path.join(att.target, 'two'), 'two').ok, 'the adopted mount still writes');

    // Fenced (force detach), then published to the same node again: the dead staging is replaced.
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
    assert.equal(syncWrite(path.join(att.target, 'three'), 'three').ok, false);
    await ca.node.NodeUnpublishVolume({ volume_id: vol.volume_id!, target_path: att.target });
    const again = await attach(ca, vol, 'node-a', path.join(a.dir, 'again'), RWO, secrets);
    const second = clientRecordOf(await imageMeta(lab, image), 'node-a')!.addrs;
    assert.equal(second.length, 1);
    assert.notDeepEqual(second, first, 'a new client instance');
    assert.deepEqual(await watchers(lab, image), second);
    assert.ok(syncWrite(path.join(again.target, 'four'), 'four').ok);
    assert.deepEqual(readdirSync(again.target).filter((f) => f !== 'lost+found').sort(), ['four', 'one', 'two']);
    await detach(ca, vol.volume_id!, 'node-a', again, secrets);
    await cc.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets });
  });

  it('node-b and node-a are left with nothing mounted', async () => {
    const { a, b } = n;
    assert.deepEqual(await leftovers(a.dir), []);
    assert.deepEqual(await leftovers(b.dir), []);
  });

  const ctrlLog = async () => readFileSync(n.ctrl.logFile, 'utf8');
});

/** Whether the controller log has a fencing line for this image. */
function fencedImage(log: string, image: string): boolean {
  return log.split('\n').some((l) => l.includes('"fenced: client instances blocklisted"') && l.includes(image));
}
