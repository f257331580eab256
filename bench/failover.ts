import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CephLab } from '../test/lab/ceph-lab.js';
import { connect, startDriver, type CsiClients } from '../test/helpers/driver.js';
import { MiB, attach, mountCap } from '../test/helpers/volumes.js';
import { fusePids, imageOf, syncWrite, watchers } from '../test/fence/helpers.js';
import { percentile } from './stats.js';

/**
 * Failover time of a volume whose node fails: node A's FUSE daemon (rbd-fuse,
 * s3fs) is frozen (SIGSTOP, as a partitioned node), then the clock runs from
 * the ControllerUnpublish for A (which fences A) to the first write
 * acknowledged (fsync) on node B, through ControllerPublish, NodeStage and
 * NodePublish for B.
 *
 * Baselines, in the same run on the same lab. RBD: what a failover without
 * fencing waits at least, the time until the frozen client's watch times out
 * and the image is free for B's NodeStage (`rbd status` polled every 250 ms).
 * S3 (Ceph RGW, a bucket per volume, s3fs): nothing stops an unfenced B, so
 * the baseline is the same move after A detached cleanly (A's key removed,
 * nothing frozen): what fencing adds to a handover.
 */

const RUNS = Number(process.env.FAILOVER_RUNS ?? 5);
const PARAMS = { backend: 'rbd', clusterID: 'lab', pool: 'rbd' };
const S3_PARAMS = { backend: 's3', clusterID: 'lab' };
const RWO = mountCap('ext4');
const S3_RWO = mountCap('');

const lab = await CephLab.start({ components: ['rbd', 's3'] });
const config = lab.writeDriverConfig();
const ctrl = await startDriver({ config, mode: 'controller', logLevel: 'warn' });
const nodeA = await startDriver({ config, mode: 'node', nodeId: 'node-a', logLevel: 'warn', args: ['--heal-interval', '0'] });
const nodeB = await startDriver({ config, mode: 'node', nodeId: 'node-b', logLevel: 'warn', args: ['--heal-interval', '0'] });
const cc = connect(ctrl.socket);
const ca: CsiClients = { ...connect(nodeA.socket), controller: cc.controller };
const cb: CsiClients = { ...connect(nodeB.socket), controller: cc.controller };
const secrets = { userID: 'admin', userKey: lab.adminKey };

const create = async (name: string, s3 = false) =>
  (await cc.controller.CreateVolume({ name, capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [s3 ? S3_RWO : RWO], parameters: s3 ? S3_PARAMS : PARAMS, secrets }))!.volume!;

/** A staged, written volume on node A whose FUSE daemon is then frozen (unless `freeze` is false); returns its id, A's paths and the frozen pid. */
async function failedOnA(name: string, s3 = false, freeze = true) {
  const vol = await create(name, s3);
  const att = await attach(ca, vol, 'node-a', path.join(nodeA.dir, name), s3 ? S3_RWO : RWO, secrets);
  if (!syncWrite(path.join(att.target, 'a'), 'a').ok) throw new Error('node-a could not write');
  const pid = (s3 ? fusePids(path.join(nodeA.dir, name), /s3fs$/) : fusePids(path.join(nodeA.stateDir, 'rbd-fuse'), /rbd-fuse$/)).find((p) => !frozen.has(p));
  if (!pid) throw new Error(`no FUSE daemon for node-a's ${name}`);
  if (freeze) {
    process.kill(pid, 'SIGSTOP');
    frozen.add(pid);
  }
  return { vol, att, pid };
}
const frozen = new Set<number>();

/** Thaws A's daemon and lets A's late kubelet calls tear down; B detaches; the volume goes. */
async function cleanup(v: Awaited<ReturnType<typeof failedOnA>>, onB?: { staging: string; target: string }) {
  if (frozen.delete(v.pid)) process.kill(v.pid, 'SIGCONT');
  await ca.node.NodeUnpublishVolume({ volume_id: v.vol.volume_id!, target_path: v.att.target });
  await ca.node.NodeUnstageVolume({ volume_id: v.vol.volume_id!, staging_target_path: v.att.staging });
  await cc.controller.ControllerUnpublishVolume({ volume_id: v.vol.volume_id!, node_id: 'node-a', secrets });
  if (onB) {
    await cb.node.NodeUnpublishVolume({ volume_id: v.vol.volume_id!, target_path: onB.target });
    await cb.node.NodeUnstageVolume({ volume_id: v.vol.volume_id!, staging_target_path: onB.staging });
    await cc.controller.ControllerUnpublishVolume({ volume_id: v.vol.volume_id!, node_id: 'node-b', secrets });
  }
  await cc.controller.DeleteVolume({ volume_id: v.vol.volume_id!, secrets });
}

/** ControllerUnpublish of A, then B attaches and writes: [unpublish ms, failover ms]. */
async function moveToB(v: Awaited<ReturnType<typeof failedOnA>>, name: string, s3: boolean): Promise<[number, number, { staging: string; target: string }]> {
  const t0 = performance.now();
  await cc.controller.ControllerUnpublishVolume({ volume_id: v.vol.volume_id!, node_id: 'node-a', secrets });
  const unpublished = performance.now() - t0;
  const onB = await attach(cb, v.vol, 'node-b', path.join(nodeB.dir, name), s3 ? S3_RWO : RWO, secrets);
  if (!syncWrite(path.join(onB.target, 'b'), 'b').ok) throw new Error('node-b could not write');
  return [unpublished, performance.now() - t0, onB];
}

const failover: number[] = [];
const unpublish: number[] = [];
const s3Failover: number[] = [];
const s3Unpublish: number[] = [];
const s3Clean: number[] = [];
try {
  for (let i = 0; i < RUNS; i++) {
    const v = await failedOnA(`failover-${i}`);
    const [u, f, onB] = await moveToB(v, `failover-${i}`, false);
    unpublish.push(u);
    failover.push(f);
    await cleanup(v, onB);
  }
  for (let i = 0; i < RUNS; i++) {
    const v = await failedOnA(`s3-failover-${i}`, true);
    const [u, f, onB] = await moveToB(v, `s3-failover-${i}`, true);
    s3Unpublish.push(u);
    s3Failover.push(f);
    await cleanup(v, onB);
    // Baseline: the same move after A detached cleanly.
    const c = await failedOnA(`s3-clean-${i}`, true, false);
    await ca.node.NodeUnpublishVolume({ volume_id: c.vol.volume_id!, target_path: c.att.target });
    await ca.node.NodeUnstageVolume({ volume_id: c.vol.volume_id!, staging_target_path: c.att.staging });
    const [, clean, onBc] = await moveToB(c, `s3-clean-${i}`, true);
    s3Clean.push(clean);
    await cb.node.NodeUnpublishVolume({ volume_id: c.vol.volume_id!, target_path: onBc.target });
    await cb.node.NodeUnstageVolume({ volume_id: c.vol.volume_id!, staging_target_path: onBc.staging });
    await cc.controller.ControllerUnpublishVolume({ volume_id: c.vol.volume_id!, node_id: 'node-b', secrets });
    await cc.controller.DeleteVolume({ volume_id: c.vol.volume_id!, secrets });
  }

  // Baseline: no fence; the image frees itself only when the frozen client's watch times out.
  const v = await failedOnA('failover-baseline');
  const t0 = performance.now();
  while ((await watchers(lab, imageOf(v.vol.volume_id!))).length) await sleep(250);
  const watchTimeout = performance.now() - t0;
  await cleanup(v);

  failover.sort((a, b) => a - b);
  unpublish.sort((a, b) => a - b);
  const f = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  console.log(`RBD failover: node A's rbd-fuse frozen (SIGSTOP); ${RUNS} runs on a Ceph lab on this machine`);
  console.log(`ControllerUnpublish of A (fences A)                     p50 ${f(percentile(unpublish, 50))}  max ${f(unpublish.at(-1)!)}`);
  console.log(`ControllerUnpublish of A -> first fsynced write on B   p50 ${f(percentile(failover, 50))}  max ${f(failover.at(-1)!)}   (target < 10 s)`);
  console.log(`baseline: A's watch to time out (unfenced, B waits)     ${f(watchTimeout)}`);
  for (const l of [s3Failover, s3Unpublish, s3Clean]) l.sort((a, b) => a - b);
  console.log(`S3 failover (Ceph RGW, a bucket per volume, s3fs): node A's s3fs frozen (SIGSTOP); ${RUNS} runs`);
  console.log(`ControllerUnpublish of A (removes A's key)             p50 ${f(percentile(s3Unpublish, 50))}  max ${f(s3Unpublish.at(-1)!)}`);
  console.log(`ControllerUnpublish of A -> first fsynced write on B   p50 ${f(percentile(s3Failover, 50))}  max ${f(s3Failover.at(-1)!)}   (target < 10 s)`);
  console.log(`baseline: the same after A detached cleanly            p50 ${f(percentile(s3Clean, 50))}  max ${f(s3Clean.at(-1)!)}`);
} finally {
  for (const p of frozen) process.kill(p, 'SIGCONT');
  cc.close();
  ca.close();
  cb.close();
  await nodeA.stop();
  await nodeB.stop();
  await ctrl.stop();
  await lab.stop();
}
