import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CephLab } from '../test/lab/ceph-lab.js';
import { connect, startDriver, type CsiClients } from '../test/helpers/driver.js';
import { MiB, attach, mountCap } from '../test/helpers/volumes.js';
import { fusePids, imageOf, syncWrite, watchers } from '../test/fence/helpers.js';
import { percentile } from './stats.js';

/**
 * Failover time of an RBD volume whose node fails: node A's rbd-fuse is
 * frozen (SIGSTOP, as a partitioned node), then the clock runs from the
 * ControllerUnpublish for A (which fences A's client) to the first write
 * acknowledged (fsync) on node B, through ControllerPublish, NodeStage and
 * NodePublish for B.
 *
 * Baseline, in the same run on the same lab: what a failover without fencing
 * waits at least, the time until the frozen client's watch times out and the
 * image is free for B's NodeStage (`rbd status` polled every 250 ms).
 */

const RUNS = Number(process.env.FAILOVER_RUNS ?? 5);
const PARAMS = { backend: 'rbd', clusterID: 'lab', pool: 'rbd' };
const RWO = mountCap('ext4');

const lab = await CephLab.start({ components: ['rbd'] });
const config = lab.writeDriverConfig();
const ctrl = await startDriver({ config, mode: 'controller', logLevel: 'warn' });
const nodeA = await startDriver({ config, mode: 'node', nodeId: 'node-a', logLevel: 'warn', args: ['--heal-interval', '0'] });
const nodeB = await startDriver({ config, mode: 'node', nodeId: 'node-b', logLevel: 'warn', args: ['--heal-interval', '0'] });
const cc = connect(ctrl.socket);
const ca: CsiClients = { ...connect(nodeA.socket), controller: cc.controller };
const cb: CsiClients = { ...connect(nodeB.socket), controller: cc.controller };
const secrets = { userID: 'admin', userKey: lab.adminKey };

const create = async (name: string) =>
  (await cc.controller.CreateVolume({ name, capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [RWO], parameters: PARAMS, secrets }))!.volume!;

/** A staged, written volume on node A whose rbd-fuse is then frozen; returns its id, A's paths and the frozen pid. */
async function failedOnA(name: string) {
  const vol = await create(name);
  const att = await attach(ca, vol, 'node-a', path.join(nodeA.dir, name), RWO, secrets);
  if (!syncWrite(path.join(att.target, 'a'), 'a').ok) throw new Error('node-a could not write');
  const pid = fusePids(path.join(nodeA.stateDir, 'rbd-fuse'), /rbd-fuse$/).find((p) => !frozen.has(p));
  if (!pid) throw new Error('no rbd-fuse for node-a');
  process.kill(pid, 'SIGSTOP');
  frozen.add(pid);
  return { vol, att, pid };
}
const frozen = new Set<number>();

/** Thaws A's daemon and lets A's late kubelet calls tear down; B detaches; the volume goes. */
async function cleanup(v: Awaited<ReturnType<typeof failedOnA>>, onB?: { staging: string; target: string }) {
  process.kill(v.pid, 'SIGCONT');
  frozen.delete(v.pid);
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

const failover: number[] = [];
const unpublish: number[] = [];
try {
  for (let i = 0; i < RUNS; i++) {
    const v = await failedOnA(`failover-${i}`);
    const t0 = performance.now();
    await cc.controller.ControllerUnpublishVolume({ volume_id: v.vol.volume_id!, node_id: 'node-a', secrets });
    unpublish.push(performance.now() - t0);
    const onB = await attach(cb, v.vol, 'node-b', path.join(nodeB.dir, `failover-${i}`), RWO, secrets);
    if (!syncWrite(path.join(onB.target, 'b'), 'b').ok) throw new Error('node-b could not write');
    failover.push(performance.now() - t0);
    await cleanup(v, onB);
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
