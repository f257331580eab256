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

/**
 * Whether a process has finished. A daemon that exited stays a zombie until
 * its parent reaps it, and a FUSE daemon's parent is whatever adopted it: a
 * busy init reaps late, and a node plugin that is PID 1 of its container
 * never reaps what it did not spawn. A zombie still answers kill(pid, 0), so
 * the state letter in /proc/<pid>/stat decides (Z zombie, X dead).
 */
export function hasExited(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return true;
  }
  // The command name in parentheses may itself hold ") ": the state follows the last one.
  const state = stat.charAt(stat.lastIndexOf(')') + 2);
  return state === 'Z' || state === 'X';
}

/** FUSE daemons flush on the way out: an unmount is complete only once the daemon has exited. */
export async function waitExit(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (hasExited(pid)) return;
    await sleep(20);
  }
  throw internal(`FUSE process ${pid} did not exit after unmount`);
}
