import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { aborted } from '../errors.js';
import { boundedTimeout } from '../util/call-context.js';
import { unmount, unmountLazy } from './mounter.js';
import { findMount } from './mountinfo.js';

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

/**
 * Waits for a FUSE daemon to finish, within what is left of the call. One
 * that takes longer (rbd-fuse waiting out a dead client's lock, an upload
 * still running) is not a failure: the answer is ABORTED, and the retry,
 * finding the daemon by its command line, waits on.
 */
export async function waitExit(pid: number, timeoutMs: number, what = 'the FUSE daemon'): Promise<void> {
  const deadline = Date.now() + boundedTimeout(timeoutMs);
  while (!hasExited(pid)) {
    if (Date.now() >= deadline) throw aborted(`${what} (pid ${pid}) is still flushing after the unmount; retry`);
    await sleep(20);
  }
}

/**
 * Unmounts a FUSE mount and waits for its daemon: FUSE daemons flush on the
 * way out, so the unmount is complete only once the daemon has exited. The
 * daemon is looked for whether or not the mount is still there, so a retry
 * after an unmount that did not wait long enough waits for the same daemon.
 */
export async function unmountFuse(dir: string, binary: string | string[], timeoutMs: number, log?: Logger, opts: { lazy?: boolean; pid?: number } = {}): Promise<void> {
  // A caller that looked the daemon up already says so: a look is a read of every process's command line.
  const pid = 'pid' in opts ? opts.pid : fuseDaemonPid(binary, dir);
  if (await findMount(dir)) await (opts.lazy ? unmountLazy(dir, log) : unmount(dir, log));
  if (pid) await waitExit(pid, timeoutMs, typeof binary === 'string' ? binary : binary.join('/'));
}
