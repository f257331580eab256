import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { leftovers } from '../helpers/leftovers.js';
import { MiB, attach, detach, mountCap, type MountMode } from '../helpers/volumes.js';
import { assertFencedWritesRefused, cephUserExists, fusePids, syncWrite } from './helpers.js';
import { useTwoNodes } from './two-nodes.js';

/**
 * CephFS fencing on a real lab with two node plugins and one controller.
 * Each node mounts a volume with a Ceph user of its own; ControllerUnpublish
 * for a node that never unmounted evicts that user's MDS sessions (the MDS
 * blocklists their clients) and removes the user, so its key opens nothing
 * again. Node A's ceph-fuse is frozen (SIGSTOP) as a partitioned node's.
 */

const PARAMS = { backend: 'cephfs', clusterID: 'lab', fsName: 'cephfs', mounter: 'fuse' };

describe('cephfs fencing', { timeout: 600_000 }, () => {
  const n = useTwoNodes(['cephfs']);

  const create = async (name: string, mode: MountMode) =>
    (await n.cc.controller.CreateVolume({ name, capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [mountCap('', mode)], parameters: PARAMS, secrets: n.secrets }))!.volume!;
  const userExists = (user: string) => cephUserExists(n.lab, user);
  const publishedUser = async (volumeId: string, node: string, mode: MountMode) =>
    (await n.cc.controller.ControllerPublishVolume({ volume_id: volumeId, node_id: node, volume_capability: mountCap('', mode), secrets: n.secrets }))!.publish_context!.userID!;

  it('a frozen node is evicted and its user removed at ControllerUnpublish; the new node writes within seconds; the old one writes nothing', async (t) => {
    const { a, b, cc, ca, cb, secrets } = n;
    const RWO: MountMode = 'SINGLE_NODE_WRITER';
    const vol = await create('fence-frozen', RWO);
    const attA = await attach(ca, vol, 'node-a', path.join(a.dir, 'frozen'), mountCap('', RWO), secrets);
    const userA = await publishedUser(vol.volume_id!, 'node-a', RWO);
    assert.ok(syncWrite(path.join(attA.target, 'a.txt'), 'from node-a, before the failure').ok);
    const [pid] = fusePids(path.join(a.dir, 'frozen'), /ceph-fuse$/);
    assert.ok(pid, 'node-a ceph-fuse');
    process.kill(pid, 'SIGSTOP');
    try {
      const t0 = Date.now();
      await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
      const unpublishMs = Date.now() - t0;
      assert.equal(await userExists(userA), false, "node-a's user is gone");
      const attB = await attach(cb, vol, 'node-b', path.join(b.dir, 'frozen'), mountCap('', RWO), secrets);
      const w = syncWrite(path.join(attB.target, 'b.txt'), 'from node-b, after the failover');
      const failoverMs = Date.now() - t0;
      assert.ok(w.ok, w.detail);
      t.diagnostic(`failover: ControllerUnpublish (evict + user removed) ${unpublishMs} ms; to the first fsynced write on node-b ${failoverMs} ms`);
      assert.ok(failoverMs < 10_000, `failover took ${failoverMs} ms`);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    assertFencedWritesRefused(attA.target, (m) => t.diagnostic(m));

    await n.restartA(path.join(a.dir, 'frozen'));

    const attB = { staging: path.join(b.dir, 'frozen', 'staging'), target: path.join(b.dir, 'frozen', 'target') };
    assert.deepEqual(readdirSync(attB.target).sort(), ['a.txt', 'b.txt']);
    assert.equal(readFileSync(path.join(attB.target, 'a.txt'), 'utf8'), 'from node-a, before the failure');
    await detach(cb, vol.volume_id!, 'node-b', attB, secrets);
    await cc.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets });
  });

  it('a multi-node volume: fencing one node leaves the other writing', async () => {
    const { a, b, cc, ca, cb, secrets } = n;
    const RWX: MountMode = 'MULTI_NODE_MULTI_WRITER';
    const vol = await create('fence-shared', RWX);
    const attA = await attach(ca, vol, 'node-a', path.join(a.dir, 'shared'), mountCap('', RWX), secrets);
    const attB = await attach(cb, vol, 'node-b', path.join(b.dir, 'shared'), mountCap('', RWX), secrets);
    const userB = await publishedUser(vol.volume_id!, 'node-b', RWX);
    assert.ok(syncWrite(path.join(attA.target, 'a'), 'a').ok);
    assert.ok(syncWrite(path.join(attB.target, 'b'), 'b').ok);
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets }); // idempotent
    assert.equal(syncWrite(path.join(attA.target, 'a2'), 'a2').ok, false, 'node-a is cut off');
    assert.ok(await userExists(userB), "node-b's user stays");
    assert.ok(syncWrite(path.join(attB.target, 'b2'), 'b2').ok, 'node-b writes on');
    assert.deepEqual(readdirSync(attB.target).sort(), ['a', 'b', 'b2']);
    // The fenced node's late kubelet calls tear down cleanly.
    await ca.node.NodeUnpublishVolume({ volume_id: vol.volume_id!, target_path: attA.target });
    await ca.node.NodeUnstageVolume({ volume_id: vol.volume_id!, staging_target_path: attA.staging });
    assert.deepEqual(await leftovers(path.join(a.dir, 'shared')), []);
    await detach(cb, vol.volume_id!, 'node-b', attB, secrets);
    await cc.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets });
  });

  it('a clean detach evicts nobody, and every node user goes with the volume', async (t) => {
    const { lab, a, b, cc, ca, secrets } = n;
    const RWX: MountMode = 'MULTI_NODE_MULTI_WRITER';
    const vol = await create('fence-clean', RWX);
    let t0 = Date.now();
    await publishedUser(vol.volume_id!, 'node-b', RWX);
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-b', secrets });
    const baseMs = Date.now() - t0;
    const att = await attach(ca, vol, 'node-a', path.join(a.dir, 'clean'), mountCap('', RWX), secrets);
    assert.ok(syncWrite(path.join(att.target, 'f'), 'f').ok);
    const before = (await lab.ceph(['osd', 'blocklist', 'ls'])).length;
    await ca.node.NodeUnpublishVolume({ volume_id: vol.volume_id!, target_path: att.target });
    await ca.node.NodeUnstageVolume({ volume_id: vol.volume_id!, staging_target_path: att.staging });
    t0 = Date.now();
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
    const cleanMs = Date.now() - t0;
    t.diagnostic(`publish+unpublish baseline ${baseMs} ms; ControllerUnpublish after a clean unstage ${cleanMs} ms`);
    assert.equal((await lab.ceph(['osd', 'blocklist', 'ls'])).length, before, 'nothing blocklisted');
    await publishedUser(vol.volume_id!, 'node-b', RWX); // left published: DeleteVolume removes its user
    await cc.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets });
    const users = JSON.parse(await lab.ceph(['auth', 'ls', '--format', 'json'])) as { auth_dump: Array<{ entity: string }> };
    assert.deepEqual(users.auth_dump.map((u) => u.entity).filter((e) => e.startsWith('client.strata-')), []);
    assert.deepEqual(await leftovers(a.dir), []);
    assert.deepEqual(await leftovers(b.dir), []);
  });
});
