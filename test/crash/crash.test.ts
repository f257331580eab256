import assert from 'node:assert/strict';
import { mkdirSync, statfsSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { CephLab, LAB_S3 } from '../lab/ceph-lab.js';
import { codeOf, type CsiClients } from '../helpers/driver.js';
import { labS3Client } from '../helpers/s3.js';
import { MiB, attach, detach, fileSha, mountCap, writeRandom } from '../helpers/volumes.js';
import { readMountInfo } from '../../src/mount/mountinfo.js';
import type { Volume } from '../../src/csi/gen/csi/v1/Volume.js';
import type { Snapshot } from '../../src/csi/gen/csi/v1/Snapshot.js';
import type { VolumeCapability } from '../../src/csi/gen/csi/v1/VolumeCapability.js';
import { CrashableDriver, formatKill, prng, retry, seedFromEnv, type KillRecord } from './harness.js';
import { clusterState, rbdLeftoverReport, settledState, type ClusterState } from './cluster-state.js';

/**
 * kill -9 of the plugin (controller and node in one process, with the
 * commands it runs) at a random instant inside every mutating RPC of every
 * backend; the plugin is started again on the same state directory and the
 * same request retried as the sidecars and kubelet would, until it answers.
 * The result must be right (sizes, data through snapshot, restore and clone,
 * mounts, grown capacity), and once everything is deleted through the driver
 * the cluster must be as it was. Each kill's instant is uniform in [0, the
 * undisturbed duration of that RPC], measured first on a twin request, from
 * a seeded PRNG (STRATA_CRASH_SEED reproduces a run).
 */

const seed = seedFromEnv();
const rand = prng(seed);
const RWX = mountCap('', 'MULTI_NODE_MULTI_WRITER');
const adminSecrets = (lab: CephLab) => ({ userID: 'admin', userKey: lab.adminKey });
const s3Secrets = { accessKeyID: LAB_S3.accessKeyID, secretAccessKey: LAB_S3.secretAccessKey };
const SHARED_BUCKET = 'crash-shared';

interface BackendCase {
  name: 'rbd' | 'cephfs' | 's3' | 's3-shared';
  params: Record<string, string>;
  cap: VolumeCapability;
  secrets: () => Record<string, string>;
}

const notReady = (what: string) => Object.assign(new Error(`${what} not ready yet`), { code: status.ABORTED });

describe('crash test: kill -9 inside every mutating RPC converges on retry', { timeout: 900_000 }, () => {
  let lab: CephLab;
  let d: CrashableDriver;
  let baseline: ClusterState;
  const kills: KillRecord[] = [];

  before(async () => {
    lab = await CephLab.start({ components: ['rbd', 'cephfs', 's3'] });
    d = new CrashableDriver(lab.writeDriverConfig());
    await d.start();
    // The shared bucket outlives its volumes by design: it is part of the baseline.
    const s3 = labS3Client(lab);
    await s3.send(new CreateBucketCommand({ Bucket: SHARED_BUCKET }));
    s3.destroy();
    baseline = await clusterState(lab, d.dir);
    console.log(`crash test seed ${seed} (STRATA_CRASH_SEED=${seed} repeats these instants)`);
  });

  after(async () => {
    for (const [i, k] of kills.entries()) console.log(formatKill(i + 1, k));
    const inside = kills.filter((k) => k.killedCall !== 'OK').length;
    console.log(`${kills.length} kills (${inside} landed inside the call, ${kills.length - inside} just after it answered), ${d?.restarts ?? 0} restarts, seed ${seed}`);
    await d?.stop();
    await lab?.stop();
  });

  /**
   * Measures `twin` undisturbed, then runs `call`, kills the plugin after a
   * random part of that time, restarts it and retries `call` until it
   * answers. A retry that fails for good is recorded in `failures`; then
   * `undo` (what an operator would do, e.g. unstage) and one more undisturbed
   * retry let the rest of the sequence run, so one run finds every failure.
   */
  async function crash<T>(backend: string, rpc: string, twin: (c: CsiClients) => Promise<unknown>, call: (c: CsiClients) => Promise<T>, failures: string[], undo?: (c: CsiClients) => Promise<unknown>): Promise<T> {
    let undisturbed = -1;
    await retry(async () => {
      const t = Date.now();
      try {
        return await twin(d.c);
      } finally {
        if (undisturbed < 0) undisturbed = Date.now() - t;
      }
    });
    const delay = Math.floor(rand() * undisturbed);
    let killedCall: string | undefined;
    const inflight = call(d.c).then(
      () => (killedCall ??= 'OK'),
      (e) => (killedCall ??= codeOf(e)),
    );
    await sleep(delay);
    const answeredBefore = killedCall;
    await d.killAndRestart();
    await Promise.race([inflight, sleep(5000)]);
    const t0 = Date.now();
    const k: KillRecord = { backend, rpc, delayMs: delay, undisturbedMs: undisturbed, killedCall: answeredBefore ?? 'killed', retries: 0, convergeMs: 0 };
    kills.push(k);
    try {
      const r = await retry(() => call(d.c));
      k.retries = r.retries;
      k.convergeMs = Date.now() - t0;
      console.log(formatKill(kills.length, k));
      return r.value;
    } catch (e) {
      k.killedCall += ' FAILED';
      const msg = `${formatKill(kills.length, k)}\n    retry failed for good: ${(e as Error).message}`;
      console.log(msg);
      failures.push(msg);
      if (undo) await retry(() => undo(d.c));
      return (await retry(() => call(d.c))).value;
    }
  }

  const mounted = async (p: string) => (await readMountInfo()).some((m) => m.mountPoint === p);

  const BACKENDS: BackendCase[] = [
    { name: 'rbd', params: { backend: 'rbd', clusterID: 'lab', pool: 'rbd' }, cap: mountCap(), secrets: () => adminSecrets(lab) },
    { name: 'cephfs', params: { backend: 'cephfs', clusterID: 'lab', fsName: 'cephfs' }, cap: RWX, secrets: () => adminSecrets(lab) },
    { name: 's3', params: { backend: 's3', clusterID: 'lab', mounter: 's3fs' }, cap: RWX, secrets: () => s3Secrets },
    // Prefixes of a shared bucket: on RGW each node gets a user of its own, which must not outlive its volume.
    { name: 's3-shared', params: { backend: 's3', clusterID: 'lab', mounter: 's3fs', bucket: SHARED_BUCKET }, cap: RWX, secrets: () => s3Secrets },
  ];
  // Two rounds: each RPC of each backend is killed twice, at two independent instants.
  for (const round of [1, 2]) for (const b of BACKENDS) {
    it(`${b.name}, round ${round}: all ten mutating RPCs, killed at random instants, converge to the right result`, async () => {
      const failures: string[] = [];
      const secrets = b.secrets();
      const SIZE = 32 * MiB;
      const GROWN = 64 * MiB;
      const work = path.join(d.dir, `${b.name}-${round}`);
      const kill = <T>(rpc: string, twin: (c: CsiClients) => Promise<unknown>, call: (c: CsiClients) => Promise<T>, undo?: (c: CsiClients) => Promise<unknown>) => crash(b.name, rpc, twin, call, failures, undo);
      // What exists, so a run that fails halfway still deletes it all through the driver.
      const volumes: Volume[] = [];
      const snapshots: Snapshot[] = [];
      const staged: Array<{ v: Volume; who: string }> = [];
      const staging = (who: string) => path.join(work, who, 'staging');
      const target = (who: string) => path.join(work, who, 'target');
      const createVol = (name: string, extra: Record<string, unknown> = {}) => async (c: CsiClients) => {
        const v = (await c.controller.CreateVolume({ name: `${b.name}-${round}-${name}`, capacity_range: { required_bytes: SIZE }, volume_capabilities: [b.cap], parameters: b.params, secrets, ...extra }))!.volume! as Volume;
        if (!volumes.some((x) => x.volume_id === v.volume_id)) volumes.push(v);
        return v;
      };
      const made = async (name: string, extra: Record<string, unknown> = {}) => (await retry(() => createVol(name, extra)(d.c))).value;
      const getVol = async (id: string) => (await retry(() => d.c.controller.ControllerGetVolume({ volume_id: id }))).value!;
      const healthy = async (id: string) => {
        const s = (await getVol(id)).status?.volume_condition;
        assert.equal(s?.abnormal, false, `volume ${id} is healthy: ${s?.message}`);
      };
      const deleteVol = (v: Volume) => (c: CsiClients) => c.controller.DeleteVolume({ volume_id: v.volume_id!, secrets });
      const deleteSnap = (s: Snapshot) => (c: CsiClients) => c.controller.DeleteSnapshot({ snapshot_id: s.snapshot_id!, secrets });
      const teardown = async () => {
        for (const { v, who } of staged.splice(0)) {
          await retry(() => d.c.node.NodeUnpublishVolume({ volume_id: v.volume_id!, target_path: target(who) }));
          await retry(() => d.c.node.NodeUnstageVolume({ volume_id: v.volume_id!, staging_target_path: staging(who) }));
          await retry(() => d.c.controller.ControllerUnpublishVolume({ volume_id: v.volume_id!, node_id: d.nodeId, secrets }));
        }
        for (const s of snapshots.splice(0)) await retry(() => deleteSnap(s)(d.c));
        for (const v of volumes.splice(0).reverse()) await retry(() => deleteVol(v)(d.c));
      };

      try {
        // 1. CreateVolume, blank.
        const cvol = await kill('CreateVolume', createVol('m-vol'), createVol('c-vol'));
        const mvol = await made('m-vol');
        assert.equal(Number(cvol.capacity_bytes), SIZE);
        assert.equal((await made('c-vol')).volume_id, cvol.volume_id, 'a retry after convergence answers the same volume');
        await healthy(cvol.volume_id!);

        // 2. ControllerPublishVolume.
        const publish = (v: Volume) => async (c: CsiClients) =>
          (await c.controller.ControllerPublishVolume({ volume_id: v.volume_id!, node_id: d.nodeId, volume_capability: b.cap, readonly: false, secrets, volume_context: v.volume_context ?? {} }))!;
        staged.push({ v: mvol, who: 'm' }, { v: cvol, who: 'c' });
        await kill('ControllerPublishVolume', publish(mvol), publish(cvol));
        assert.deepEqual((await getVol(cvol.volume_id!)).status?.published_node_ids, [d.nodeId]);
        // The publish context as the attacher keeps it: from the answer of an idempotent call.
        const mctx = (await retry(() => publish(mvol)(d.c))).value.publish_context ?? {};
        const cctx = (await retry(() => publish(cvol)(d.c))).value.publish_context ?? {};

        // 3. NodeStageVolume; a stage that cannot converge is unstaged (as an operator would) and staged again.
        mkdirSync(staging('m'), { recursive: true });
        mkdirSync(staging('c'), { recursive: true });
        const stage = (v: Volume, who: string, pc: Record<string, string>) => (c: CsiClients) =>
          c.node.NodeStageVolume({ volume_id: v.volume_id!, staging_target_path: staging(who), volume_capability: b.cap, secrets, publish_context: pc, volume_context: v.volume_context ?? {} });
        await kill('NodeStageVolume', stage(mvol, 'm', mctx), stage(cvol, 'c', cctx), (c) => c.node.NodeUnstageVolume({ volume_id: cvol.volume_id!, staging_target_path: staging('c') }));
        assert.ok(await mounted(staging('c')), 'the staging path is a mount');

        // 4. NodePublishVolume, then data into the volume.
        const nodePublish = (v: Volume, who: string, pc: Record<string, string>) => (c: CsiClients) =>
          c.node.NodePublishVolume({ volume_id: v.volume_id!, staging_target_path: staging(who), target_path: target(who), volume_capability: b.cap, readonly: false, publish_context: pc, volume_context: v.volume_context ?? {} });
        await kill('NodePublishVolume', nodePublish(mvol, 'm', mctx), nodePublish(cvol, 'c', cctx));
        assert.ok(await mounted(target('c')), 'the target path is a mount');
        const sha = writeRandom(path.join(target('c'), 'data.bin'), 4 * MiB);
        assert.equal(fileSha(path.join(target('c'), 'data.bin')), sha);

        // 5. CreateSnapshot, polled until ready as the snapshotter does.
        const snapshot = (name: string) => async (c: CsiClients) => {
          const s = (await c.controller.CreateSnapshot({ source_volume_id: cvol.volume_id!, name: `${b.name}-${round}-${name}`, secrets }))!.snapshot! as Snapshot;
          if (!snapshots.some((x) => x.snapshot_id === s.snapshot_id)) snapshots.push(s);
          if (!s.ready_to_use) throw notReady(`snapshot ${name}`);
          return s;
        };
        const csnap = await kill('CreateSnapshot', snapshot('m-snap'), snapshot('c-snap'));
        const msnap = (await retry(() => snapshot('m-snap')(d.c))).value;
        assert.equal(csnap.source_volume_id, cvol.volume_id);
        assert.equal(Number(csnap.size_bytes), SIZE);
        assert.equal((await retry(() => snapshot('c-snap')(d.c))).value.snapshot_id, csnap.snapshot_id);

        // 6 and 7. Restore and clone: the data written before the snapshot reads back the same.
        const readBack = async (v: Volume, who: string) => {
          const att = await attach(d.c, v, d.nodeId, path.join(work, who), b.cap, secrets);
          try {
            assert.equal(fileSha(path.join(att.target, 'data.bin')), sha, `${who}: the data written before the snapshot reads back the same`);
          } finally {
            await detach(d.c, v.volume_id!, d.nodeId, att, secrets);
          }
        };
        const fromSnap = { volume_content_source: { snapshot: { snapshot_id: csnap.snapshot_id! } } };
        const crestore = await kill('CreateVolume from snapshot', createVol('m-restore', fromSnap), createVol('c-restore', fromSnap));
        const mrestore = await made('m-restore', fromSnap);
        assert.equal(Number(crestore.capacity_bytes), SIZE);
        await healthy(crestore.volume_id!);
        await readBack(crestore, 'restore-check');

        const fromVol = { volume_content_source: { volume: { volume_id: cvol.volume_id! } } };
        const cclone = await kill('CreateVolume clone', createVol('m-clone', fromVol), createVol('c-clone', fromVol));
        await made('m-clone', fromVol);
        assert.equal(Number(cclone.capacity_bytes), SIZE);
        await healthy(cclone.volume_id!);
        await readBack(cclone, 'clone-check');

        // 8. ControllerExpandVolume.
        const expand = (v: Volume) => async (c: CsiClients) =>
          (await c.controller.ControllerExpandVolume({ volume_id: v.volume_id!, capacity_range: { required_bytes: GROWN }, secrets, volume_capability: b.cap }))!;
        const exp = await kill('ControllerExpandVolume', expand(mvol), expand(cvol));
        assert.equal(Number(exp.capacity_bytes), GROWN);
        assert.equal(Number((await getVol(cvol.volume_id!)).volume?.capacity_bytes), GROWN, 'ControllerGetVolume reports the grown size');
        const [, , , , pool, image] = cvol.volume_id!.split(':');
        if (b.name === 'rbd') assert.equal(JSON.parse(await lab.rbd(['info', `${pool}/${image}`, '--format', 'json'])).size, GROWN, 'the image grew');
        if (b.name === 'cephfs') {
          // The quota is the size a pod sees in df; ceph-fuse picks it up within seconds.
          let seen = 0;
          for (let i = 0; i < 40 && seen !== GROWN; i++, await sleep(250)) seen = statfsSync(target('c')).blocks * statfsSync(target('c')).bsize;
          assert.equal(seen, GROWN, 'the mounted volume shows the grown quota');
        }

        // 9. DeleteSnapshot.
        await kill('DeleteSnapshot', deleteSnap(msnap), deleteSnap(csnap));
        assert.equal((await retry(() => d.c.controller.ListSnapshots({ snapshot_id: csnap.snapshot_id! }))).value!.entries!.length, 0, 'the snapshot is gone');
        // The restore no longer needs its snapshot.
        await readBack(crestore, 'restore-after-snapshot-delete');

        // 10. DeleteVolume.
        await kill('DeleteVolume', deleteVol(mrestore), deleteVol(crestore));
        await assert.rejects(d.c.controller.ControllerGetVolume({ volume_id: crestore.volume_id! }), (e) => codeOf(e) === 'NOT_FOUND');
      } finally {
        // Everything else goes through the driver as kubelet, the attacher and the provisioner would remove it.
        await teardown();
      }
      assert.deepEqual(failures, [], 'every killed RPC converged on retry');
    });
  }

  it('case 5: kill -9 during RBD CreateVolume never leaves an image that answers INTERNAL (Unexpected end of JSON input)', async () => {
    const secrets = adminSecrets(lab);
    const req = (name: string) => ({ name, capacity_range: { required_bytes: 16 * MiB }, volume_capabilities: [mountCap()], parameters: { backend: 'rbd', clusterID: 'lab', pool: 'rbd' }, secrets });
    const ids: string[] = [];
    const failures: string[] = [];
    for (let i = 0; i < 8; i++) {
      const v = (await crash('rbd', 'CreateVolume (case 5)', (c) => c.controller.CreateVolume(req(`case5-twin-${i}`)), (c) => c.controller.CreateVolume(req(`case5-${i}`)), failures))!.volume!;
      assert.equal(Number(v.capacity_bytes), 16 * MiB);
      const st = (await retry(() => d.c.controller.ControllerGetVolume({ volume_id: v.volume_id! }))).value!.status!;
      assert.equal(st.volume_condition?.abnormal, false, st.volume_condition?.message);
      ids.push(v.volume_id!);
      const twin = (await retry(() => d.c.controller.CreateVolume(req(`case5-twin-${i}`)))).value!.volume!;
      ids.push(twin.volume_id!);
    }
    for (const id of ids) await retry(() => d.c.controller.DeleteVolume({ volume_id: id, secrets }));
    assert.deepEqual(failures, [], 'every killed CreateVolume converged on retry');
  });

  it('leaves the cluster as it was once everything is deleted through the driver', async () => {
    assert.ok(kills.length >= 30, `at least 30 kills (${kills.length})`);
    for (const b of ['rbd', 'cephfs', 's3', 's3-shared']) assert.ok(kills.filter((k) => k.backend === b).length >= 10, `at least 10 kills on ${b}`);
    // Long enough for the RBD trash purge to retry past a killed command's 30 s watch.
    const settled = await settledState(lab, d.dir, baseline, 100_000);
    if (settled.rbdImages.length) console.log(`# images left:\n${(await rbdLeftoverReport(lab, settled.rbdImages)).replace(/^/gm, '#   ')}`);
    assert.deepEqual(settled, baseline);
  });
});
