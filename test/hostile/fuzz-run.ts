import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ListBucketsCommand } from '@aws-sdk/client-s3';
import { loadCsi } from '../../src/csi/proto.js';
import { readMountInfo } from '../../src/mount/mountinfo.js';
import { LAB_S3, type CephLab } from '../lab/ceph-lab.js';
import { retryAborted, type CsiClients, type DriverProcess } from '../helpers/driver.js';
import { labS3Client } from '../helpers/s3.js';
import { MiB, fileSha, writeRandom } from '../helpers/volumes.js';
import type { VolumeCapability } from '../../src/csi/gen/csi/v1/VolumeCapability.js';
import { describeRequest, goodCap, type Backend, type Cap, type FuzzContext, type FuzzRequest, type FuzzVolume } from './fuzz-gen.js';

/**
 * What the fuzz test and the hostile-input regression tests share: sentinel
 * files and mounts outside the driver's sandbox, volumes made (and written)
 * before the fuzzing, the concurrent sender with its checks and tallies, and
 * the Ceph-side leftovers check.
 */

export const PARAMS: Record<Backend, Record<string, string>> = {
  rbd: { backend: 'rbd', clusterID: 'lab', pool: 'rbd' },
  cephfs: { backend: 'cephfs', clusterID: 'lab', fsName: 'cephfs' },
  s3: { backend: 's3', clusterID: 'lab' },
};

export function labSecrets(lab: CephLab): Record<Backend, Record<string, string>> {
  const ceph = { userID: 'admin', userKey: lab.adminKey };
  return { rbd: ceph, cephfs: ceph, s3: { accessKeyID: LAB_S3.accessKeyID, secretAccessKey: LAB_S3.secretAccessKey } };
}

// ---------------------------------------------------------------------------
// Sentinels
// ---------------------------------------------------------------------------

export type Sentinels = FuzzContext['sentinels'];

/** Files, non-empty directories and a tmpfs mount outside `sandbox` (and one directory inside it) for requests to aim at. */
export function makeSentinels(sandbox: string): Sentinels {
  const root = mkdtempSync('/tmp/strata-fuzz-sentinels-');
  const s: Sentinels = {
    root,
    file: path.join(root, 'victim.txt'),
    dir: path.join(root, 'victim-dir'),
    mount: path.join(root, 'mnt'),
    mountFile: path.join(root, 'mnt', 'file.txt'),
    mountDir: path.join(root, 'mnt', 'dir'),
    inSandbox: path.join(sandbox, 'sentinel-in-sandbox'),
  };
  writeFileSync(s.file, 'do not delete\n');
  for (const d of [s.dir, s.inSandbox]) {
    mkdirSync(path.join(d, 'sub'), { recursive: true });
    writeFileSync(path.join(d, 'a.txt'), 'a\n');
    writeFileSync(path.join(d, 'sub', 'b.txt'), 'b\n');
  }
  mkdirSync(s.mount);
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'strata-fuzz-sentinel', s.mount], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot mount the sentinel tmpfs: ${r.stderr}`);
  writeFileSync(s.mountFile, 'on tmpfs\n');
  mkdirSync(s.mountDir);
  writeFileSync(path.join(s.mountDir, 'c.txt'), 'c\n');
  return s;
}

/**
 * Unmounts whatever is mounted under the sentinels (deepest first: a driver
 * bug may have mounted a volume there) and removes them, but never recurses
 * into a mount: if one cannot be detached the sentinels stay, named in the error.
 */
export async function removeSentinels(s: Sentinels | undefined): Promise<void> {
  if (!s) return;
  const under = async () => (await readMountInfo()).map((m) => m.mountPoint).filter((p) => p === s.root || p.startsWith(s.root + '/'));
  for (const p of (await under()).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', p], { timeout: 10_000 });
  const left = await under();
  if (left.length) throw new Error(`mounts left under the sentinels, not removing them: ${left.join(', ')}`);
  rmSync(s.root, { recursive: true, force: true });
}

/** Every entry under the sentinel roots with its kind, size, mtime and content hash. */
export function sentinelListing(s: Sentinels): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (p: string) => {
    let st;
    try {
      st = lstatSync(p);
    } catch {
      return;
    }
    if (st.isSymbolicLink()) out.set(p, `link ${readlinkSync(p)}`);
    else if (st.isDirectory()) {
      out.set(p, `dir mode=${st.mode.toString(8)} mtime=${st.mtimeMs}`);
      for (const e of readdirSync(p)) walk(path.join(p, e));
    } else out.set(p, `file size=${st.size} mtime=${st.mtimeMs} sha=${createHash('sha256').update(readFileSync(p)).digest('hex').slice(0, 16)}`);
  };
  walk(s.root);
  walk(s.inSandbox);
  return out;
}

// What the driver mounts: FUSE daemons, loop devices, bind mounts of them.
const DRIVER_MOUNT = /^fuse\.(ceph-fuse|rbd-fuse|s3fs|rclone)$|^ceph$/;

/**
 * Mounts outside the sandbox that a driver could have made or removed: those
 * under the sentinels or on a directory above them, and any mount of the
 * driver's kinds (FUSE, loop) anywhere. Other mounts come and go with other
 * suites on the machine (container runtimes, their own temp dirs).
 */
export async function outsideMounts(sandbox: string, s: Sentinels): Promise<Set<string>> {
  const above = (p: string) => p === '/' || s.root.startsWith(p + '/') || sandbox.startsWith(p + '/');
  // Another driver's sandbox (a suite running beside this one on the machine mounts in its own mkdtemp
  // directory): no request here names it, and its random name is no path an id could be turned into.
  const drivers = path.join(path.dirname(sandbox), 'strata-drv-');
  const otherSandbox = (p: string) => p.startsWith(drivers) && !p.startsWith(sandbox + '/') && p.indexOf('/', drivers.length) > 0;
  return new Set(
    (await readMountInfo())
      .filter((m) => !m.mountPoint.startsWith(sandbox + '/') && m.mountPoint !== sandbox && !otherSandbox(m.mountPoint))
      .filter((m) => m.mountPoint.startsWith(s.root) || above(m.mountPoint) || DRIVER_MOUNT.test(m.fsType) || m.source.startsWith('/dev/loop'))
      .map((m) => `${m.mountPoint} ${m.fsType} ${m.source} ${m.root}`),
  );
}

export function diffMaps(before: Map<string, string>, after: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of before) if (after.get(k) !== v) out.push(`${k}: ${v} -> ${after.get(k) ?? 'GONE'}`);
  for (const [k, v] of after) if (!before.has(k)) out.push(`${k}: NEW ${v}`);
  return out;
}

export function diffSets(before: Set<string>, after: Set<string>): string[] {
  return [...[...before].filter((x) => !after.has(x)).map((x) => `gone: ${x}`), ...[...after].filter((x) => !before.has(x)).map((x) => `new: ${x}`)];
}

// ---------------------------------------------------------------------------
// Pre-made volumes
// ---------------------------------------------------------------------------

export interface Premade extends FuzzVolume {
  backend: Backend;
  /** file name -> sha256, written through the published mount. */
  files: Map<string, string>;
}

/** The generator's capabilities may hold numbers outside the enum; these never do. */
const asCap = (c: Cap) => c as unknown as VolumeCapability;

/** Creates, publishes, stages and publishes a volume on the driver's node, writes files through it and snapshots it. */
export async function premade(c: CsiClients, drv: DriverProcess, nodeId: string, b: Backend, secrets: Record<string, string>, name = `fuzz-premade-${b}`): Promise<Premade> {
  const cap = asCap(goodCap(b));
  const capacity = 64 * MiB;
  const v = (await c.controller.CreateVolume({ name, capacity_range: { required_bytes: capacity }, volume_capabilities: [cap], parameters: PARAMS[b], secrets }))!.volume!;
  const volumeContext = v.volume_context ?? {};
  const pub = (await c.controller.ControllerPublishVolume({ volume_id: v.volume_id, node_id: nodeId, volume_capability: cap, readonly: false, secrets, volume_context: volumeContext }))!;
  const publishContext = pub.publish_context ?? {};
  const dir = path.join(drv.dir, `premade-${b}`);
  const staging = path.join(dir, 'staging');
  const target = path.join(dir, 'target');
  mkdirSync(staging, { recursive: true });
  await c.node.NodeStageVolume({ volume_id: v.volume_id, staging_target_path: staging, volume_capability: cap, secrets, publish_context: publishContext, volume_context: volumeContext });
  await c.node.NodePublishVolume({ volume_id: v.volume_id, staging_target_path: staging, target_path: target, volume_capability: cap, readonly: false, volume_context: volumeContext, publish_context: publishContext });
  const files = new Map<string, string>();
  files.set('data.bin', writeRandom(path.join(target, 'data.bin'), 4 * MiB));
  mkdirSync(path.join(target, 'sub'), { recursive: true });
  files.set('sub/small.txt', writeRandom(path.join(target, 'sub', 'small.txt'), 3000));
  const snap = (await c.controller.CreateSnapshot({ source_volume_id: v.volume_id, name: `${name}-snap`, secrets }))!.snapshot!;
  return { backend: b, id: v.volume_id!, snapshotId: snap.snapshot_id!, staging, target, cap: goodCap(b), capacity: Number(v.capacity_bytes), volumeContext, publishContext, files };
}

export function checkFiles(p: Premade, root = p.target): string[] {
  const bad: string[] = [];
  for (const [rel, sha] of p.files) {
    try {
      const got = fileSha(path.join(root, rel));
      if (got !== sha) bad.push(`${p.backend} ${rel}: sha ${got.slice(0, 12)}, wanted ${sha.slice(0, 12)}`);
    } catch (e) {
      bad.push(`${p.backend} ${rel}: ${(e as Error).message}`);
    }
  }
  return bad;
}

/** Stages and publishes a pre-made volume again at fresh paths (a cold read), checks its files, and takes it down again. */
export async function reattachAndCheck(c: CsiClients, drv: DriverProcess, nodeId: string, p: Premade, secrets: Record<string, string>): Promise<string[]> {
  const dir = path.join(drv.dir, `reattach-${p.backend}`);
  const staging = path.join(dir, 'staging');
  const target = path.join(dir, 'target');
  mkdirSync(staging, { recursive: true });
  const cap = asCap(p.cap);
  const pub = (await c.controller.ControllerPublishVolume({ volume_id: p.id, node_id: nodeId, volume_capability: cap, readonly: false, secrets, volume_context: p.volumeContext }))!;
  await c.node.NodeStageVolume({ volume_id: p.id, staging_target_path: staging, volume_capability: cap, secrets, publish_context: pub.publish_context, volume_context: p.volumeContext });
  await c.node.NodePublishVolume({ volume_id: p.id, staging_target_path: staging, target_path: target, volume_capability: cap, readonly: false, volume_context: p.volumeContext, publish_context: pub.publish_context });
  const bad = checkFiles(p, target);
  await retryAborted(() => c.node.NodeUnpublishVolume({ volume_id: p.id, target_path: target }));
  await retryAborted(() => c.node.NodeUnstageVolume({ volume_id: p.id, staging_target_path: staging }));
  await retryAborted(() => c.controller.ControllerUnpublishVolume({ volume_id: p.id, node_id: nodeId, secrets }));
  return bad;
}

export async function detachPremade(c: CsiClients, nodeId: string, p: Premade, secrets: Record<string, string>): Promise<void> {
  await retryAborted(() => c.node.NodeUnpublishVolume({ volume_id: p.id, target_path: p.target }));
  await retryAborted(() => c.node.NodeUnstageVolume({ volume_id: p.id, staging_target_path: p.staging }));
  await retryAborted(() => c.controller.ControllerUnpublishVolume({ volume_id: p.id, node_id: nodeId, secrets }));
}

// ---------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------

export interface Failure {
  request: string;
  code: string;
  details: string;
  why: string;
}

export interface FuzzResult {
  sent: number;
  ms: number;
  byRpc: Map<string, Map<string, number>>;
  byCode: Map<string, number>;
  failures: Failure[];
  /** Objects and mounts OK answers made, for the cleanup. */
  made: {
    volumes: Set<string>;
    snapshots: Set<string>;
    publishes: Array<{ volumeId: string; nodeId: string }>;
    stages: Array<{ volumeId: string; path: string }>;
    targets: Array<{ volumeId: string; path: string }>;
  };
}

interface Answer {
  code: string;
  details: string;
  res?: Record<string, unknown>;
  /** The call never reached the driver, or its connection broke: the transport's doing, not an answer. */
  transport?: boolean;
}

interface Sender {
  send(r: FuzzRequest, deadlineMs: number): Promise<Answer>;
  /** Drops the connection and opens a new one (after a call that never got its answer may have wedged it). */
  reconnect(): void;
  close(): void;
}

// grpc-js's words for a call the HTTP/2 connection refused or lost; the driver never answered it.
const TRANSPORT = /^(Stream refused by server|Connection dropped|Received RST_STREAM)/;

/**
 * Sends every request as bytes (serialised here, so a request the client
 * library could not encode is the test's error, not the driver's) on a
 * connection of its own, as each sidecar has one.
 */
export function sender(socket: string): Sender {
  const csi = loadCsi().csi.v1;
  const open = () => new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': 16 * MiB, 'grpc.use_local_subchannel_pool': 1 });
  let client = open();
  const defs = { Identity: csi.Identity.service, Controller: csi.Controller.service, Node: csi.Node.service } as Record<string, grpc.ServiceDefinition>;
  return {
    send(r, deadlineMs) {
      const def = defs[r.service]![r.rpc]!;
      const bytes = r.raw ?? (def.requestSerialize(r.req) as Buffer);
      return new Promise((resolve) => {
        client.makeUnaryRequest<Buffer, Buffer>(def.path, (x) => x, (x) => x, bytes, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (e, res) => {
          if (e) resolve({ code: grpc.status[e.code] ?? String(e.code), details: e.details ?? '', transport: e.code === grpc.status.UNAVAILABLE && TRANSPORT.test(e.details ?? '') });
          else resolve({ code: 'OK', details: '', res: def.responseDeserialize(res!) as Record<string, unknown> });
        });
      });
    },
    reconnect() {
      client.close();
      client = open();
    },
    close: () => client.close(),
  };
}

export interface RunOptions {
  concurrency: number;
  deadlineMs: number;
  secretMarker: string;
  /** Ids and paths of the pre-made volumes: OK answers on them make nothing new. */
  ctx: FuzzContext;
}

/** Sends the requests with bounded concurrency and checks each answer against the spec's codes. */
export async function runFuzz(socket: string, requests: Iterable<FuzzRequest>, o: RunOptions): Promise<FuzzResult> {
  const it = requests[Symbol.iterator]();
  const result: FuzzResult = { sent: 0, ms: 0, byRpc: new Map(), byCode: new Map(), failures: [], made: { volumes: new Set(), snapshots: new Set(), publishes: [], stages: [], targets: [] } };
  const inflight = new Map<string, Set<{ contended: boolean }>>();
  const realIds = new Set(Object.values(o.ctx.volumes).map((v) => v!.id));
  const realStaging = new Set(Object.values(o.ctx.volumes).map((v) => v!.staging));
  const realTargets = new Set(Object.values(o.ctx.volumes).map((v) => v!.target));
  const t0 = Date.now();

  const one = async (s: Sender, r: FuzzRequest) => {
    const me = { contended: false };
    for (const k of r.lockKeys) {
      const set = inflight.get(k) ?? new Set();
      if (set.size) {
        me.contended = true;
        for (const other of set) other.contended = true;
      }
      set.add(me);
      inflight.set(k, set);
    }
    const started = Date.now();
    let answer = await s.send(r, o.deadlineMs);
    const noAnswer = answer.code === 'DEADLINE_EXCEEDED' && Date.now() - started >= o.deadlineMs - 50;
    if (answer.transport || noAnswer) {
      // The connection may be wedged by this call or another: say so once, then go on over a new one.
      const broke = answer;
      s.reconnect();
      if (broke.transport) answer = await s.send(r, o.deadlineMs);
      result.failures.push({ request: describeRequest(r), code: broke.code, details: broke.details.slice(0, 300), why: noAnswer ? `no answer within ${o.deadlineMs} ms` : 'the connection refused or dropped the call (retried once on a new connection)' });
    }
    const { code, details, res } = answer;
    for (const k of r.lockKeys) {
      const set = inflight.get(k)!;
      set.delete(me);
      if (!set.size) inflight.delete(k);
    }
    result.sent++;
    const key = `${r.service}.${r.rpc}`;
    const row = result.byRpc.get(key) ?? new Map<string, number>();
    row.set(r.backend, (row.get(r.backend) ?? 0) + 1);
    row.set(code, (row.get(code) ?? 0) + 1);
    result.byRpc.set(key, row);
    result.byCode.set(code, (result.byCode.get(code) ?? 0) + 1);

    const fail = (why: string) => result.failures.push({ request: describeRequest(r), code, details: details.slice(0, 300), why });
    if (code === 'INTERNAL' || code === 'UNKNOWN') fail('INTERNAL/UNKNOWN for a malformed or hostile request');
    else if (noAnswer || answer.transport) {
      /* already counted */
    } else if (r.expect && !r.expect.includes(code) && !(code === 'ABORTED' && me.contended)) fail(`the spec gives ${r.expect.join('|')} for: ${r.defects.join('; ') || 'a well-formed request'}`);
    if (details.includes(o.secretMarker)) fail('a secret value is in the answer');

    if (code !== 'OK' || !r.req) return;
    const q = r.req as Record<string, string>;
    if (r.rpc === 'CreateVolume') result.made.volumes.add(String((res!.volume as Record<string, unknown>).volume_id));
    if (r.rpc === 'CreateSnapshot') result.made.snapshots.add(String((res!.snapshot as Record<string, unknown>).snapshot_id));
    if (r.rpc === 'ControllerPublishVolume' && !(realIds.has(q.volume_id!) && q.node_id === o.ctx.nodeId)) result.made.publishes.push({ volumeId: q.volume_id!, nodeId: q.node_id! });
    if (r.rpc === 'NodeStageVolume' && !realStaging.has(q.staging_target_path!)) result.made.stages.push({ volumeId: q.volume_id!, path: q.staging_target_path! });
    if (r.rpc === 'NodePublishVolume' && !realTargets.has(q.target_path!)) result.made.targets.push({ volumeId: q.volume_id!, path: q.target_path! });
  };

  const worker = async () => {
    const s = sender(socket);
    try {
      for (;;) {
        const n = it.next();
        if (n.done) return;
        await one(s, n.value);
      }
    } finally {
      s.close();
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  result.ms = Date.now() - t0;
  return result;
}

/**
 * The failures as a report: how many of each kind (code, RPC, rule), then
 * examples taken from every kind in turn, so one flood does not hide the rest.
 */
export function failureReport(fs: Failure[], examples = 20): string {
  // Kinds: the code and the gist of the answer (ids, paths and numbers blurred), or of the rule when the answer says nothing.
  const gist = (f: Failure) => (f.details || f.why.replace(/ for: .*/, '')).replace(/s1:[^ "]*/g, '<id>').replace(/\/[^ "']*/g, '<path>').replace(/\d+/g, 'N').slice(0, 70);
  const groups = new Map<string, Failure[]>();
  for (const f of fs) {
    const k = `${f.code} ${gist(f)}`;
    groups.set(k, [...(groups.get(k) ?? []), f]);
  }
  const sorted = [...groups].sort((a, b) => b[1].length - a[1].length);
  const rpcs = (g: Failure[]) => [...new Set(g.map((f) => f.request.split(' ')[1]!.replace(/^\w+\./, '')))].slice(0, 6).join(',');
  const lines = sorted.map(([k, g]) => `  ${String(g.length).padStart(5)} x ${k} [${rpcs(g)}]`);
  const picked: Failure[] = [];
  for (let i = 0; picked.length < examples && i < examples; i++) for (const [, g] of sorted) if (g[i] && picked.length < examples) picked.push(g[i]!);
  lines.push(`  first examples:`);
  for (const f of picked) lines.push(`  ${f.code} ${f.details ? `"${f.details}" ` : ''}<- ${f.request}\n     (${f.why})`);
  return lines.join('\n');
}

/** The tallies as printable lines: per RPC the backends and codes, then the codes overall. */
export function tallies(r: FuzzResult): string[] {
  const lines = [`sent ${r.sent} requests in ${(r.ms / 1000).toFixed(1)} s`];
  for (const [rpc, row] of [...r.byRpc].sort()) lines.push(`  ${rpc.padEnd(38)} ${[...row].sort().map(([k, n]) => `${k}=${n}`).join(' ')}`);
  lines.push(`  codes: ${[...r.byCode].sort().map(([k, n]) => `${k}=${n}`).join(' ')}`);
  return lines;
}

/**
 * Undoes what OK answers of the fuzz made (in reverse order of the CSI calls); returns what failed.
 * ABORTED is retried, as the sidecars and kubelet do: a FUSE daemon still flushing after an unmount,
 * or the node's healer looking at a volume, is an operation in progress, not a failure.
 */
export async function undoMade(c: CsiClients, r: FuzzResult, secrets: Record<Backend, Record<string, string>>): Promise<string[]> {
  const problems: string[] = [];
  const backendOf = (id: string): Backend => (id.split(':')[2] as Backend) ?? 'rbd';
  const tryIt = async (what: string, f: () => Promise<unknown>) => {
    try {
      await retryAborted(f);
    } catch (e) {
      problems.push(`${what}: ${(e as grpc.ServiceError).code ? grpc.status[(e as grpc.ServiceError).code] : ''} ${(e as Error).message}`);
    }
  };
  for (const t of r.made.targets) await tryIt(`NodeUnpublish ${t.path}`, () => c.node.NodeUnpublishVolume({ volume_id: t.volumeId, target_path: t.path }));
  for (const t of r.made.stages) await tryIt(`NodeUnstage ${t.path}`, () => c.node.NodeUnstageVolume({ volume_id: t.volumeId, staging_target_path: t.path }));
  for (const p of r.made.publishes) await tryIt(`ControllerUnpublish ${p.volumeId} ${JSON.stringify(p.nodeId)}`, () => c.controller.ControllerUnpublishVolume({ volume_id: p.volumeId, node_id: p.nodeId, secrets: secrets[backendOf(p.volumeId)] }));
  for (const s of r.made.snapshots) await tryIt(`DeleteSnapshot ${s}`, () => c.controller.DeleteSnapshot({ snapshot_id: s, secrets: secrets[backendOf(s)] }));
  for (const v of r.made.volumes) await tryIt(`DeleteVolume ${v}`, () => c.controller.DeleteVolume({ volume_id: v, secrets: secrets[backendOf(v)] }));
  return problems;
}

/**
 * Deletes, through the driver, every snapshot and volume it lists but `keep`:
 * what fuzz requests made although their answer was lost (a deadline, a dropped
 * connection). Returns what it deleted, so the test can say so.
 */
export async function deleteListed(c: CsiClients, keep: Set<string>, secrets: Record<Backend, Record<string, string>>): Promise<string[]> {
  const backendOf = (id: string): Backend => (id.split(':')[2] as Backend) ?? 'rbd';
  const done: string[] = [];
  const snaps = (await c.controller.ListSnapshots({}))!.entries ?? [];
  for (const e of snaps) {
    const id = e.snapshot!.snapshot_id!;
    if (keep.has(id)) continue;
    await retryAborted(() => c.controller.DeleteSnapshot({ snapshot_id: id, secrets: secrets[backendOf(id)] }));
    done.push(id);
  }
  const vols = (await c.controller.ListVolumes({}))!.entries ?? [];
  for (const e of vols) {
    const id = e.volume!.volume_id!;
    if (keep.has(id)) continue;
    for (const node of e.status?.published_node_ids ?? []) await retryAborted(() => c.controller.ControllerUnpublishVolume({ volume_id: id, node_id: node, secrets: secrets[backendOf(id)] }));
    await retryAborted(() => c.controller.DeleteVolume({ volume_id: id, secrets: secrets[backendOf(id)] }));
    done.push(id);
  }
  return done;
}

// ---------------------------------------------------------------------------
// Ceph side
// ---------------------------------------------------------------------------

/** Everything Strata can leave in the lab: images (and trash), subvolumes, strata users, buckets. */
export async function cephLeftovers(lab: CephLab): Promise<string[]> {
  const out: string[] = [];
  if (lab.components.includes('rbd')) {
    for (const i of JSON.parse((await lab.rbd(['ls', '-p', 'rbd', '--format', 'json'])) || '[]') as string[]) out.push(`rbd image ${i}`);
    for (const i of JSON.parse((await lab.rbd(['trash', 'ls', '-p', 'rbd', '--format', 'json'])) || '[]') as Array<{ name: string }>) out.push(`rbd trash ${i.name}`);
  }
  if (lab.hasCephFS) {
    for (const s of JSON.parse(await lab.ceph(['fs', 'subvolume', 'ls', 'cephfs', '--group_name', 'csi', '-f', 'json'])) as Array<{ name: string }>) out.push(`subvolume ${s.name}`);
    for (const s of JSON.parse(await lab.ceph(['fs', 'subvolume', 'ls', 'cephfs', '-f', 'json'])) as Array<{ name: string }>) out.push(`subvolume (no group) ${s.name}`);
  }
  const auth = JSON.parse(await lab.ceph(['auth', 'ls', '-f', 'json'])) as { auth_dump: Array<{ entity: string }> };
  for (const a of auth.auth_dump) if (a.entity.startsWith('client.strata')) out.push(`ceph user ${a.entity}`);
  if (lab.hasS3) {
    const s3 = labS3Client(lab);
    try {
      for (const b of (await s3.send(new ListBucketsCommand({}))).Buckets ?? []) out.push(`bucket ${b.Name}`);
    } finally {
      s3.destroy();
    }
  }
  return out;
}

/** The pid of this lab's ceph-mgr, from /proc (the lab does not say). */
export function mgrPid(lab: CephLab): number | undefined {
  for (const ent of readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    try {
      const argv = readFileSync(`/proc/${ent}/cmdline`, 'utf8').split('\0');
      if (argv[0]?.endsWith('ceph-mgr') && argv.includes(lab.conf)) return Number(ent);
    } catch {
      /* exited */
    }
  }
  return undefined;
}
