import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CephLab } from '../lab/ceph-lab.js';
import { startDriver, type DriverProcess } from '../helpers/driver.js';
import { leftovers } from '../helpers/leftovers.js';
import { CLIENT_PREFIX, firstArray } from '../../src/backends/rbd/fence.js';
import { encodeNodeKey } from '../../src/csi/grammar.js';
import { ATTACH_PREFIX } from '../../src/backends/attachments.js';

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

/**
 * Writes and fsyncs from a child process with a time limit, so that a write
 * into a fenced (or frozen) mount can neither hang nor crash the test
 * process. True when the data was acknowledged as durable.
 */
export function syncWrite(file: string, text: string, timeoutMs = 30_000): { ok: boolean; detail: string } {
  const r = spawnSync('python3', ['-c', 'import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT|os.O_TRUNC,0o644)\nos.write(fd,sys.argv[2].encode())\nos.fsync(fd)\nos.close(fd)', file, text], { timeout: timeoutMs, encoding: 'utf8' });
  return { ok: r.status === 0, detail: r.error ? String(r.error) : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`) };
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

/**
 * Kills a node plugin (-9) and starts it again on the same state, as a node
 * coming back after being fenced, then waits for it to release the volume
 * staged under `volumeDir`: "volume released" logged, no mount or FUSE
 * daemon left (`daemonGone` for one serving elsewhere). Its healer passes
 * at start only, and again only where that pass could not finish.
 */
export async function restartAndRelease(node: DriverProcess, config: string, nodeId: string, volumeDir: string, daemonGone: () => boolean = () => true): Promise<DriverProcess> {
  node.child.kill('SIGKILL');
  await until(`${nodeId} plugin to exit`, () => node.child.exitCode !== null || node.child.signalCode !== null);
  const again = await startDriver({ config, mode: 'node', nodeId, dir: node.dir, args: ['--heal-interval', '0'] });
  try {
    await until(`${nodeId} to release the volume`, async () => readFileSync(again.logFile, 'utf8').includes('"volume released"') && (await leftovers(volumeDir)).length === 0 && daemonGone());
  } catch (e) {
    const warnings = readFileSync(again.logFile, 'utf8').split('\n').filter((l) => /"level":(40|50|60)/.test(l)).slice(-8);
    throw new Error(`${(e as Error).message}; left: ${(await leftovers(volumeDir)).join(', ') || 'nothing'}; plugin warnings:\n${warnings.join('\n')}`);
  }
  return again;
}
