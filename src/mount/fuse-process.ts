import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { internal } from '../errors.js';

/** FUSE daemons found from /proc (no pid files to go stale), and waiting for them to finish. */

/** The process of `binary` (or of any of several) serving `dir`. */
export function fuseDaemonPid(binary: string | string[], dir: string): number | undefined {
  const names = typeof binary === 'string' ? [binary] : binary;
  for (const ent of readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    try {
      const argv = readFileSync(`/proc/${ent}/cmdline`, 'utf8').split('\0');
      if (names.some((b) => argv[0]?.endsWith(b)) && argv.includes(dir)) return Number(ent);
    } catch {
      /* exited meanwhile */
    }
  }
  return undefined;
}

/** FUSE daemons flush on the way out: an unmount is complete only once the daemon has exited. */
export async function waitExit(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await sleep(20);
  }
  throw internal(`FUSE process ${pid} did not exit after unmount`);
}
