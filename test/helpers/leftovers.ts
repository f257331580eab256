import { readdirSync, readFileSync } from 'node:fs';
import { readMountInfo } from '../../src/mount/mountinfo.js';

/** Mounts under `dir` and FUSE/loop processes mentioning it: anything a test run must not leave behind. */
export async function leftovers(dir: string): Promise<string[]> {
  const out = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(dir)).map((m) => `mount ${m.mountPoint}`);
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
