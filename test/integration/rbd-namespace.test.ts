import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statfsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CephLab } from '../lab/ceph-lab.js';
import { codeOf, connect, startDriver, type CsiClients, type DriverProcess } from '../helpers/driver.js';
import { leftovers } from '../helpers/leftovers.js';
import { MiB, fileSha, mountCap, writeRandom, type Attached } from '../helpers/volumes.js';
import { assertFencedWritesRefused, blocklist, fusePids, syncWrite } from '../fence/helpers.js';
import type { Volume } from '../../src/csi/gen/csi/v1/Volume.js';

/**
 * RBD volumes in a RADOS namespace, staged with a node key that reaches only
 * that namespace (`osd 'profile rbd pool=rbd namespace=tenant-a'`), on a real
 * lab. The controller runs as a provisioner user with `profile rbd` on the
 * whole pool (enough to make the namespace); the node plugins have no identity
 * in their config, only the node-stage secret. The same node key must be
 * refused, quickly and clearly, for an image in the default namespace or in
 * another namespace: rbd-fuse with a key that does not reach its image hangs
 * on the first read, so the refusal must come before it starts.
 */

const NS = 'tenant-a';
const PARAMS = { backend: 'rbd', clusterID: 'lab', pool: 'rbd', radosNamespace: NS };
const XFS = mountCap('xfs');

describe('rbd volumes in a RADOS namespace, with a node key limited to it', { timeout: 600_000 }, () => {
  let lab: CephLab;
  let ctrl: DriverProcess;
  let a: DriverProcess;
  let b: DriverProcess;
  let cc: CsiClients;
  let ca: CsiClients;
  let cb: CsiClients;
  let prov: Record<string, string>;
  let nodeKey: Record<string, string>;

  before(async () => {
    lab = await CephLab.start({ components: ['rbd'] });
    await lab.ceph(['auth', 'get-or-create', 'client.strata-prov', 'mon', 'profile rbd', 'osd', 'profile rbd pool=rbd', 'mgr', 'profile rbd pool=rbd']);
    await lab.ceph(['auth', 'get-or-create', 'client.strata-node-a', 'mon', 'profile rbd', 'osd', `profile rbd pool=rbd namespace=${NS}`]);
    prov = { userID: 'strata-prov', userKey: (await lab.ceph(['auth', 'get-key', 'client.strata-prov'])).trim() };
    nodeKey = { userID: 'strata-node-a', userKey: (await lab.ceph(['auth', 'get-key', 'client.strata-node-a'])).trim() };
    ctrl = await startDriver({ config: lab.writeDriverConfig(), mode: 'controller' });
    // Nodes hold no key of their own config: only what the node-stage secret brings.
    const nodeConfig = lab.writeDriverConfig({ defaultIdentity: false });
    a = await startDriver({ config: nodeConfig, mode: 'node', nodeId: 'node-a', args: ['--heal-interval', '0'] });
    b = await startDriver({ config: nodeConfig, mode: 'node', nodeId: 'node-b', args: ['--heal-interval', '0'] });
    cc = connect(ctrl.socket);
    ca = { ...connect(a.socket), controller: cc.controller };
    cb = { ...connect(b.socket), controller: cc.controller };
  });

  after(async () => {
    for (const p of [...fusePids(a?.dir ?? '/nonexistent'), ...fusePids(b?.dir ?? '/nonexistent')]) process.kill(p, 'SIGCONT');
    cc?.close();
    ca?.close();
    cb?.close();
    await a?.stop();
    await b?.stop();
    await ctrl?.stop();
    await lab?.stop();
  });

  const create = async (name: string, bytes: number, extra: Record<string, unknown> = {}) =>
    (await cc.controller.CreateVolume({ name, capacity_range: { required_bytes: bytes }, volume_capabilities: [XFS], parameters: PARAMS, secrets: prov, ...extra }))!.volume!;

  /** As kubelet and the attacher do it: the controller with the provisioner's secret, the node with the node key. */
  const attach = async (c: CsiClients, v: Volume, nodeId: string, dir: string): Promise<Attached> => {
    const staging = path.join(dir, 'staging');
    const target = path.join(dir, 'target');
    const volume_context = v.volume_context ?? {};
    await c.controller.ControllerPublishVolume({ volume_id: v.volume_id!, node_id: nodeId, volume_capability: XFS, secrets: prov, volume_context });
    await c.node.NodeStageVolume({ volume_id: v.volume_id!, staging_target_path: staging, volume_capability: XFS, secrets: nodeKey, volume_context });
    await c.node.NodePublishVolume({ volume_id: v.volume_id!, staging_target_path: staging, target_path: target, volume_capability: XFS, volume_context });
    return { staging, target };
  };
  const detach = async (c: CsiClients, volumeId: string, nodeId: string, att: Attached) => {
    await c.node.NodeUnpublishVolume({ volume_id: volumeId, target_path: att.target });
    await c.node.NodeUnstageVolume({ volume_id: volumeId, staging_target_path: att.staging });
    await c.controller.ControllerUnpublishVolume({ volume_id: volumeId, node_id: nodeId, secrets: prov });
  };
  const imagesIn = async (spec: string) => (await lab.rbd(['ls', spec])).split('\n').filter(Boolean);

  it('creates, stages with the namespace key, snapshots, restores, expands, lists and deletes, all in the namespace', async (t) => {
    const v = await create('ns-data', 64 * MiB);
    assert.match(v.volume_id!, new RegExp(`^s1:v:rbd:lab:rbd:${NS}:csi-vol-[0-9a-f]{32}$`));
    assert.equal(v.volume_context?.radosNamespace, NS);
    assert.deepEqual(JSON.parse(await lab.rbd(['namespace', 'ls', 'rbd', '--format', 'json'])), [{ name: NS }], 'the provisioner made the namespace on first use');
    const image = v.volume_id!.split(':').pop()!;
    assert.deepEqual(await imagesIn(`rbd/${NS}`), [image]);
    assert.deepEqual(await imagesIn('rbd'), [], 'nothing in the default namespace');

    const att = await attach(ca, v, 'node-a', path.join(a.dir, 'data'));
    const [fuse] = fusePids(a.dir, /rbd-fuse$/);
    const argv = readFileSync(`/proc/${fuse}/cmdline`, 'utf8').split('\0');
    assert.deepEqual(argv.slice(argv.indexOf('-p'), argv.indexOf('-r')), ['-p', 'rbd', '-s', NS], 'rbd-fuse serves the namespace');
    assert.ok(!argv.join(' ').includes(nodeKey.userKey!), 'no key in argv');
    const sha = writeRandom(path.join(att.target, 'data.bin'), 8 * MiB);
    const meta = JSON.parse(await lab.rbd(['image-meta', 'list', `rbd/${NS}/${image}`, '--format', 'json'])) as Record<string, string>;
    assert.ok(Object.keys(meta).some((k) => k.startsWith('strata.client.')), 'the node recorded its client with its own key');

    const snap = (await cc.controller.CreateSnapshot({ source_volume_id: v.volume_id!, name: 'ns-snap', secrets: prov }))!.snapshot!;
    assert.match(snap.snapshot_id!, new RegExp(`^s1:s:rbd:lab:rbd:${NS}:csi-snap-[0-9a-f]{32}$`));
    const listed = await cc.controller.ListSnapshots({ source_volume_id: v.volume_id!, secrets: prov });
    assert.deepEqual(listed!.entries!.map((e) => e.snapshot!.snapshot_id), [snap.snapshot_id]);

    const exp = await cc.controller.ControllerExpandVolume({ volume_id: v.volume_id!, capacity_range: { required_bytes: 512 * MiB }, secrets: prov, volume_capability: XFS });
    assert.equal(Number(exp!.capacity_bytes), 512 * MiB);
    const before = statfsSync(att.target);
    await ca.node.NodeExpandVolume({ volume_id: v.volume_id!, volume_path: att.target, staging_target_path: att.staging, volume_capability: XFS });
    const grown = statfsSync(att.target);
    assert.ok(grown.blocks * grown.bsize > before.blocks * before.bsize + 150 * MiB, 'the mounted file system grew');
    await detach(ca, v.volume_id!, 'node-a', att);

    const restored = await create('ns-restored', 300 * MiB, { volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } });
    assert.match(restored.volume_id!, new RegExp(`^s1:v:rbd:lab:rbd:${NS}:`));
    const r = await attach(cb, restored, 'node-b', path.join(b.dir, 'restored'));
    assert.equal(fileSha(path.join(r.target, 'data.bin')), sha, 'the restore holds the snapshot data');
    await detach(cb, restored.volume_id!, 'node-b', r);

    const ids = (await cc.controller.ListVolumes({}))!.entries!.map((e) => e.volume!.volume_id).sort();
    assert.deepEqual(ids, [v.volume_id, restored.volume_id].sort());

    await cc.controller.DeleteVolume({ volume_id: v.volume_id!, secrets: prov });
    await cc.controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id!, secrets: prov });
    await cc.controller.DeleteVolume({ volume_id: restored.volume_id!, secrets: prov });
    assert.deepEqual(await imagesIn(`rbd/${NS}`), []);
    let trash: unknown[] = [];
    for (let i = 0; i < 50; i++) {
      trash = JSON.parse(await lab.rbd(['trash', 'ls', '--all', `rbd/${NS}`, '--format', 'json'])) as unknown[];
      if (!trash.length) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    assert.deepEqual(trash, [], 'trashed images in the namespace are purged');
    t.diagnostic(`ids: ${v.volume_id} / ${snap.snapshot_id}`);
  });

  it('refuses, within seconds and clearly, to stage an image the node key does not reach', async (t) => {
    const elsewhere = [
      await create('default-ns', 300 * MiB, { parameters: { ...PARAMS, radosNamespace: '' } }),
      await create('other-ns', 300 * MiB, { parameters: { ...PARAMS, radosNamespace: 'tenant-b' } }),
    ];
    assert.match(elsewhere[0]!.volume_id!, /^s1:v:rbd:lab:rbd:csi-vol-/);
    assert.match(elsewhere[1]!.volume_id!, /^s1:v:rbd:lab:rbd:tenant-b:csi-vol-/);
    for (const v of elsewhere) {
      const dir = path.join(a.dir, `refused-${v.volume_id!.split(':')[5]}`);
      const t0 = Date.now();
      await assert.rejects(attach(ca, v, 'node-a', dir), (e) => {
        assert.equal(codeOf(e), 'FAILED_PRECONDITION', String(e));
        assert.match(String(e), /client\.strata-node-a is not allowed to reach image rbd\/.*csi-vol-.*caps do not cover that pool or RADOS namespace/);
        return true;
      });
      const ms = Date.now() - t0;
      t.diagnostic(`${v.volume_id}: refused in ${ms} ms`);
      assert.ok(ms < 10_000, `refused after ${ms} ms`);
      assert.deepEqual(fusePids(a.dir, /rbd-fuse$/), [], 'no rbd-fuse was started');
      await cc.controller.ControllerUnpublishVolume({ volume_id: v.volume_id!, node_id: 'node-a', secrets: prov });
      await cc.controller.DeleteVolume({ volume_id: v.volume_id!, secrets: prov });
    }
    assert.deepEqual(await leftovers(a.dir), []);
  });

  it('fences a frozen node in the namespace: its client is blocklisted, the next node writes, the old one writes nothing', async (t) => {
    const v = await create('ns-fence', 300 * MiB);
    const attA = await attach(ca, v, 'node-a', path.join(a.dir, 'frozen'));
    assert.ok(syncWrite(path.join(attA.target, 'a.txt'), 'from node-a, before the failure').ok);
    const [pid] = fusePids(a.dir, /rbd-fuse$/);
    assert.ok(pid, 'node-a rbd-fuse daemon');
    process.kill(pid, 'SIGSTOP');
    let attB: Attached;
    try {
      const image = v.volume_id!.split(':').pop()!;
      const status = JSON.parse(await lab.rbd(['status', `rbd/${NS}/${image}`, '--format', 'json'])) as { watchers?: Array<{ address: string }> };
      const watcher = status.watchers?.[0]?.address;
      assert.ok(watcher, 'node-a watches the image');
      await cc.controller.ControllerUnpublishVolume({ volume_id: v.volume_id!, node_id: 'node-a', secrets: prov });
      assert.ok((await blocklist(lab)).has(watcher), 'node-a client blocklisted');
      attB = await attach(cb, v, 'node-b', path.join(b.dir, 'frozen'));
      assert.ok(syncWrite(path.join(attB.target, 'b.txt'), 'from node-b, after the failover').ok);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    assertFencedWritesRefused(attA.target, (m) => t.diagnostic(m));
    await ca.node.NodeUnpublishVolume({ volume_id: v.volume_id!, target_path: attA.target });
    await ca.node.NodeUnstageVolume({ volume_id: v.volume_id!, staging_target_path: attA.staging });
    await detach(cb, v.volume_id!, 'node-b', attB);
    const check = await attach(cb, v, 'node-b', path.join(b.dir, 'frozen-check'));
    assert.deepEqual(readdirSync(check.target).sort(), ['a.txt', 'b.txt']);
    await detach(cb, v.volume_id!, 'node-b', check);
    await cc.controller.DeleteVolume({ volume_id: v.volume_id!, secrets: prov });
    for (const d of [a, b]) {
      assert.deepEqual(await leftovers(d.dir), []);
      assert.ok(!readFileSync(d.logFile, 'utf8').includes(nodeKey.userKey!), `${d.logFile} holds the node key`);
    }
  });
});
