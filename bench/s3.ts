import { closeSync, fsyncSync, mkdirSync, openSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import pLimit from 'p-limit';
import { CopyObjectCommand, CreateBucketCommand, DeleteBucketCommand, DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import { CephLab, LAB_RGW_ADMIN, LAB_S3 } from '../test/lab/ceph-lab.js';
import { labS3Client } from '../test/helpers/s3.js';
import { MiB, mountCap } from '../test/helpers/volumes.js';
import { run } from '../src/util/exec.js';
import { fuseDaemonPid, waitExit } from '../src/mount/fuse-process.js';
import { ROW_HEADER, compareRow, printRss, processRss } from './stats.js';
import { benchDrivers, unpublishAndUnstage } from './driver.js';

/**
 * S3 benchmark on the lab's RGW: each CSI call beside the bare SDK calls or
 * commands doing the same work, at concurrency 1 and 16, and the throughput
 * of a sequential write and read through the mount beside the SDK's own
 * PUT/GET, in one run; then the RSS of the controller and node processes.
 * Prints figures; asserts nothing (targets are in the README).
 *
 * "The same work" per row (a bucket per volume, with a bucket quota):
 *   CreateVolume          CreateBucket; PutObject of the mount root; the quota PUT on RGW's admin API
 *                         (owner known); PutObject of the record
 *   DeleteVolume          ListObjectsV2; DeleteObjects; DeleteBucket
 *   NodeStage+Publish     s3fs <bucket>:/fs with a passwd file; mount --bind (ControllerPublish untimed)
 *   NodeUnpublish+Unstage umount x2; wait for s3fs to exit
 *   Snapshot, 1000 objects CreateSnapshot until ready_to_use vs 1000 CopyObject, 16 at a time
 * Throughput: 256 MiB written (write + fsync + close) and read back cold (after a fresh
 * mount) through each mounter, vs one SDK PutObject and GetObject of the same bytes;
 * the median of three rounds.
 */

const N = 8;
const SIZE = 64 * MiB;
const SEQ = 256 * MiB;
const OBJECTS = 1000;
const ROUNDS = 3;
const cap = mountCap('', 'MULTI_NODE_MULTI_WRITER');
const secrets = { accessKeyID: LAB_S3.accessKeyID, secretAccessKey: LAB_S3.secretAccessKey };

const lab = await CephLab.start({ components: ['s3'] });
const drivers = await benchDrivers(lab);
const { ctrl, node, c } = drivers;
const s3 = labS3Client(lab);
const work = path.join(node.dir, 'bench');
const passwd = path.join(work, 'passwd');
mkdirSync(work, { recursive: true });
writeFileSync(passwd, `${LAB_S3.accessKeyID}:${LAB_S3.secretAccessKey}`, { mode: 0o600 });
const dirs = (kind: string, i: number | string) => ({ staging: path.join(work, `${kind}-${i}`, 'staging'), target: path.join(work, `${kind}-${i}`, 'target') });
const bareS3fs = (bucket: string, staging: string) =>
  run('s3fs', [`${bucket}:/fs`, staging, '-o', `passwd_file=${passwd},url=${lab.s3Endpoint},use_path_request_style,endpoint=us-east-1,allow_other`], { timeoutMs: 30_000 });
const bareUnmount = async (d: { staging: string; target: string }) => {
  const pid = fuseDaemonPid('s3fs', d.staging);
  await run('umount', [d.target], { timeoutMs: 30_000 });
  await run('umount', [d.staging], { timeoutMs: 30_000 });
  if (pid) await waitExit(pid, 60_000);
};
await sleep(1000);
const pids = { controller: ctrl.child.pid!, node: node.child.pid! };
const idle = processRss(pids);
const mibps = (bytes: number, ms: number) => (bytes / MiB / (ms / 1000)).toFixed(0).padStart(5);

async function timed(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

function writeFile(file: string, data: Buffer): void {
  const fd = openSync(file, 'w');
  try {
    for (let off = 0; off < data.length; off += 4 * MiB) writeSync(fd, data, off, Math.min(4 * MiB, data.length - off));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function readFile(file: string): number {
  const fd = openSync(file, 'r');
  const buf = Buffer.alloc(4 * MiB);
  let total = 0;
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) total += n;
  } finally {
    closeSync(fd);
  }
  return total;
}

/** The quota PUT the driver makes through RGW's admin API, with the owner known (the lab's S3 user). */
const adminSigner = new SignatureV4({ credentials: { accessKeyId: LAB_RGW_ADMIN.accessKeyID, secretAccessKey: LAB_RGW_ADMIN.secretAccessKey }, region: 'us-east-1', service: 's3', sha256: Sha256 });
async function bareQuota(bucket: string, bytes: number): Promise<void> {
  const url = new URL('/admin/bucket', lab.s3Endpoint);
  const query = { quota: '', uid: 'lab', bucket };
  const body = JSON.stringify({ enabled: true, max_size: bytes, max_objects: -1, check_on_raw: true });
  const signed = await adminSigner.sign({ method: 'PUT', protocol: url.protocol, hostname: url.hostname, port: Number(url.port), path: url.pathname, query, headers: { host: url.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' }, body });
  const r = await fetch(`${url.origin}${url.pathname}?quota&uid=lab&bucket=${bucket}`, { method: 'PUT', headers: signed.headers, body });
  await r.text();
  if (!r.ok) throw new Error(`quota: HTTP ${r.status}`);
}

/** Volumes of round `conc`, kept for the snapshot and throughput parts (round 1's). */
const ids: string[] = [];
const vols: Array<Record<string, string>> = [];

async function round(conc: number, n: number): Promise<void> {
  const bare = (i: number) => `bare-${conc}-${i}`;
  const row = (op: string, driver: (i: number) => Promise<unknown>, baseline: (i: number) => Promise<unknown>, kind: 'sdk' | 'cli' = 'sdk') => compareRow(op, conc, n, kind, driver, baseline);
  const rid: string[] = [];
  const rvol: Array<Record<string, string>> = [];
  await row(
    'CreateVolume',
    async (i) => {
      const v = (await c.controller.CreateVolume({ name: `b${conc}-${i}`, capacity_range: { required_bytes: SIZE }, volume_capabilities: [cap], parameters: { backend: 's3', clusterID: 'lab' }, secrets }))!.volume!;
      rid[i] = v.volume_id!;
      rvol[i] = v.volume_context as Record<string, string>;
    },
    async (i) => {
      await s3.send(new CreateBucketCommand({ Bucket: bare(i) }));
      await s3.send(new PutObjectCommand({ Bucket: bare(i), Key: 'fs/', Body: Buffer.alloc(0) }));
      await bareQuota(bare(i), SIZE);
      await s3.send(new PutObjectCommand({ Bucket: bare(i), Key: '.strata/record.json', Body: JSON.stringify({ v: 1, name: bare(i) }), ContentType: 'application/json' }));
    },
  );
  for (let i = 0; i < n; i++) await c.controller.ControllerPublishVolume({ volume_id: rid[i]!, node_id: 'bench-node', volume_capability: cap, secrets });
  await row(
    'NodeStage+NodePublish',
    async (i) => {
      const d = dirs(`drv-${conc}`, i);
      mkdirSync(d.staging, { recursive: true });
      await c.node.NodeStageVolume({ volume_id: rid[i]!, staging_target_path: d.staging, volume_capability: cap, volume_context: rvol[i]!, secrets });
      await c.node.NodePublishVolume({ volume_id: rid[i]!, staging_target_path: d.staging, target_path: d.target, volume_capability: cap, volume_context: rvol[i]! });
    },
    async (i) => {
      const d = dirs(`bare-${conc}`, i);
      mkdirSync(d.staging, { recursive: true });
      mkdirSync(d.target, { recursive: true });
      await bareS3fs(bare(i), d.staging);
      await run('mount', ['--bind', d.staging, d.target], { timeoutMs: 30_000 });
    },
    'cli',
  );
  await row(
    'NodeUnpublish+NodeUnstage',
    (i) => unpublishAndUnstage(c.node, rid[i]!, dirs(`drv-${conc}`, i)),
    (i) => bareUnmount(dirs(`bare-${conc}`, i)),
    'cli',
  );
  if (conc === 1) {
    ids.push(...rid);
    vols.push(...rvol);
    return;
  }
  for (let i = 0; i < n; i++) await c.controller.ControllerUnpublishVolume({ volume_id: rid[i]!, node_id: 'bench-node', secrets });
  await row(
    'DeleteVolume',
    (i) => c.controller.DeleteVolume({ volume_id: rid[i]!, secrets }),
    async (i) => {
      const keys = ((await s3.send(new ListObjectsV2Command({ Bucket: bare(i) }))).Contents ?? []).map((o) => ({ Key: o.Key! }));
      await s3.send(new DeleteObjectsCommand({ Bucket: bare(i), Delete: { Objects: keys, Quiet: true } }));
      await s3.send(new DeleteBucketCommand({ Bucket: bare(i) }));
    },
  );
}

try {
  console.log(`S3 benchmark: Ceph RGW lab on this machine, a bucket per volume with its quota; milliseconds`);
  console.log(ROW_HEADER);
  await round(1, N);
  await round(16, 32);
  // DeleteVolume at concurrency 1 on volumes of their own (round 1's stay for the snapshot and throughput parts).
  {
    const extra: string[] = [];
    for (let i = 0; i < N; i++) {
      extra[i] = (await c.controller.CreateVolume({ name: `d-${i}`, capacity_range: { required_bytes: SIZE }, volume_capabilities: [cap], parameters: { backend: 's3', clusterID: 'lab' }, secrets }))!.volume!.volume_id!;
      await s3.send(new CreateBucketCommand({ Bucket: `bare-d-${i}` }));
      await s3.send(new PutObjectCommand({ Bucket: `bare-d-${i}`, Key: 'fs/', Body: Buffer.alloc(0) }));
      await s3.send(new PutObjectCommand({ Bucket: `bare-d-${i}`, Key: '.strata/record.json', Body: '{}' }));
    }
    await compareRow(
      'DeleteVolume',
      1,
      N,
      'sdk',
      (i) => c.controller.DeleteVolume({ volume_id: extra[i]!, secrets }),
      async (i) => {
        const keys = ((await s3.send(new ListObjectsV2Command({ Bucket: `bare-d-${i}` }))).Contents ?? []).map((o) => ({ Key: o.Key! }));
        await s3.send(new DeleteObjectsCommand({ Bucket: `bare-d-${i}`, Delete: { Objects: keys, Quiet: true } }));
        await s3.send(new DeleteBucketCommand({ Bucket: `bare-d-${i}` }));
      },
    );
  }
  for (let i = 0; i < N; i++) await c.controller.ControllerUnpublishVolume({ volume_id: ids[i]!, node_id: 'bench-node', secrets });
  printRss(idle, processRss(pids));
  // Snapshot of 1000 small objects: the driver's copy vs the same CopyObjects straight from the SDK.
  console.log(`\n${ROW_HEADER}`);
  const limit = pLimit(32);
  const fill = (bucket: string, prefix: string) =>
    Promise.all(Array.from({ length: OBJECTS }, (_, k) => limit(() => s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}o/${k}`, Body: randomBytes(512) })))));
  await Promise.all(Array.from({ length: 3 }, (_, i) => fill(vols[i]!.bucket!, vols[i]!.prefix!)));
  await Promise.all(Array.from({ length: 3 }, (_, i) => fill(`bare-1-${i}`, 'fs/')));
  await compareRow(
    `Snapshot, ${OBJECTS} objects`,
    1,
    3,
    'sdk',
    async (i) => {
      for (;;) {
        const s = (await c.controller.CreateSnapshot({ source_volume_id: ids[i]!, name: `s-${i}`, secrets }))!.snapshot!;
        if (s.ready_to_use) break;
        await sleep(100);
      }
    },
    async (i) => {
      await s3.send(new CreateBucketCommand({ Bucket: `bare-snap-${i}` }));
      const keys = ((await s3.send(new ListObjectsV2Command({ Bucket: `bare-1-${i}`, Prefix: 'fs/' }))).Contents ?? []).map((o) => o.Key!);
      const copy = pLimit(16);
      await Promise.all(keys.map((k) => copy(() => s3.send(new CopyObjectCommand({ Bucket: `bare-snap-${i}`, Key: k, CopySource: `bare-1-${i}/${k}` })))));
    },
  );

  // Sequential throughput through each mounter vs the SDK, same bytes, same run. Rounds
  // interleave the paths so drift in the lab hits them alike; medians are printed.
  console.log(`\nThroughput, ${SEQ / MiB} MiB sequential, MiB/s, median of ${ROUNDS} rounds (write = write + fsync + close; read = cold, after a fresh mount)`);
  console.log(`${'path'.padEnd(26)}  write   read   write/SDK  read/SDK`);
  const data = randomBytes(SEQ);
  await s3.send(new CreateBucketCommand({ Bucket: 'bare-seq' }));
  const mounters = ['s3fs', 'rclone'] as const;
  const seqVols = new Map<string, { id: string; vc: Record<string, string> }>();
  for (const mounter of mounters) {
    const v = (await c.controller.CreateVolume({ name: `seq-${mounter}`, capacity_range: { required_bytes: 1024 * MiB }, volume_capabilities: [cap], parameters: { backend: 's3', clusterID: 'lab', mounter }, secrets }))!.volume!;
    seqVols.set(mounter, { id: v.volume_id!, vc: v.volume_context as Record<string, string> });
  }
  const mounted = async (mounter: string, fn: (file: string) => void) => {
    const { id, vc } = seqVols.get(mounter)!;
    const d = dirs('seq', mounter);
    mkdirSync(d.staging, { recursive: true });
    await c.node.NodeStageVolume({ volume_id: id, staging_target_path: d.staging, volume_capability: cap, volume_context: vc, secrets });
    await c.node.NodePublishVolume({ volume_id: id, staging_target_path: d.staging, target_path: d.target, volume_capability: cap, volume_context: vc });
    const ms = await timed(() => fn(path.join(d.target, 'seq.bin')));
    await unpublishAndUnstage(c.node, id, d);
    return ms;
  };
  const times = new Map<string, { w: number[]; r: number[] }>();
  for (const p of ['SDK', ...mounters]) times.set(p, { w: [], r: [] });
  for (let round = 0; round < ROUNDS; round++) {
    times.get('SDK')!.w.push(await timed(() => s3.send(new PutObjectCommand({ Bucket: 'bare-seq', Key: 'seq.bin', Body: data }))));
    times.get('SDK')!.r.push(
      await timed(async () => {
        const r = await s3.send(new GetObjectCommand({ Bucket: 'bare-seq', Key: 'seq.bin' }));
        let n = 0;
        for await (const chunk of r.Body as AsyncIterable<Buffer>) n += chunk.length;
        return n;
      }),
    );
    for (const mounter of mounters) {
      times.get(mounter)!.w.push(await mounted(mounter, (f) => writeFile(f, data)));
      times.get(mounter)!.r.push(await mounted(mounter, (f) => readFile(f)));
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const sdkWrite = median(times.get('SDK')!.w);
  const sdkRead = median(times.get('SDK')!.r);
  console.log(`${'SDK PutObject/GetObject'.padEnd(26)}  ${mibps(SEQ, sdkWrite)}  ${mibps(SEQ, sdkRead)}`);
  for (const mounter of mounters) {
    const w = median(times.get(mounter)!.w);
    const r = median(times.get(mounter)!.r);
    console.log(`${`mount (${mounter})`.padEnd(26)}  ${mibps(SEQ, w)}  ${mibps(SEQ, r)}   ${(sdkWrite / w).toFixed(2).padStart(8)}  ${(sdkRead / r).toFixed(2).padStart(8)}`);
    await c.controller.DeleteVolume({ volume_id: seqVols.get(mounter)!.id, secrets });
  }
} finally {
  s3.destroy();
  await drivers.stop();
}
