import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CephLab } from '../lab/ceph-lab.js';
import { CLIENT_PREFIX, firstArray } from '../../src/backends/rbd/fence.js';
import { encodeNodeKey } from '../../src/csi/grammar.js';
import { ATTACH_PREFIX } from '../../src/backends/attachments.js';
import { S3Store } from '../../src/backends/s3/store.js';

/** What fencing tests look at: FUSE daemons by the directory they serve, the image's records, the blocklist. */

/** The pids of FUSE daemons (rbd-fuse, ceph-fuse...) whose command line names a path under `dir`. */
export function fusePids(dir: string, tool = /(rbd-fuse|ceph-fuse|s3fs|rclone)$/): number[] {
  const pids: number[] = [];
  for (const ent of readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    try {
      const argv = readFileSync(`/proc/${ent}/cmdline`, 'utf8').split('\0');
      if (tool.test(argv[0] ?? '') && argv.some((a) => a.startsWith(dir + '/'))) pids.push(Number(ent));
    } catch {
      /* exited */
    }
  }
  return pids;
}

const WRITE_AND_FSYNC = 'import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT|os.O_TRUNC,0o644)\nos.write(fd,sys.argv[2].encode())\nos.fsync(fd)\nos.close(fd)';

/**
 * Writes and fsyncs from a child process with a time limit, so that a write
 * into a fenced (or frozen) mount can neither hang nor crash the test
 * process. True when the data was acknowledged as durable.
 */
export function syncWrite(file: string, text: string, timeoutMs = 30_000): { ok: boolean; detail: string } {
  const r = spawnSync('python3', ['-c', WRITE_AND_FSYNC, file, text], { timeout: timeoutMs, encoding: 'utf8' });
  return { ok: r.status === 0, detail: r.error ? String(r.error) : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`) };
}

export interface WriteResult {
  ok: boolean;
  detail: string;
}

/**
 * The same write, waited for `waitMs` at most and never past: a request its
 * FUSE daemon never answers leaves the writer in uninterruptible sleep, which
 * no signal ends (spawnSync would wait on it for ever). A write still running
 * then is not acknowledged; `settled` is its real end, when its mount lets
 * it go.
 */
export async function writeWithin(file: string, text: string, waitMs = 30_000): Promise<WriteResult & { settled: Promise<WriteResult> }> {
  const child = spawn('python3', ['-c', WRITE_AND_FSYNC, file, text], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const settled = new Promise<WriteResult>((resolve) =>
    child.on('close', (code) => resolve({ ok: code === 0, detail: stderr.trim().split('\n').pop() || `exit ${code}` })),
  );
  let timer: NodeJS.Timeout | undefined;
  const unanswered = new Promise<WriteResult>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, detail: `no answer in ${waitMs / 1000} s: still waiting on its mount` }), waitMs);
  });
  const first = await Promise.race([settled, unanswered]);
  clearTimeout(timer);
  return { ...first, settled };
}

/**
 * A thawed, fenced node tries a new file and an overwrite of its pre-failure
 * file `a.txt` in `target`: both must be refused. `say` reports how they failed.
 */
export function assertFencedWritesRefused(target: string, say: (m: string) => void): void {
  const late = syncWrite(path.join(target, 'late.txt'), 'from node-a, after the fence');
  const over = syncWrite(path.join(target, 'a.txt'), 'overwritten by node-a after the fence');
  say(`fenced node's writes fail with: ${late.detail} / ${over.detail}`);
  assert.equal(late.ok, false, 'a new file from the fenced node is refused');
  assert.equal(over.ok, false, 'an overwrite from the fenced node is refused');
}

/** Whether the lab's Ceph still knows a user (a CephFS node user is removed when its node is fenced). */
export async function cephUserExists(lab: CephLab, user: string): Promise<boolean> {
  return (await lab.cephAllowFail(['auth', 'get', `client.${user}`])).exitCode === 0;
}

/** Whether RGW still knows a node's S3 key (`ctx`: the publish context that handed it over). */
export async function s3KeyValid(lab: CephLab, ctx: Record<string, string>): Promise<boolean> {
  const store = new S3Store({ endpoint: lab.s3Endpoint, region: 'us-east-1' }, { accessKeyID: ctx.accessKeyID!, secretAccessKey: ctx.secretAccessKey! });
  try {
    return await store.knowsKey();
  } finally {
    store.destroy();
  }
}

export async function imageMeta(lab: CephLab, image: string): Promise<Record<string, string>> {
  const out = await lab.rbd(['image-meta', 'list', `rbd/${image}`, '--format', 'json']);
  return out.trim() ? (JSON.parse(out) as Record<string, string>) : {};
}

export const clientRecordOf = (meta: Record<string, string>, node: string): { addrs: string[] } | undefined => {
  const v = meta[CLIENT_PREFIX + encodeNodeKey(node)];
  return v === undefined ? undefined : (JSON.parse(v) as { addrs: string[] });
};

export const attachedTo = (meta: Record<string, string>, node: string): boolean => meta[ATTACH_PREFIX + encodeNodeKey(node)] !== undefined;

export async function watchers(lab: CephLab, image: string): Promise<string[]> {
  const s = JSON.parse(await lab.rbd(['status', `rbd/${image}`, '--format', 'json'])) as { watchers?: Array<{ address: string }> };
  return (s.watchers ?? []).map((w) => w.address).sort();
}

/** The OSD blocklist: address to expiry. */
export async function blocklist(lab: CephLab): Promise<Map<string, string>> {
  const out = await lab.ceph(['osd', 'blocklist', 'ls', '--format', 'json']);
  const list = out.trim() ? (JSON.parse(firstArray(out)) as Array<{ addr: string; until: string }>) : [];
  return new Map(list.map((e) => [e.addr, e.until]));
}

export async function until(what: string, ok: () => boolean | Promise<boolean>, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

export const imageOf = (volumeId: string): string => volumeId.split(':').pop()!;
