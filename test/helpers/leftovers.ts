import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readMountInfo } from '../../src/mount/mountinfo.js';

/** Mounts under `dir`, loop devices over files in it and FUSE processes mentioning it: anything a test run must not leave behind. */
export async function leftovers(dir: string): Promise<string[]> {
  const out = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(dir)).map((m) => `mount ${m.mountPoint}`);
  for (const [loop, backing] of loopBackings()) if (backing.startsWith(dir + '/')) out.push(`loop ${loop} ${backing}`);
  for (const ent of readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    try {
      const argv = readFileSync(`/proc/${ent}/cmdline`, 'utf8').split('\0');
      if (/(rbd-fuse|ceph-fuse|s3fs|rclone)$/.test(argv[0] ?? '') && argv.some((a) => a.startsWith(dir))) out.push(`process ${ent} ${argv.join(' ')}`);
    } catch {
      /* exited */
    }
  }
  return out;
}

/** Every bound loop device with the file it reads. */
function loopBackings(): Map<string, string> {
  const out = new Map<string, string>();
  for (const loop of readdirSync('/sys/block').filter((d) => d.startsWith('loop'))) {
    try {
      out.set(`/dev/${loop}`, readFileSync(`/sys/block/${loop}/loop/backing_file`, 'utf8').trim());
    } catch {
      /* not bound */
    }
  }
  return out;
}

const loopsUnder = (dir: string): string[] => [...loopBackings()].filter(([, f]) => f.startsWith(dir + '/')).map(([l]) => l);

/**
 * Tears down whatever a failed test left under `dir`, even when the cluster
 * behind it is already gone: FUSE connections are aborted first (so nothing
 * blocks on a dead daemon), then mounts are lazily detached deepest first,
 * loop devices over files in `dir` released and FUSE daemons killed.
 */
export async function forceCleanup(dir: string): Promise<void> {
  const mounts = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(dir + '/'));
  // Found before the unmounts: a loop device over a file of a lazily detached mount is named from
  // that mount's root afterwards (`/<image>`), no longer from `dir`, and would be left behind.
  const loops = loopsUnder(dir);
  // The abort switch lives in fusectl, which a bare machine may not have mounted.
  if (!(await readMountInfo()).some((m) => m.fsType === 'fusectl')) spawnSync('mount', ['-t', 'fusectl', 'none', '/sys/fs/fuse/connections'], { timeout: 10_000 });
  for (const m of mounts.filter((m) => m.fsType.startsWith('fuse'))) {
    try {
      writeFileSync(`/sys/fs/fuse/connections/${m.majorMinor.split(":")[1]}/abort`, '1');
    } catch {
      /* already gone */
    }
  }
  for (const m of mounts.sort((x, y) => y.mountPoint.length - x.mountPoint.length)) spawnSync('umount', ['-l', m.mountPoint], { timeout: 10_000 });
  for (const loop of new Set([...loops, ...loopsUnder(dir)])) spawnSync('losetup', ['-d', loop], { timeout: 10_000 });
  for (const p of await leftovers(dir)) {
    const pid = /^process (\d+)/.exec(p)?.[1];
    if (pid) spawnSync('kill', ['-9', pid]);
  }
}
