import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CephLab } from '../test/lab/ceph-lab.js';
import { codeOf, connect, startDriver, type CsiClients } from '../test/helpers/driver.js';
import { MiB, mountCap } from '../test/helpers/volumes.js';
import { CEPH_TIMEOUTS } from '../src/ceph/conn.js';
import { run } from '../src/util/exec.js';
import { fuseDaemonPid, waitExit } from '../src/mount/fuse-process.js';
import { LATENCY_HEADER, latencyRow } from './stats.js';

/**
 * CephFS benchmark: each CSI call against the bare `ceph fs subvolume`
 * commands that do the same work, side by side in one run on one lab.
 * Prints figures; asserts nothing.
 *
 * "The same work" per row:
 *   CreateVolume          subvolume create --size --namespace-isolated; subvolume metadata set
 *   NodeStage+Publish     ceph-fuse -r <path>; mount --bind (the driver gets the path and key from the
 *                         volume context and publish context, made untimed by ControllerPublish)
 *   CreateSnapshot        subvolume snapshot create; snapshot metadata set
 *   Restore to ready      subvolume snapshot clone; clone status until complete
 *   NodeUnpublish+Unstage umount x2; wait for ceph-fuse to exit
 *   DeleteVolume          subvolume rm
 */

const FS = 'cephfs';
const GROUP = 'csi';
const SIZE = 64 * MiB;
const N = 8;
const PARAMS = { backend: 'cephfs', clusterID: 'lab', fsName: FS };
const cap = mountCap('', 'MULTI_NODE_MULTI_WRITER');

const lab = await CephLab.start({ components: ['cephfs'] });
const config = lab.writeDriverConfig();
const ctrl = await startDriver({ config, mode: 'controller', logLevel: 'warn' });
const node = await startDriver({ config, mode: 'node', nodeId: 'bench-node', logLevel: 'warn' });
const c: CsiClients = { ...connect(ctrl.socket), node: connect(node.socket).node };
const secrets = { userID: 'admin', userKey: lab.adminKey };
const conn = ['-c', '/dev/null', '-m', lab.monitors.join(','), '--id', 'admin', '--keyfile', lab.adminKeyFile, ...CEPH_TIMEOUTS];
const ceph = async (args: string[]) => (await run('ceph', [...conn, ...args], { timeoutMs: 60_000 })).stdout;
const sv = (args: string[]) => ceph(['fs', 'subvolume', ...args, '--group_name', GROUP]);
const work = path.join(node.dir, 'bench');

const row = (op: string, driver: (i: number) => Promise<unknown>, bare: (i: number) => Promise<unknown>) => latencyRow(op, N, driver, bare);

/** As the provisioner does: ABORTED means a clone is still running, so call again. */
async function untilReady<T>(fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (codeOf(e) !== 'ABORTED') throw e;
      await sleep(250);
    }
  }
}

const ids: string[] = [];
const ctxs: Array<{ path: string; pub: Record<string, string> }> = [];
const snaps: string[] = [];
const restored: string[] = [];
const bareVol = (i: number) => `bare-${i}`;
const dirs = (kind: string, i: number) => ({ staging: path.join(work, `${kind}-${i}`, 'staging'), target: path.join(work, `${kind}-${i}`, 'target') });

try {
  console.log(`CephFS benchmark: Ceph lab on this machine, ${SIZE / MiB} MiB subvolumes, ceph-fuse on the node, concurrency 1; milliseconds`);
  console.log(LATENCY_HEADER);

  await row(
    'CreateVolume',
    async (i) => {
      const v = (await c.controller.CreateVolume({ name: `b-${i}`, capacity_range: { required_bytes: SIZE }, volume_capabilities: [cap], parameters: PARAMS, secrets }))!.volume!;
      ids[i] = v.volume_id!;
      ctxs[i] = { path: v.volume_context!.subvolumePath!, pub: {} };
    },
    async (i) => {
      await sv(['create', FS, bareVol(i), '--size', String(SIZE), '--namespace-isolated']);
      await sv(['metadata', 'set', FS, bareVol(i), 'strata.volume', JSON.stringify({ v: 1, name: bareVol(i) })]);
    },
  );
  for (let i = 0; i < N; i++) {
    ctxs[i]!.pub = (await c.controller.ControllerPublishVolume({ volume_id: ids[i]!, node_id: 'bench-node', volume_capability: cap, secrets }))!.publish_context as Record<string, string>;
  }
  const barePaths = await Promise.all(Array.from({ length: N }, async (_, i) => (await sv(['getpath', FS, bareVol(i)])).trim()));

  await row(
    'NodeStage+NodePublish',
    async (i) => {
      const d = dirs('drv', i);
      mkdirSync(d.staging, { recursive: true });
      await c.node.NodeStageVolume({ volume_id: ids[i]!, staging_target_path: d.staging, volume_capability: cap, volume_context: { subvolumePath: ctxs[i]!.path, mounter: 'fuse' }, publish_context: ctxs[i]!.pub });
      await c.node.NodePublishVolume({ volume_id: ids[i]!, staging_target_path: d.staging, target_path: d.target, volume_capability: cap });
    },
    async (i) => {
      const d = dirs('bare', i);
      mkdirSync(d.staging, { recursive: true });
      mkdirSync(d.target, { recursive: true });
      await run('ceph-fuse', [...conn, '-r', barePaths[i]!, '--admin_socket', '', '--pid_file', '', d.staging], { timeoutMs: 60_000 });
      await run('mount', ['--bind', d.staging, d.target], { timeoutMs: 30_000 });
    },
  );
  await row(
    'NodeUnpublish+NodeUnstage',
    async (i) => {
      const d = dirs('drv', i);
      await c.node.NodeUnpublishVolume({ volume_id: ids[i]!, target_path: d.target });
      await c.node.NodeUnstageVolume({ volume_id: ids[i]!, staging_target_path: d.staging });
    },
    async (i) => {
      const d = dirs('bare', i);
      const pid = fuseDaemonPid('ceph-fuse', d.staging);
      await run('umount', [d.target], { timeoutMs: 30_000 });
      await run('umount', [d.staging], { timeoutMs: 30_000 });
      // As the driver does: unstaged means the client has flushed and closed its MDS session.
      if (pid) await waitExit(pid, 30_000);
    },
  );

  await row(
    'CreateSnapshot',
    async (i) => {
      snaps[i] = (await c.controller.CreateSnapshot({ source_volume_id: ids[i]!, name: `s-${i}`, secrets }))!.snapshot!.snapshot_id!;
    },
    async (i) => {
      await sv(['snapshot', 'create', FS, bareVol(i), 'snap']);
      await sv(['snapshot', 'metadata', 'set', FS, bareVol(i), 'snap', 'strata.snapshot', JSON.stringify({ v: 1, name: `bare-snap-${i}` })]);
    },
  );

  await row(
    'Restore to ready (clone)',
    async (i) => {
      restored[i] = (await untilReady(() => c.controller.CreateVolume({ name: `r-${i}`, capacity_range: { required_bytes: SIZE }, volume_capabilities: [cap], parameters: PARAMS, secrets, volume_content_source: { snapshot: { snapshot_id: snaps[i]! } } })))!.volume!.volume_id!;
    },
    async (i) => {
      await sv(['snapshot', 'clone', FS, bareVol(i), 'snap', `bare-r-${i}`, '--target_group_name', GROUP]);
      for (;;) {
        const st = JSON.parse(await ceph(['fs', 'clone', 'status', FS, `bare-r-${i}`, '--group_name', GROUP, '--format', 'json'])) as { status: { state: string } };
        if (st.status.state === 'complete') break;
        if (st.status.state === 'failed') throw new Error('clone failed');
        await sleep(250);
      }
    },
  );

  for (let i = 0; i < N; i++) {
    await c.controller.ControllerUnpublishVolume({ volume_id: ids[i]!, node_id: 'bench-node', secrets });
    await c.controller.DeleteSnapshot({ snapshot_id: snaps[i]!, secrets });
    await c.controller.DeleteVolume({ volume_id: restored[i]!, secrets });
    await sv(['snapshot', 'rm', FS, bareVol(i), 'snap']);
    await sv(['rm', FS, `bare-r-${i}`]);
  }
  await row(
    'DeleteVolume',
    (i) => c.controller.DeleteVolume({ volume_id: ids[i]!, secrets }),
    (i) => sv(['rm', FS, bareVol(i)]),
  );
} finally {
  c.close();
  await ctrl.stop();
  await node.stop();
  await lab.stop();
}
