import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CephLab } from '../test/lab/ceph-lab.js';
import { MiB, mountCap } from '../test/helpers/volumes.js';
import { CEPH_TIMEOUTS } from '../src/ceph/conn.js';
import { DEFAULT_FEATURES } from '../src/backends/rbd/params.js';
import { mkfsCommand } from '../src/mount/mounter.js';
import { run, runAllowFail } from '../src/util/exec.js';
import { ROW_HEADER, compareRow, measure, printRss, processRss } from './stats.js';
import { benchDrivers, unpublishAndUnstage } from './driver.js';
import { CephBaseline } from './ceph-baseline.js';
import { fuseDaemonPid, waitExit } from '../src/mount/fuse-process.js';

/**
 * RBD benchmark: each CSI call against a baseline doing the same work, side by
 * side in one run on one lab, at concurrency 1 and 16; then 100 concurrent
 * CreateVolume calls, and the RSS of the controller and node processes.
 * Prints figures; asserts nothing (targets are in the README).
 *
 * Controller rows are measured against librbd: the same operations in one
 * long-lived process on python3-rbd (ceph-baseline.py), the practical floor.
 * Node rows are measured against the bare commands.
 *   CreateVolume              create; metadata_set (the name record)
 *   ControllerExpandVolume    resize
 *   CreateSnapshot            snap create; clone; snap create; snap rm; metadata_set
 *   CreateVolume from snap    clone; metadata_set
 *   DeleteSnapshot            snap rm; rm
 *   DeleteVolume              rm
 *   NodeStage+Publish         rbd-fuse; losetup; blkid; mkfs.ext4; mount; mount --bind
 *   NodeUnpublish+Unstage     umount x2; losetup -d; umount the FUSE dir; wait for rbd-fuse to exit
 */

const POOL = 'rbd';
const SIZE = 64 * MiB;
const PARAMS = { backend: 'rbd', clusterID: 'lab', pool: POOL, mounter: 'rbd-fuse' };

const lab = await CephLab.start({ components: ['rbd'] });
const drivers = await benchDrivers(lab);
const { ctrl, node, c } = drivers;
const secrets = { userID: 'admin', userKey: lab.adminKey };
const ceph = ['-c', '/dev/null', '-m', lab.monitors.join(','), '--id', 'admin', '--keyfile', lab.adminKeyFile, ...CEPH_TIMEOUTS];
const rbd = (args: string[]) => run('rbd', [...ceph, ...args], { timeoutMs: 60_000 });
const work = path.join(node.dir, 'bench');
const lib = new CephBaseline({ monitors: lab.monitors, id: 'admin', keyFile: lab.adminKeyFile });
await lib.ready;

await sleep(1000);
const pids = { controller: ctrl.child.pid!, node: node.child.pid! };
const idle = processRss(pids);

const cap = mountCap('ext4');

async function round(conc: number, n: number): Promise<void> {
  const ids: string[] = [];
  const snaps: string[] = [];
  const vname = (i: number) => `b${conc}-${i}`;
  const bareImg = (i: number) => `bare-${conc}-${i}`;
  const dirs = (kind: string, i: number) => ({ staging: path.join(work, `${kind}-${conc}-${i}`, 'staging'), target: path.join(work, `${kind}-${conc}-${i}`, 'target'), fuse: path.join(work, `${kind}-${conc}-${i}`, 'fuse') });

  const row = (op: string, driver: (i: number) => Promise<unknown>, bare: (i: number) => Promise<unknown>, kind: 'librbd' | 'cli' = 'librbd') => compareRow(op, conc, n, kind, driver, bare);
  const record = (name: string) => JSON.stringify({ v: 1, name, createdAt: new Date().toISOString() });
  const restores: string[] = [];

  await row(
    'CreateVolume',
    async (i) => {
      const r = await c.controller.CreateVolume({ name: vname(i), capacity_range: { required_bytes: SIZE }, volume_capabilities: [cap], parameters: PARAMS, secrets });
      ids[i] = r!.volume!.volume_id!;
    },
    (i) =>
      lib.run([
        { op: 'create', pool: POOL, image: bareImg(i), size: SIZE, features: DEFAULT_FEATURES },
        { op: 'meta_set', pool: POOL, image: bareImg(i), key: 'strata.volume', value: record(bareImg(i)) },
      ]),
  );

  await row(
    'ControllerExpandVolume',
    (i) => c.controller.ControllerExpandVolume({ volume_id: ids[i]!, capacity_range: { required_bytes: 2 * SIZE }, secrets }),
    (i) => lib.run([{ op: 'resize', pool: POOL, image: bareImg(i), size: 2 * SIZE }]),
  );
  for (const id of ids) await c.controller.ControllerPublishVolume({ volume_id: id, node_id: 'bench-node', volume_capability: cap, secrets });

  await row(
    'NodeStage+NodePublish',
    async (i) => {
      const d = dirs('drv', i);
      mkdirSync(d.staging, { recursive: true });
      await c.node.NodeStageVolume({ volume_id: ids[i]!, staging_target_path: d.staging, volume_capability: cap, secrets, volume_context: { mounter: 'rbd-fuse' } });
      await c.node.NodePublishVolume({ volume_id: ids[i]!, staging_target_path: d.staging, target_path: d.target, volume_capability: cap });
    },
    async (i) => {
      const d = dirs('bare', i);
      mkdirSync(d.fuse, { recursive: true });
      mkdirSync(d.staging, { recursive: true });
      mkdirSync(d.target, { recursive: true });
      await run('rbd-fuse', ['-c', '/dev/null', '-p', POOL, '-r', bareImg(i), d.fuse], { timeoutMs: 60_000, env: { CEPH_ARGS: ceph.slice(2).join(' ') } });
      const dev = (await run('losetup', ['-f', '--show', path.join(d.fuse, bareImg(i))], { timeoutMs: 30_000 })).stdout.trim();
      const probe = await runAllowFail('blkid', ['-p', '-o', 'value', '-s', 'TYPE', dev], { timeoutMs: 30_000 });
      if (!probe.stdout.trim()) {
        const [file, args] = mkfsCommand('ext4', dev);
        await run(file, args, { timeoutMs: 90_000 });
      }
      await run('mount', ['-t', 'ext4', dev, d.staging], { timeoutMs: 30_000 });
      await run('mount', ['--bind', d.staging, d.target], { timeoutMs: 30_000 });
    },
    'cli',
  );

  await row(
    'CreateSnapshot',
    async (i) => {
      const r = await c.controller.CreateSnapshot({ source_volume_id: ids[i]!, name: `s${conc}-${i}`, secrets });
      snaps[i] = r!.snapshot!.snapshot_id!;
    },
    (i) => {
      const snap = `bare-snap-${conc}-${i}`;
      return lib.run([
        { op: 'snap_create', pool: POOL, image: bareImg(i), snap },
        { op: 'clone', pool: POOL, parent: bareImg(i), snap, child: snap, features: ['layering'] },
        { op: 'snap_create', pool: POOL, image: snap, snap: 'csi' },
        { op: 'snap_remove', pool: POOL, image: bareImg(i), snap },
        { op: 'meta_set', pool: POOL, image: snap, key: 'strata.snapshot', value: record(snap) },
      ]);
    },
  );

  await row(
    'CreateVolume from snapshot',
    async (i) => {
      const r = await c.controller.CreateVolume({
        name: `r${conc}-${i}`,
        capacity_range: { required_bytes: 2 * SIZE },
        volume_capabilities: [cap],
        parameters: PARAMS,
        secrets,
        volume_content_source: { snapshot: { snapshot_id: snaps[i]! } },
      });
      restores[i] = r!.volume!.volume_id!;
    },
    (i) =>
      lib.run([
        { op: 'clone', pool: POOL, parent: `bare-snap-${conc}-${i}`, snap: 'csi', child: `bare-restore-${conc}-${i}`, features: DEFAULT_FEATURES },
        { op: 'meta_set', pool: POOL, image: `bare-restore-${conc}-${i}`, key: 'strata.volume', value: record(`bare-restore-${conc}-${i}`) },
      ]),
  );

  await row(
    'NodeUnpublish+NodeUnstage',
    (i) => unpublishAndUnstage(c.node, ids[i]!, dirs('drv', i)),
    async (i) => {
      const d = dirs('bare', i);
      await run('umount', [d.target], { timeoutMs: 30_000 });
      await run('umount', [d.staging], { timeoutMs: 30_000 });
      const dev = (await run('losetup', ['-j', path.join(d.fuse, bareImg(i)), '-O', 'NAME', '-n'], { timeoutMs: 30_000 })).stdout.trim();
      await run('losetup', ['-d', dev], { timeoutMs: 30_000 });
      const pid = fuseDaemonPid('rbd-fuse', d.fuse);
      await run('umount', [d.fuse], { timeoutMs: 30_000 });
      if (pid) await waitExit(pid, 30_000);
    },
    'cli',
  );

  // Restores go first (untimed), so snapshots and volumes have no children, as in a cluster's usual order.
  for (let i = 0; i < n; i++) {
    await c.controller.ControllerUnpublishVolume({ volume_id: ids[i]!, node_id: 'bench-node', secrets });
    await c.controller.DeleteVolume({ volume_id: restores[i]!, secrets });
    await rbd(['rm', '--no-progress', `${POOL}/bare-restore-${conc}-${i}`]);
  }
  await row(
    'DeleteSnapshot',
    (i) => c.controller.DeleteSnapshot({ snapshot_id: snaps[i]!, secrets }),
    (i) =>
      lib.run([
        { op: 'snap_remove', pool: POOL, image: `bare-snap-${conc}-${i}`, snap: 'csi' },
        { op: 'remove', pool: POOL, image: `bare-snap-${conc}-${i}` },
      ]),
  );
  await row(
    'DeleteVolume',
    (i) => c.controller.DeleteVolume({ volume_id: ids[i]!, secrets }),
    (i) => lib.run([{ op: 'remove', pool: POOL, image: bareImg(i) }]),
  );
}

try {
  console.log(`RBD benchmark: Ceph lab on this machine, ${SIZE / MiB} MiB ext4 volumes, rbd-fuse on the node; milliseconds`);
  console.log(ROW_HEADER);
  await round(1, 16);
  await round(16, 32);

  const burst = await measure(100, 100, (i) => c.controller.CreateVolume({ name: `burst-${i}`, capacity_range: { required_bytes: 16 * MiB }, volume_capabilities: [cap], parameters: PARAMS, secrets }));
  console.log(`\n100 concurrent CreateVolume: ${burst.errors} errors, ${(burst.wallMs / 1000).toFixed(1)} s wall, p50 ${burst.p50.toFixed(0)} ms, p99 ${burst.p99.toFixed(0)} ms`);
  const all = (await c.controller.ListVolumes({}))!.entries!.map((e) => e.volume!.volume_id!);
  await measure(all.length, 16, (i) => c.controller.DeleteVolume({ volume_id: all[i]!, secrets }));

  printRss(idle, processRss(pids));
} finally {
  lib.close();
  await drivers.stop();
}
