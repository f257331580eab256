import { createRequire } from 'node:module';
import { constants } from 'node:os';
import type { Logger } from 'pino';
import { ExecError, timeLeft } from '../util/exec.js';

/**
 * umount(2) and bind mounts as system calls, through the native addon
 * (native/strata_mount.cc, built by `npm run build`): the node's hottest
 * mount work without a process each. Failures are ExecErrors whose exit code
 * is the errno, as a failed `umount` or `mount` process gave, and that name it.
 */

interface MountAddon {
  umount(target: string, lazy: boolean): Promise<void>;
  bind(source: string, target: string): Promise<void>;
}

const addon = createRequire(import.meta.url)('../../../native/build/strata_mount.node') as MountAddon;

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));

const errnoName = (n: number | undefined): string | undefined => (n === undefined ? undefined : ERRNO_NAMES.get(n));

/**
 * The call bounded as a command is: it waits at most `timeoutMs`, cut to what is left of the
 * gRPC call. A system call cannot be killed; one that outlives the wait finishes on its own
 * thread, and the mount table, read again by the caller, says what it did.
 */
async function bounded(what: string, call: () => Promise<void>, timeoutMs: number, log?: Logger): Promise<void> {
  const ms = timeLeft(what, timeoutMs);
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new ExecError(what, undefined, `no answer within ${ms} ms`, true)), ms)));
  try {
    await Promise.race([
      call().catch((e: Error & { errno?: number }) => {
        throw new ExecError(what, e.errno, `${e.message}${errnoName(e.errno) ? ` (${errnoName(e.errno)})` : ''}`, false);
      }),
      late,
    ]);
  } finally {
    clearTimeout(timer);
    log?.debug({ syscall: what, ms: Date.now() - started }, 'syscall');
  }
}

/** umount2(target, UMOUNT_NOFOLLOW), with MNT_DETACH when lazy. */
export function umount2(target: string, lazy: boolean, timeoutMs: number, log?: Logger): Promise<void> {
  return bounded('umount', () => addon.umount(target, lazy), timeoutMs, log);
}

/** mount(source, target, MS_BIND): `mount --bind source target`. */
export function bind(source: string, target: string, timeoutMs: number, log?: Logger): Promise<void> {
  return bounded('mount --bind', () => addon.bind(source, target), timeoutMs, log);
}

export const EBUSY = constants.errno.EBUSY;
export const EINVAL = constants.errno.EINVAL;
