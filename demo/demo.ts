import { existsSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { CephLab, LAB_S3, type Component } from '../test/lab/ceph-lab.js';
import { connect, retryAborted, startDriver, type CsiClients } from '../test/helpers/driver.js';
import { MiB, attach, detach, fileSha, mountCap, writeRandom } from '../test/helpers/volumes.js';
import type { VolumeCapability } from '../src/csi/gen/csi/v1/VolumeCapability.js';

/**
 * The main job: boots a real Ceph lab, runs the real `strata` binary, and
 * walks one volume of each backend through its life as Kubernetes would drive
 * it, printing each step with its time.
 */

interface Walk {
  backend: string;
  component: Component;
  parameters: Record<string, string>;
  capability: VolumeCapability;
  createBytes: number;
  expandBytes: number;
  secrets: (lab: CephLab) => Record<string, string>;
}

const cephAdmin = (lab: CephLab) => ({ userID: 'admin', userKey: lab.adminKey });

const WALKS: Walk[] = [
  { backend: 'rbd', component: 'rbd', parameters: { backend: 'rbd', clusterID: 'lab', pool: 'rbd', fsType: 'xfs' }, capability: mountCap('xfs'), createBytes: 512 * MiB, expandBytes: 1024 * MiB, secrets: cephAdmin },
  { backend: 'cephfs', component: 'cephfs', parameters: { backend: 'cephfs', clusterID: 'lab', fsName: 'cephfs' }, capability: mountCap('', 'MULTI_NODE_MULTI_WRITER'), createBytes: 512 * MiB, expandBytes: 1024 * MiB, secrets: cephAdmin },
  {
    backend: 's3',
    component: 's3',
    parameters: { backend: 's3', clusterID: 'lab', mounter: 's3fs', uid: '1000', gid: '1000', mode: '0775' },
    capability: mountCap('', 'MULTI_NODE_MULTI_WRITER'),
    createBytes: 512 * MiB,
    expandBytes: 1024 * MiB,
    secrets: () => ({ accessKeyID: LAB_S3.accessKeyID, secretAccessKey: LAB_S3.secretAccessKey }),
  },
];

const wanted = (process.argv[2] ?? WALKS.map((w) => w.backend).join(',')).split(',');
const walks = WALKS.filter((w) => wanted.includes(w.backend));
if (!walks.length) {
  console.error(`usage: demo [${WALKS.map((w) => w.backend).join(',')}]`);
  process.exit(2);
}

async function step<T>(label: string, fn: () => Promise<T>, detail?: (r: T) => string): Promise<T> {
  const t0 = performance.now();
  process.stdout.write(`  ${label.padEnd(44)}`);
  const r = await fn();
  const extra = detail ? `  ${detail(r)}` : '';
  console.log(`${(performance.now() - t0).toFixed(0).padStart(6)} ms${extra}`);
  return r;
}

async function untilReady<T extends { snapshot?: { ready_to_use?: boolean } | null } | undefined>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    const r = await fn();
    if (r?.snapshot?.ready_to_use || i >= 60) return r;
    await new Promise((res) => setTimeout(res, 500));
  }
}

const human = (b: number) => (b >= 1024 * MiB ? `${(b / 1024 / MiB).toFixed(1)} GiB` : `${(b / MiB).toFixed(0)} MiB`);

async function walk(w: Walk, c: CsiClients, dir: string, secrets: Record<string, string>): Promise<void> {
  console.log(`\n${w.backend}: one volume through its life`);
  const t0 = performance.now();
  const vol = await step('CreateVolume', () => c.controller.CreateVolume({ name: `demo-${w.backend}`, capacity_range: { required_bytes: w.createBytes }, volume_capabilities: [w.capability], parameters: w.parameters, secrets }), (r) => `${r!.volume!.volume_id} (${human(Number(r!.volume!.capacity_bytes))})`);
  const id = vol!.volume!.volume_id!;
  const att = await step('ControllerPublish + NodeStage + NodePublish', () => attach(c, vol!.volume!, 'demo-node', path.join(dir, `${w.backend}-vol`), w.capability, secrets), (a) => a.target);
  const sha = await step('write 64 MiB and fsync', async () => writeRandom(path.join(att.target, 'data.bin'), 64 * MiB), (s) => `sha256 ${s.slice(0, 16)}…`);
  // S3 snapshots are copies: the snapshotter calls again until ready_to_use, and so does the demo.
  const snap = await step('CreateSnapshot (until ready_to_use)', () => untilReady(() => c.controller.CreateSnapshot({ source_volume_id: id, name: `demo-${w.backend}-snap`, secrets })), (r) => `${r!.snapshot!.snapshot_id} ready=${r!.snapshot!.ready_to_use}`);
  const snapId = snap!.snapshot!.snapshot_id!;
  await step('write more after the snapshot', async () => writeRandom(path.join(att.target, 'later.bin'), 8 * MiB));
  const exp = await step('ControllerExpandVolume (online)', () => c.controller.ControllerExpandVolume({ volume_id: id, capacity_range: { required_bytes: w.expandBytes }, volume_capability: w.capability, secrets }), (r) => `${human(Number(r!.capacity_bytes))}, node step ${r!.node_expansion_required ? 'needed' : 'not needed'}`);
  // kubelet calls NodeExpandVolume only when the controller asked for it.
  if (exp!.node_expansion_required) await step('NodeExpandVolume', () => c.node.NodeExpandVolume({ volume_id: id, volume_path: att.target, staging_target_path: att.staging, volume_capability: w.capability }), (r) => human(Number(r!.capacity_bytes)));
  await step('NodeGetVolumeStats', () => c.node.NodeGetVolumeStats({ volume_id: id, volume_path: att.target }), (r) => {
    const b = r!.usage!.find((u) => u.unit === 'BYTES')!;
    return `${human(Number(b.used))} used of ${human(Number(b.total))}, abnormal=${r!.volume_condition?.abnormal}`;
  });
  const restored = await step('CreateVolume from the snapshot (restore)', () => retryAborted(() => c.controller.CreateVolume({ name: `demo-${w.backend}-restored`, capacity_range: { required_bytes: w.createBytes }, volume_capabilities: [w.capability], parameters: w.parameters, secrets, volume_content_source: { snapshot: { snapshot_id: snapId } } })), (r) => r!.volume!.volume_id!);
  const rid = restored!.volume!.volume_id!;
  const ratt = await step('stage + publish the restored volume', () => attach(c, restored!.volume!, 'demo-node', path.join(dir, `${w.backend}-restored`), w.capability, secrets));
  await step('check the restored bytes', async () => {
    const got = fileSha(path.join(ratt.target, 'data.bin'));
    if (got !== sha) throw new Error(`restored data differs: ${got} != ${sha}`);
    if (existsSync(path.join(ratt.target, 'later.bin'))) throw new Error('the restore shows a file written after the snapshot');
    return got;
  }, () => 'sha256 matches; later writes absent as they should be');
  await step('unpublish + unstage both volumes', async () => {
    await detach(c, rid, 'demo-node', ratt, secrets);
    await detach(c, id, 'demo-node', att, secrets);
  });
  await step('DeleteSnapshot + DeleteVolume (all three)', async () => {
    await c.controller.DeleteSnapshot({ snapshot_id: snapId, secrets });
    await c.controller.DeleteVolume({ volume_id: id, secrets });
    await c.controller.DeleteVolume({ volume_id: rid, secrets });
  });
  console.log(`  ${w.backend} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

const started = performance.now();
console.log(`Strata demo: booting a single-node Ceph lab (${walks.map((w) => w.component).join(', ')})…`);
const lab = await CephLab.start({ components: [...new Set(walks.map((w) => w.component))], log: (m) => console.log(`  lab: ${m}`) });
let failed = false;
const driver = await startDriver({ config: lab.writeDriverConfig(), nodeId: 'demo-node', mode: 'all', logLevel: 'info' });
const c = connect(driver.socket);
try {
  const info = await c.identity.GetPluginInfo({});
  console.log(`driver ${info!.name} ${info!.vendor_version} serving on ${driver.socket} (log: ${driver.logFile})`);
  for (const w of walks) await walk(w, c, driver.dir, w.secrets(lab));
} catch (e) {
  failed = true;
  console.error(`\ndemo failed: ${(e as Error).message}\n(driver log: ${driver.logFile})`);
} finally {
  c.close();
  await driver.stop();
  await lab.stop();
}
console.log(`\n${failed ? 'FAILED' : 'all done'} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
process.exit(failed ? 1 : 0);
