import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CephLab } from '../test/lab/ceph-lab.js';
import { connect, retryAborted, startDriver, type CsiClients } from '../test/helpers/driver.js';
import { MiB, attach, mountCap } from '../test/helpers/volumes.js';
import { fusePids, imageOf, syncWrite, watchers } from '../test/fence/helpers.js';
import { percentile } from './stats.js';

/**
 * Failover time of a volume whose node fails: node A's FUSE daemon (rbd-fuse,
 * ceph-fuse, s3fs) is frozen (SIGSTOP, as a partitioned node), then the clock runs from
 * the ControllerUnpublish for A (which fences A) to the first write
 * acknowledged (fsync) on node B, through ControllerPublish, NodeStage and
 * NodePublish for B.
 *
 * Baselines, in the same run on the same lab. RBD: what a failover without
 * fencing waits at least, the time until the frozen client's watch times out
 * and the image is free for B's NodeStage (`rbd status` polled every 250 ms).
 * CephFS (ceph-fuse) and S3 (Ceph RGW, a bucket per volume, s3fs): nothing
 * stops an unfenced B, so the baseline is the same move after A detached
 * cleanly (nothing frozen, nothing to fence): what fencing adds to a handover.
 */

const RUNS = Number(process.env.FAILOVER_RUNS ?? 5);
type Kind = 'rbd' | 'cephfs' | 's3';
const KINDS: Record<Kind, { params: Record<string, string>; cap: ReturnType<typeof mountCap>; daemon: RegExp }> = {
  rbd: { params: { backend: 'rbd', clusterID: 'lab', pool: 'rbd' }, cap: mountCap('ext4'), daemon: /rbd-fuse$/ },
  cephfs: { params: { backend: 'cephfs', clusterID: 'lab', fsName: 'cephfs' }, cap: mountCap(''), daemon: /ceph-fuse$/ },
  s3: { params: { backend: 's3', clusterID: 'lab' }, cap: mountCap(''), daemon: /s3fs$/ },
};

const lab = await CephLab.start({ components: ['rbd', 'cephfs', 's3'] });
const config = lab.writeDriverConfig();
const ctrl = await startDriver({ config, mode: 'controller', logLevel: 'warn' });
const nodeA = await startDriver({ config, mode: 'node', nodeId: 'node-a', logLevel: 'warn', args: ['--heal-interval', '0'] });
const nodeB = await startDriver({ config, mode: 'node', nodeId: 'node-b', logLevel: 'warn', args: ['--heal-interval', '0'] });
const cc = connect(ctrl.socket);
const ca: CsiClients = { ...connect(nodeA.socket), controller: cc.controller };
const cb: CsiClients = { ...connect(nodeB.socket), controller: cc.controller };
const secrets = { userID: 'admin', userKey: lab.adminKey };

const create = async (name: string, kind: Kind) =>
  (await cc.controller.CreateVolume({ name, capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [KINDS[kind].cap], parameters: KINDS[kind].params, secrets }))!.volume!;

/** A staged, written volume on node A whose FUSE daemon is then frozen (unless `freeze` is false); returns its id, A's paths and the frozen pid. */
async function failedOnA(name: string, kind: Kind, freeze = true) {
  const vol = await create(name, kind);
  const att = await attach(ca, vol, 'node-a', path.join(nodeA.dir, name), KINDS[kind].cap, secrets);
  if (!syncWrite(path.join(att.target, 'a'), 'a').ok) throw new Error('node-a could not write');
  // rbd-fuse runs in the plugin's state directory; the other daemons mount the staging directory.
  const pid = fusePids(kind === 'rbd' ? path.join(nodeA.stateDir, 'rbd-fuse') : path.join(nodeA.dir, name), KINDS[kind].daemon).find((p) => !frozen.has(p));
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
  // A thawed daemon can still hold its loop device a moment: ABORTED, retried as kubelet would.
  await retryAborted(() => ca.node.NodeUnpublishVolume({ volume_id: v.vol.volume_id!, target_path: v.att.target }));
  await retryAborted(() => ca.node.NodeUnstageVolume({ volume_id: v.vol.volume_id!, staging_target_path: v.att.staging }));
  await cc.controller.ControllerUnpublishVolume({ volume_id: v.vol.volume_id!, node_id: 'node-a', secrets });
  if (onB) {
    await cb.node.NodeUnpublishVolume({ volume_id: v.vol.volume_id!, target_path: onB.target });
    await cb.node.NodeUnstageVolume({ volume_id: v.vol.volume_id!, staging_target_path: onB.staging });
    await cc.controller.ControllerUnpublishVolume({ volume_id: v.vol.volume_id!, node_id: 'node-b', secrets });
  }
  await cc.controller.DeleteVolume({ volume_id: v.vol.volume_id!, secrets });
}

/** ControllerUnpublish of A, then B attaches and writes: [unpublish ms, failover ms]. */
async function moveToB(v: Awaited<ReturnType<typeof failedOnA>>, name: string, kind: Kind): Promise<[number, number, { staging: string; target: string }]> {
  const t0 = performance.now();
  await cc.controller.ControllerUnpublishVolume({ volume_id: v.vol.volume_id!, node_id: 'node-a', secrets });
  const unpublished = performance.now() - t0;
  const onB = await attach(cb, v.vol, 'node-b', path.join(nodeB.dir, name), KINDS[kind].cap, secrets);
  if (!syncWrite(path.join(onB.target, 'b'), 'b').ok) throw new Error('node-b could not write');
  return [unpublished, performance.now() - t0, onB];
}

const failover: number[] = [];
const unpublish: number[] = [];
/** For CephFS and S3: the fenced move, ControllerUnpublish alone, and the same move after a clean detach. */
const moved = { cephfs: { failover: [] as number[], unpublish: [] as number[], clean: [] as number[] }, s3: { failover: [] as number[], unpublish: [] as number[], clean: [] as number[] } };
try {
  for (let i = 0; i < RUNS; i++) {
    const v = await failedOnA(`failover-${i}`, 'rbd');
    const [u, f, onB] = await moveToB(v, `failover-${i}`, 'rbd');
    unpublish.push(u);
    failover.push(f);
    await cleanup(v, onB);
  }
  for (const kind of ['cephfs', 's3'] as const) {
    const m = moved[kind];
    for (let i = 0; i < RUNS; i++) {
      const v = await failedOnA(`${kind}-failover-${i}`, kind);
      const [u, f, onB] = await moveToB(v, `${kind}-failover-${i}`, kind);
      m.unpublish.push(u);
      m.failover.push(f);
      await cleanup(v, onB);
      // Baseline: the same move after A detached cleanly.
      const c = await failedOnA(`${kind}-clean-${i}`, kind, false);
      await ca.node.NodeUnpublishVolume({ volume_id: c.vol.volume_id!, target_path: c.att.target });
      await ca.node.NodeUnstageVolume({ volume_id: c.vol.volume_id!, staging_target_path: c.att.staging });
      const [, clean, onBc] = await moveToB(c, `${kind}-clean-${i}`, kind);
      m.clean.push(clean);
      await cb.node.NodeUnpublishVolume({ volume_id: c.vol.volume_id!, target_path: onBc.target });
      await cb.node.NodeUnstageVolume({ volume_id: c.vol.volume_id!, staging_target_path: onBc.staging });
      await cc.controller.ControllerUnpublishVolume({ volume_id: c.vol.volume_id!, node_id: 'node-b', secrets });
      await cc.controller.DeleteVolume({ volume_id: c.vol.volume_id!, secrets });
    }
  }

  // Baseline: no fence; the image frees itself only when the frozen client's watch times out.
  const v = await failedOnA('failover-baseline', 'rbd');
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
  const headings = {
    cephfs: ['CephFS failover (ceph-fuse, a Ceph user per volume and node)', 'evicts A, removes its user'],
    s3: ['S3 failover (Ceph RGW, a bucket per volume, s3fs)', "removes A's key"],
  } as const;
  for (const kind of ['cephfs', 's3'] as const) {
    const m = moved[kind];
    for (const l of [m.failover, m.unpublish, m.clean]) l.sort((a, b) => a - b);
    const [title, fence] = headings[kind];
    console.log(`${title}: node A's ${KINDS[kind].daemon.source.replace('$', '')} frozen (SIGSTOP); ${RUNS} runs`);
    console.log(`ControllerUnpublish of A (${fence})`.padEnd(55) + ` p50 ${f(percentile(m.unpublish, 50))}  max ${f(m.unpublish.at(-1)!)}`);
    console.log(`ControllerUnpublish of A -> first fsynced write on B   p50 ${f(percentile(m.failover, 50))}  max ${f(m.failover.at(-1)!)}   (target < 10 s)`);
    console.log(`baseline: the same after A detached cleanly            p50 ${f(percentile(m.clean, 50))}  max ${f(m.clean.at(-1)!)}`);
  }
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
