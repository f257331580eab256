import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pLimit from 'p-limit';
import { CephLab } from '../test/lab/ceph-lab.js';
import { codeOf } from '../test/helpers/driver.js';
import { MiB, mountCap } from '../test/helpers/volumes.js';
import { CEPH_TIMEOUTS } from '../src/ceph/conn.js';
import { run } from '../src/util/exec.js';
import { fuseDaemonPid, waitExit } from '../src/mount/fuse-process.js';
import { ROW_HEADER, compareRow, measure, measurePair, printRss, processRss, type Sample } from './stats.js';
import { benchDrivers, unpublishAndUnstage } from './driver.js';
import { CephBaseline, type BaselineStep } from './ceph-baseline.js';

/**
 * CephFS benchmark: each CSI call against a baseline doing the same Ceph work,
 * side by side in one run on one lab, at concurrency 1 and 16; then 100
 * concurrent CreateVolume calls, CreateSnapshot with 10 and with 200 volumes
 * present, and the RSS of the controller and node processes. Prints figures;
 * asserts nothing (targets are in the README).
 *
 * Controller rows are measured against librados: the same mon and mgr
 * commands the driver's controller sends for the call (src/backends/cephfs/
 * controller.ts, first-time path), in order, sent from one long-lived
 * python3-rados process (ceph-baseline.py), the practical floor. "sv X" is
 * `fs subvolume X`; (ENOENT) marks a lookup whose miss is the answer. The
 * baseline sends them one after the other; the driver sends independent
 * ones side by side (CreateSnapshot's first three
 * reads, DeleteSnapshot's steps after the snapshot rm, DeleteVolume's three
 * lookups).
 *   CreateVolume            sv getpath (ENOENT); sv create --size --namespace-isolated; sv metadata set
 *   ControllerExpandVolume  sv info; sv resize --no-shrink
 *   CreateSnapshot          sv snapshot metadata ls (ENOENT); sv info; config-key get (ENOENT); config-key set;
 *                           sv snapshot create; sv snapshot metadata set
 *   Restore until ready     sv getpath (ENOENT); sv snapshot metadata ls; sv snapshot clone; sv info (EAGAIN);
 *                           clone status every 250 ms until complete; sv info; sv metadata ls; sv metadata set
 *   Clone until ready       sv getpath (ENOENT); sv info; sv snapshot create; sv snapshot clone; sv info (EAGAIN);
 *                           clone status until complete; sv info; sv metadata ls; sv snapshot rm; sv metadata set
 *   DeleteSnapshot          sv snapshot rm; config-key rm; config-key get; config-key rm; sv info
 *   DeleteVolume            sv info; sv authorized_list; auth get-key (ENOENT); sv snapshot ls; sv rm
 * Node rows are measured against the bare commands:
 *   NodeStage+Publish       ceph-fuse -r <path> as the subvolume's own user; mount --bind (the driver gets
 *                           the path and key from the publish context, made untimed by ControllerPublish)
 *   NodeUnpublish+Unstage   umount x2; wait for ceph-fuse to exit
 */

const FS = 'cephfs';
const GROUP = 'csi';
const SIZE = 64 * MiB;
const ENOENT = 2;
const EAGAIN = 11;
const PARAMS = { backend: 'cephfs', clusterID: 'lab', fsName: FS };
const cap = mountCap('', 'MULTI_NODE_MULTI_WRITER');

const lab = await CephLab.start({ components: ['cephfs'] });
const drivers = await benchDrivers(lab);
const { ctrl, node, c } = drivers;
const secrets = { userID: 'admin', userKey: lab.adminKey };
const conn = ['-c', '/dev/null', '-m', lab.monitors.join(','), '--id', 'admin', '--keyfile', lab.adminKeyFile, ...CEPH_TIMEOUTS];
const ceph = async (args: string[]) => (await run('ceph', [...conn, ...args], { timeoutMs: 60_000 })).stdout;
const work = path.join(node.dir, 'bench');
const lib = new CephBaseline({ monitors: lab.monitors, id: 'admin', keyFile: lab.adminKeyFile });
await lib.ready;

// The driver's commands, as src/backends/cephfs/fs-cli.ts words them.
const sv = (verb: string, name: string, args: Record<string, unknown> = {}) => ({ format: 'json', prefix: `fs subvolume ${verb}`, vol_name: FS, group_name: GROUP, sub_name: name, ...args });
const mgr = (cmd: Record<string, unknown>, ...allow: number[]): BaselineStep => (allow.length ? { op: 'mgr', cmd, allow } : { op: 'mgr', cmd });
const mon = (cmd: Record<string, unknown>, ...allow: number[]): BaselineStep => (allow.length ? { op: 'mon', cmd, allow } : { op: 'mon', cmd });
const configKey = (verb: 'get' | 'set' | 'rm', key: string, val?: string) => ({ format: verb === 'get' ? 'plain' : 'json', prefix: `config-key ${verb}`, key, ...(val === undefined ? {} : { val }) });
const record = (name: string) => JSON.stringify({ v: 1, name, createdAt: new Date().toISOString() });
const retainedKey = (name: string, snap: string) => `strata/cephfs/${FS}/${GROUP}/${name}/${snap}`;
const claimKey = (snap: string) => `strata/cephfs/snapshot-names/${snap}`;

/** CreateSnapshot's commands: `claim` names the snapshot in the name-claim key and its record. */
const snapshotSteps = (vol: string, snap: string, claim: string): BaselineStep[] => [
  mgr(sv('snapshot metadata ls', vol, { snap_name: snap }), ENOENT),
  mgr(sv('info', vol)),
  mon(configKey('get', claimKey(claim)), ENOENT),
  mon(configKey('set', claimKey(claim), `s1:s:cephfs:lab:${claim}`)),
  mgr(sv('snapshot create', vol, { snap_name: snap })),
  mgr(sv('snapshot metadata set', vol, { snap_name: snap, key_name: 'strata.snapshot', value: record(claim) })),
];

const createSteps = (name: string, size = SIZE): BaselineStep[] => [
  mgr(sv('getpath', name), ENOENT),
  mgr(sv('create', name, { size, namespace_isolated: true })),
  mgr(sv('metadata set', name, { key_name: 'strata.volume', value: record(name) })),
];

const deleteSteps = (name: string): BaselineStep[] => [
  mgr(sv('info', name)),
  mgr(sv('authorized_list', name)),
  mon({ format: 'plain', prefix: 'auth get-key', entity: `client.strata-${name}` }, ENOENT),
  mgr(sv('snapshot ls', name)),
  mgr(sv('rm', name, { retain_snapshots: false, force: false })),
];

/**
 * As the provisioner does: ABORTED (a clone still running, the volume busy), DEADLINE_EXCEEDED
 * (the driver's 45 s command timeout, with the mgr's queue long) and UNAVAILABLE are called again.
 */
async function untilReady<T>(fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (!['ABORTED', 'DEADLINE_EXCEEDED', 'UNAVAILABLE'].includes(codeOf(e))) throw e;
      await sleep(250);
    }
  }
}

await sleep(1000);
const pids = { controller: ctrl.child.pid!, node: node.child.pid! };
const idle = processRss(pids);

async function round(conc: number, n: number, clones: number): Promise<void> {
  const ids: string[] = [];
  const pubs: Array<Record<string, string>> = [];
  const snaps: string[] = [];
  const restored: string[] = [];
  const cloned: string[] = [];
  const vname = (i: number) => `b${conc}-${i}`;
  const bare = (i: number) => `bare-${conc}-${i}`;
  const bareSnap = (i: number) => `bare-snap-${conc}-${i}`;
  const bareKeyFile = (i: number) => path.join(work, `${bare(i)}.key`);
  const dirs = (kind: string, i: number) => ({ staging: path.join(work, `${kind}-${conc}-${i}`, 'staging'), target: path.join(work, `${kind}-${conc}-${i}`, 'target') });
  const row = (op: string, driver: (i: number) => Promise<unknown>, baseline: (i: number) => Promise<unknown>, kind: 'librados' | 'cli' = 'librados', count = n) => compareRow(op, conc, count, kind, driver, baseline);

  await row(
    'CreateVolume',
    async (i) => {
      const v = (await c.controller.CreateVolume({ name: vname(i), capacity_range: { required_bytes: SIZE }, volume_capabilities: [cap], parameters: PARAMS, secrets }))!.volume!;
      ids[i] = v.volume_id!;
    },
    (i) => lib.run(createSteps(bare(i))),
  );

  await row(
    'ControllerExpandVolume',
    (i) => c.controller.ControllerExpandVolume({ volume_id: ids[i]!, capacity_range: { required_bytes: 2 * SIZE }, secrets }),
    (i) => lib.run([mgr(sv('info', bare(i))), mgr(sv('resize', bare(i), { new_size: String(2 * SIZE), no_shrink: true }))]),
  );

  // Untimed: what ControllerPublish leaves (an attachment and a subvolume user), on both sides.
  const limit = pLimit(4);
  await Promise.all(
    Array.from({ length: n }, (_, i) =>
      limit(async () => {
        pubs[i] = (await c.controller.ControllerPublishVolume({ volume_id: ids[i]!, node_id: 'bench-node', volume_capability: cap, secrets }))!.publish_context as Record<string, string>;
        await lib.run([mgr(sv('authorize', bare(i), { auth_id: `strata-${bare(i)}`, access_level: 'rw' }))]);
        // The bare mount uses that user, as the node uses its own: an admin client holds the
        // subvolume path's parent directories, and its ceph-fuse exits only at its next tick (up to 1 s).
        mkdirSync(work, { recursive: true });
        writeFileSync(bareKeyFile(i), (await ceph(['auth', 'get-key', `client.strata-${bare(i)}`])).trim(), { mode: 0o600 });
      }),
    ),
  );
  const barePaths = await Promise.all(Array.from({ length: n }, (_, i) => limit(async () => (await ceph(['fs', 'subvolume', 'getpath', FS, bare(i), '--group_name', GROUP])).trim())));

  await row(
    'NodeStage+NodePublish',
    async (i) => {
      const d = dirs('drv', i);
      mkdirSync(d.staging, { recursive: true });
      await c.node.NodeStageVolume({ volume_id: ids[i]!, staging_target_path: d.staging, volume_capability: cap, volume_context: { mounter: 'fuse' }, publish_context: pubs[i]! });
      await c.node.NodePublishVolume({ volume_id: ids[i]!, staging_target_path: d.staging, target_path: d.target, volume_capability: cap });
    },
    async (i) => {
      const d = dirs('bare', i);
      mkdirSync(d.staging, { recursive: true });
      mkdirSync(d.target, { recursive: true });
      await run('ceph-fuse', ['-c', '/dev/null', '-m', lab.monitors.join(','), '--id', `strata-${bare(i)}`, '--keyfile', bareKeyFile(i), ...CEPH_TIMEOUTS, '-r', barePaths[i]!, '--admin_socket', '', '--pid_file', '', d.staging], { timeoutMs: 60_000 });
      await run('mount', ['--bind', d.staging, d.target], { timeoutMs: 30_000 });
    },
    'cli',
  );

  await row(
    'CreateSnapshot',
    async (i) => {
      snaps[i] = (await c.controller.CreateSnapshot({ source_volume_id: ids[i]!, name: `s${conc}-${i}`, secrets }))!.snapshot!.snapshot_id!;
    },
    (i) =>
      lib.run(snapshotSteps(bare(i), 'snap', bareSnap(i))),
  );

  await row(
    'Restore until ready',
    async (i) => {
      restored[i] = (await untilReady(() => c.controller.CreateVolume({ name: `r${conc}-${i}`, capacity_range: { required_bytes: 2 * SIZE }, volume_capabilities: [cap], parameters: PARAMS, secrets, volume_content_source: { snapshot: { snapshot_id: snaps[i]! } } })))!.volume!.volume_id!;
    },
    (i) => {
      const t = `bare-r-${conc}-${i}`;
      return lib.run([
        mgr(sv('getpath', t), ENOENT),
        mgr(sv('snapshot metadata ls', bare(i), { snap_name: 'snap' })),
        mgr(sv('snapshot clone', bare(i), { snap_name: 'snap', target_sub_name: t, target_group_name: GROUP })),
        mgr(sv('info', t), EAGAIN, ENOENT),
        { op: 'clone_wait', fs: FS, group: GROUP, clone: t },
        mgr(sv('info', t)),
        mgr(sv('metadata ls', t)),
        mgr(sv('metadata set', t, { key_name: 'strata.volume', value: record(t) })),
      ]);
    },
    'librados',
    clones,
  );

  await row(
    'Clone until ready',
    async (i) => {
      cloned[i] = (await untilReady(() => c.controller.CreateVolume({ name: `c${conc}-${i}`, capacity_range: { required_bytes: 2 * SIZE }, volume_capabilities: [cap], parameters: PARAMS, secrets, volume_content_source: { volume: { volume_id: ids[i]! } } })))!.volume!.volume_id!;
    },
    (i) => {
      const t = `bare-c-${conc}-${i}`;
      return lib.run([
        mgr(sv('getpath', t), ENOENT),
        mgr(sv('info', bare(i))),
        mgr(sv('snapshot create', bare(i), { snap_name: t })),
        mgr(sv('snapshot clone', bare(i), { snap_name: t, target_sub_name: t, target_group_name: GROUP })),
        mgr(sv('info', t), EAGAIN, ENOENT),
        { op: 'clone_wait', fs: FS, group: GROUP, clone: t },
        mgr(sv('info', t)),
        mgr(sv('metadata ls', t)),
        mgr(sv('snapshot rm', bare(i), { snap_name: t, force: true })),
        mgr(sv('metadata set', t, { key_name: 'strata.volume', value: record(t) })),
      ]);
    },
    'librados',
    clones,
  );

  await row(
    'NodeUnpublish+NodeUnstage',
    (i) => unpublishAndUnstage(c.node, ids[i]!, dirs('drv', i)),
    async (i) => {
      const d = dirs('bare', i);
      const pid = fuseDaemonPid('ceph-fuse', d.staging);
      await run('umount', [d.target], { timeoutMs: 30_000 });
      await run('umount', [d.staging], { timeoutMs: 30_000 });
      // As the driver does: unstaged means the client has flushed and closed its MDS session.
      if (pid) await waitExit(pid, 30_000);
    },
    'cli',
  );

  // Restores and clones go first (untimed), as in a cluster's usual order.
  await Promise.all(
    Array.from({ length: clones }, (_, i) =>
      limit(async () => {
        // A restore that failed (a mgr command past its timeout) left nothing to delete by id; its subvolume goes by name.
        for (const [id, name] of [[restored[i], `r${conc}-${i}`], [cloned[i], `c${conc}-${i}`]] as const) {
          if (id) await c.controller.DeleteVolume({ volume_id: id, secrets });
          else await untilReady(() => c.controller.CreateVolume({ name: name, capacity_range: { required_bytes: 2 * SIZE }, volume_capabilities: [cap], parameters: PARAMS, secrets, volume_content_source: name.startsWith('r') ? { snapshot: { snapshot_id: snaps[i]! } } : { volume: { volume_id: ids[i]! } } })).then((r) => c.controller.DeleteVolume({ volume_id: r!.volume!.volume_id!, secrets }));
        }
        await lib.run([mgr(sv('rm', `bare-r-${conc}-${i}`)), mgr(sv('rm', `bare-c-${conc}-${i}`))]);
      }),
    ),
  );
  // Untimed, on both sides: ControllerUnpublish removes the node's user.
  await Promise.all(
    Array.from({ length: n }, (_, i) =>
      limit(async () => {
        await c.controller.ControllerUnpublishVolume({ volume_id: ids[i]!, node_id: 'bench-node', secrets });
        await lib.run([mgr(sv('deauthorize', bare(i), { auth_id: `strata-${bare(i)}` }))]);
      }),
    ),
  );

  await row(
    'DeleteSnapshot',
    (i) => c.controller.DeleteSnapshot({ snapshot_id: snaps[i]!, secrets }),
    (i) =>
      lib.run([
        mgr(sv('snapshot rm', bare(i), { snap_name: 'snap', force: true })),
        mon(configKey('rm', retainedKey(bare(i), 'snap')), ENOENT),
        mon(configKey('get', claimKey(bareSnap(i)))),
        mon(configKey('rm', claimKey(bareSnap(i)))),
        mgr(sv('info', bare(i))),
      ]),
  );
  await row(
    'DeleteVolume',
    (i) => c.controller.DeleteVolume({ volume_id: ids[i]!, secrets }),
    (i) => lib.run(deleteSteps(bare(i))),
  );
}

/**
 * CreateSnapshot p50 over the driver's `vols` and, alternating with it, the baseline's commands on
 * as many bare subvolumes, one new snapshot each, at concurrency 1: whatever the number of
 * volumes does to the mgr and the MDS shows in both columns.
 */
function snapshotP50(vols: string[], bareVols: string[], tag: string): Promise<{ driver: Sample; bare: Sample }> {
  return measurePair(
    vols.length,
    1,
    (i) => c.controller.CreateSnapshot({ source_volume_id: vols[i]!, name: `scale-${tag}-${i}`, secrets }),
    (i) => lib.run(snapshotSteps(bareVols[i]!, `scale-${tag}`, `bare-scale-${tag}-${i}`)),
  );
}

try {
  console.log(`CephFS benchmark: Ceph lab on this machine, ${SIZE / MiB} MiB subvolumes, ceph-fuse on the node; milliseconds`);
  console.log(ROW_HEADER);
  await round(1, 16, 4);
  await round(16, 32, 16);

  // The mgr's purge threads take the volumes module's lock for every subvolume removed: what the
  // rounds removed is purged before the burst and the snapshot rows, which would otherwise wait on it.
  const drained = async () => {
    for (let t = 0; t < 240; t++) {
      const v = JSON.parse(await ceph(['fs', 'volume', 'info', FS, '--format', 'json'])) as { pending_subvolume_deletions?: number };
      if (!v.pending_subvolume_deletions) return;
      await sleep(500);
    }
  };
  await drained();
  const vol = async (name: string) => (await c.controller.CreateVolume({ name, capacity_range: { required_bytes: 16 * MiB }, volume_capabilities: [cap], parameters: PARAMS, secrets }))!.volume!.volume_id!;
  const scale = await Promise.all(Array.from({ length: 10 }, (_, i) => vol(`scale-${i}`)));
  const bareScale = Array.from({ length: 10 }, (_, i) => `bare-scale-${i}`);
  await Promise.all(bareScale.map((name) => lib.run(createSteps(name, 16 * MiB))));
  const at10 = await snapshotP50(scale, bareScale, '10');

  await drained();
  const burstIds: string[] = [];
  const burst = await measure(100, 100, async (i) => (burstIds[i] = await vol(`burst-${i}`)));
  const bareBurst = await measure(100, 100, (i) => lib.run(createSteps(`bare-burst-${i}`, 16 * MiB)));
  console.log(`\n100 concurrent CreateVolume: driver ${(burst.wallMs / 1000).toFixed(1)} s wall (p50 ${burst.p50.toFixed(0)} ms, ${burst.errors} errors); baseline ${(bareBurst.wallMs / 1000).toFixed(1)} s wall (p50 ${bareBurst.p50.toFixed(0)} ms, ${bareBurst.errors} errors)`);

  // 10 + 100 driver volumes and 100 bare ones so far; 90 more driver volumes make 200 of the driver's.
  const limit = pLimit(16);
  await Promise.all(Array.from({ length: 90 }, (_, i) => limit(() => vol(`fill-${i}`))));
  const at200 = await snapshotP50(scale, bareScale, '200');
  const grew = (k: 'driver' | 'bare') => `${at10[k].p50.toFixed(0)} ms with 10 volumes, ${at200[k].p50.toFixed(0)} ms with 200 (${(at200[k].p50 / at10[k].p50).toFixed(2)}x)`;
  console.log(`CreateSnapshot p50 (n 10, conc 1): driver ${grew('driver')}; baseline ${grew('bare')}`);

  // 100 concurrent DeleteVolume, each side once the mgr has purged what was removed before it.
  await drained();
  const drop = await measure(100, 100, (i) => untilReady(() => c.controller.DeleteVolume({ volume_id: burstIds[i]!, secrets })));
  await drained();
  const bareDrop = await measure(100, 100, (i) => lib.run(deleteSteps(`bare-burst-${i}`)));
  console.log(`100 concurrent DeleteVolume: driver ${(drop.wallMs / 1000).toFixed(1)} s wall (p50 ${drop.p50.toFixed(0)} ms, ${drop.errors} errors); baseline ${(bareDrop.wallMs / 1000).toFixed(1)} s wall (p50 ${bareDrop.p50.toFixed(0)} ms, ${bareDrop.errors} errors)`);

  printRss(idle, processRss(pids));
} finally {
  lib.close();
  await drivers.stop();
}
