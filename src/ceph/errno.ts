import { ExecError } from '../util/exec.js';

/**
 * Ceph's answers carry an errno (librbd's, the mgr's, a mon's), kept as the
 * ExecError's exit code as from the CLI: callers tell "missing" (ENOENT) from
 * "exists" (EEXIST) from "busy" (EBUSY, or EAGAIN for a clone target).
 */
export const EPERM = 1;
export const ENOENT = 2;
export const EAGAIN = 11;
export const EACCES = 13;
export const EBUSY = 16;
export const EEXIST = 17;
export const EINVAL = 22;
export const ENOTEMPTY = 39;
/** librados answers a wait that timed out with a positive ETIMEDOUT. */
export const ETIMEDOUT = 110;

export function isErrno(e: unknown, code: number): boolean {
  return e instanceof ExecError && e.exitCode === code;
}
