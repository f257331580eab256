import assert from 'node:assert/strict';
import { mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { CsiClients } from '../helpers/driver.js';
import { leftovers } from '../helpers/leftovers.js';
import { getObject, labS3Client, listKeys } from '../helpers/s3.js';
import { MiB, mountCap, type MountMode } from '../helpers/volumes.js';
import type { Volume } from '../../src/csi/gen/csi/v1/Volume.js';
import { runAllowFail } from '../../src/util/exec.js';
import { S3Store } from '../../src/backends/s3/store.js';
import { attachKey, locationOf } from '../../src/backends/s3/layout.js';
import { volumeUser } from '../../src/backends/s3/volume-keys.js';
import { parseId } from '../../src/csi/ids.js';
import { assertFencedWritesRefused, fusePids, s3KeyValid, syncWrite } from './helpers.js';
import { useTwoNodes } from './two-nodes.js';

/**
 * S3 fencing on the lab's RGW with two node plugins and one controller. Each
 * node a volume is published to gets a key of its own that reaches that
 * volume alone (a bucket of its own, or a prefix of a shared bucket), handed
 * over in the publish context; ControllerUnpublish for a node removes it, so
 * whatever the node still runs gets 403. The node plugins' config has no S3
 * keys, and NodeStage gets no secrets: nodes mount with their own key alone.
 * Node A's s3fs is frozen (SIGSTOP) as a partitioned node's.
 */

const PARAMS = { backend: 's3', clusterID: 'lab' };

describe('s3 fencing', { timeout: 600_000 }, () => {
  // The controller has the provisioner's keys; the nodes have none at all.
  const n = useTwoNodes(['s3'], { defaultIdentity: false, rgwAdmin: false });
  let s3: S3Client;
  const secrets = {};

  before(() => {
    s3 = labS3Client(n.lab);
  });

  after(() => {
    s3?.destroy();
  });

  const create = async (name: string, mode: MountMode, params: Record<string, string> = {}) =>
    (await n.cc.controller.CreateVolume({ name, capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [mountCap('', mode)], parameters: { ...PARAMS, ...params }, secrets }))!.volume!;
  const bucketOf = (vol: Volume) => vol.volume_context!.bucket!;
  const publish = async (vol: Volume, node: string, mode: MountMode) =>
    (await n.cc.controller.ControllerPublishVolume({ volume_id: vol.volume_id!, node_id: node, volume_capability: mountCap('', mode), secrets }))!.publish_context!;
  const keyValid = (ctx: Record<string, string>) => s3KeyValid(n.lab, ctx);
  const rgwUserExists = async (vol: Volume) =>
    (await runAllowFail('radosgw-admin', ['-c', n.lab.conf, 'user', 'info', '--uid', volumeUser(locationOf(parseId(vol.volume_id!, 'v')!)!)])).exitCode === 0;

  /** ControllerPublish, NodeStage and NodePublish as kubelet does them, with no node-stage secret. */
  async function attach(c: CsiClients, vol: Volume, node: string, dir: string, mode: MountMode) {
    const staging = path.join(dir, 'staging');
    const target = path.join(dir, 'target');
    mkdirSync(staging, { recursive: true });
    const cap = mountCap('', mode);
    const publish_context = await publish(vol, node, mode);
    const volume_context = vol.volume_context ?? {};
    await c.node.NodeStageVolume({ volume_id: vol.volume_id!, staging_target_path: staging, volume_capability: cap, secrets: {}, publish_context, volume_context });
    await c.node.NodePublishVolume({ volume_id: vol.volume_id!, staging_target_path: staging, target_path: target, volume_capability: cap, volume_context, publish_context });
    return { staging, target, key: publish_context };
  }
  async function detach(c: CsiClients, vol: Volume, node: string, att: { staging: string; target: string }) {
    await c.node.NodeUnpublishVolume({ volume_id: vol.volume_id!, target_path: att.target });
    await c.node.NodeUnstageVolume({ volume_id: vol.volume_id!, staging_target_path: att.staging });
    await n.cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: node, secrets });
  }

  it("a frozen node's key is removed at ControllerUnpublish; the new node writes within seconds; nothing from the old one reaches the bucket", async (t) => {
    const { a, b, cc, ca, cb } = n;
    const RWO: MountMode = 'SINGLE_NODE_WRITER';
    const vol = await create('fence-frozen', RWO);
    const attA = await attach(ca, vol, 'node-a', path.join(a.dir, 'frozen'), RWO);
    assert.match(attA.key.accessKeyID ?? '', /^STRATA[0-9A-F]{32}$/, "node-a got a key of its own");
    assert.deepEqual(await publish(vol, 'node-a', RWO), attA.key, 'a retried ControllerPublish hands over the same key');
    assert.ok(syncWrite(path.join(attA.target, 'a.txt'), 'from node-a, before the failure').ok);
    const [pid] = fusePids(path.join(a.dir, 'frozen'), /s3fs$/);
    assert.ok(pid, 'node-a s3fs');
    process.kill(pid, 'SIGSTOP');
    let attB;
    try {
      const t0 = Date.now();
      await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
      const unpublishMs = Date.now() - t0;
      assert.equal(await keyValid(attA.key), false, "RGW no longer knows node-a's key");
      attB = await attach(cb, vol, 'node-b', path.join(b.dir, 'frozen'), RWO);
      const w = syncWrite(path.join(attB.target, 'b.txt'), 'from node-b, after the failover');
      const failoverMs = Date.now() - t0;
      assert.ok(w.ok, w.detail);
      t.diagnostic(`failover: ControllerUnpublish (key removed) ${unpublishMs} ms; to the first fsynced write on node-b ${failoverMs} ms`);
      assert.ok(failoverMs < 10_000, `failover took ${failoverMs} ms`);
      assert.notEqual(attB.key.accessKeyID, attA.key.accessKeyID);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    assertFencedWritesRefused(attA.target, (m) => t.diagnostic(m));
    // Repeated fencing changes nothing, and node-b keeps its key.
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
    assert.ok(await keyValid(attB.key), "node-b's key stays");

    await n.restartA(path.join(a.dir, 'frozen'), () => fusePids(path.join(a.dir, 'frozen'), /s3fs$/).length === 0);

    // The bucket holds node-a's write from before the failure and node-b's, nothing later from node-a.
    const bucket = bucketOf(vol);
    assert.deepEqual((await listKeys(s3, bucket, 'fs/')).sort(), ['fs/', 'fs/a.txt', 'fs/b.txt']);
    // Objects the nodes wrote with their own keys are readable by the bucket's owner (snapshots, clones).
    assert.equal((await getObject(s3, bucket, 'fs/a.txt')).toString(), 'from node-a, before the failure');
    assert.equal((await getObject(s3, bucket, 'fs/b.txt')).toString(), 'from node-b, after the failover');
    assert.deepEqual(readdirSync(attB.target).sort(), ['a.txt', 'b.txt']);
    await detach(cb, vol, 'node-b', attB);
    await cc.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets });
    assert.equal(await rgwUserExists(vol), false, "the volume's RGW user went with it");
  });

  it('a multi-node volume, a prefix of a shared bucket with rclone: fencing one node leaves the other writing', async () => {
    const { lab, a, b, cc, ca, cb } = n;
    const RWX: MountMode = 'MULTI_NODE_MULTI_WRITER';
    const shared = { bucket: 'fence-team', mounter: 'rclone' };
    const vol = await create('fence-shared', RWX, shared);
    const neighbour = await create('fence-neighbour', RWX, shared);
    const prefixOf = (v: Volume) => v.volume_context!.prefix!;
    const attA = await attach(ca, vol, 'node-a', path.join(a.dir, 'shared'), RWX);
    const attB = await attach(cb, vol, 'node-b', path.join(b.dir, 'shared'), RWX);
    assert.notEqual(attA.key.accessKeyID, attB.key.accessKeyID);
    assert.deepEqual(await publish(vol, 'node-b', RWX), attB.key, 'a retried ControllerPublish hands over the same key');
    assert.ok(syncWrite(path.join(attA.target, 'a'), 'a').ok);
    assert.ok(syncWrite(path.join(attB.target, 'b'), 'b').ok);
    // The node's key reaches its prefix only: not the neighbour's data, nor a listing of the bucket.
    const nodeStore = new S3Store({ endpoint: lab.s3Endpoint, region: 'us-east-1' }, { accessKeyID: attB.key.accessKeyID!, secretAccessKey: attB.key.secretAccessKey! });
    try {
      await s3.send(new PutObjectCommand({ Bucket: 'fence-team', Key: `${prefixOf(neighbour)}secret.json`, Body: Buffer.from('{}') }));
      await assert.rejects(nodeStore.getJson('fence-team', `${prefixOf(neighbour)}secret.json`), /refused/);
      await assert.rejects(nodeStore.put('fence-team', `${prefixOf(neighbour)}planted`, 'x'), /refused/);
      await assert.rejects(nodeStore.put('fence-team', `${prefixOf(vol).replace(/fs\/$/, '')}.strata/attach/forged`, '{}'), /refused/);
      await assert.rejects(nodeStore.list('fence-team', '').next(), /refused/);
      assert.deepEqual((await nodeStore.list('fence-team', prefixOf(vol)).next()).value?.map((o: { key: string }) => o.key).sort(), [prefixOf(vol), `${prefixOf(vol)}a`, `${prefixOf(vol)}b`]);
      assert.deepEqual(await nodeStore.listBuckets(), [], 'the node key owns no bucket');
    } finally {
      nodeStore.destroy();
    }
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets }); // idempotent
    assert.equal(await keyValid(attA.key), false, "RGW no longer knows node-a's key");
    assert.equal(syncWrite(path.join(attA.target, 'a2'), 'a2').ok, false, 'node-a is cut off');
    assert.ok(await keyValid(attB.key), "node-b's key stays");
    assert.ok(syncWrite(path.join(attB.target, 'b2'), 'b2').ok, 'node-b writes on');
    assert.deepEqual((await listKeys(s3, 'fence-team', prefixOf(vol))).sort(), [prefixOf(vol), `${prefixOf(vol)}a`, `${prefixOf(vol)}b`, `${prefixOf(vol)}b2`]);
    assert.equal((await getObject(s3, 'fence-team', `${prefixOf(vol)}b2`)).toString(), 'b2', "the bucket's owner reads what a node wrote");
    // The fenced node's late kubelet calls tear down cleanly.
    await ca.node.NodeUnpublishVolume({ volume_id: vol.volume_id!, target_path: attA.target });
    await ca.node.NodeUnstageVolume({ volume_id: vol.volume_id!, staging_target_path: attA.staging });
    assert.deepEqual(await leftovers(path.join(a.dir, 'shared')), []);
    await detach(cb, vol, 'node-b', attB);
    assert.equal(await keyValid(attB.key), false, "a clean detach removes the node's user too");
    await publish(vol, 'node-a', RWX); // left published: DeleteVolume removes its node user
    await cc.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets });
    await cc.controller.DeleteVolume({ volume_id: neighbour.volume_id!, secrets });
  });

  it('a clean detach fences nothing; keys are new after each detach, reach only their volume, and go with it', async (t) => {
    const { lab, a, b, cc, ca } = n;
    const RWX: MountMode = 'MULTI_NODE_MULTI_WRITER';
    const vol = await create('fence-clean', RWX);
    const other = await create('fence-other', RWX);
    let t0 = Date.now();
    const first = await publish(vol, 'node-b', RWX);
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-b', secrets });
    const baseMs = Date.now() - t0;
    assert.equal(await keyValid(first), false);

    const att = await attach(ca, vol, 'node-a', path.join(a.dir, 'clean'), RWX);
    assert.ok(syncWrite(path.join(att.target, 'f'), 'f').ok);
    // Least privilege: the node's key writes neither Strata's records nor another volume's bucket.
    const nodeStore = new S3Store({ endpoint: lab.s3Endpoint, region: 'us-east-1' }, { accessKeyID: att.key.accessKeyID!, secretAccessKey: att.key.secretAccessKey! });
    try {
      // What the provisioner wrote (a restore's or a clone's data) is the node's to read.
      await s3.send(new PutObjectCommand({ Bucket: bucketOf(vol), Key: 'fs/restored.json', Body: Buffer.from('{"by":"provisioner"}') }));
      assert.deepEqual(await nodeStore.getJson(bucketOf(vol), 'fs/restored.json'), { by: 'provisioner' });
      await assert.rejects(nodeStore.put(bucketOf(vol), '.strata/attach/forged', '{}'), /refused/);
      await assert.rejects(nodeStore.put(bucketOf(other), 'fs/x', 'x'), /refused/);
      assert.deepEqual(await nodeStore.listBuckets(), [], 'the node key owns no bucket');
    } finally {
      nodeStore.destroy();
    }
    await ca.node.NodeUnpublishVolume({ volume_id: vol.volume_id!, target_path: att.target });
    await ca.node.NodeUnstageVolume({ volume_id: vol.volume_id!, staging_target_path: att.staging });
    t0 = Date.now();
    await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
    const cleanMs = Date.now() - t0;
    t.diagnostic(`publish+unpublish baseline ${baseMs} ms; ControllerUnpublish after a clean unstage ${cleanMs} ms`);
    assert.deepEqual(await leftovers(path.join(a.dir, 'clean')), []);

    // A key left without an attachment (its record removed behind the driver's back) goes when another node comes.
    const stale = await publish(vol, 'node-a', RWX);
    assert.notEqual(stale.accessKeyID, att.key.accessKeyID, 'a new publish hands over a new key');
    await s3.send(new DeleteObjectCommand({ Bucket: bucketOf(vol), Key: attachKey(locationOf(parseId(vol.volume_id!, 'v')!)!, 'node-a') }));
    const onB = await publish(vol, 'node-b', RWX);
    assert.equal(await keyValid(stale), false, "the unattached node's key was removed");
    assert.ok(await keyValid(onB));
    await s3.send(new PutObjectCommand({ Bucket: bucketOf(vol), Key: 'fs/by-admin', Body: Buffer.from('x') })); // the provisioner still writes
    // Left published: DeleteVolume removes the user and its keys.
    await cc.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets });
    await cc.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets });
    assert.equal(await keyValid(onB), false);
    assert.equal(await rgwUserExists(vol), false);
    await cc.controller.DeleteVolume({ volume_id: other.volume_id!, secrets });
    const users = (await runAllowFail('radosgw-admin', ['-c', lab.conf, 'user', 'list'])).stdout;
    assert.deepEqual((JSON.parse(users) as string[]).filter((u) => u.startsWith('strata-csi-')), []);
    assert.deepEqual(await leftovers(a.dir), []);
    assert.deepEqual(await leftovers(b.dir), []);
  });
});
