import { execa, type Options } from 'execa';
import type { Logger } from 'pino';
import { boundedTimeout, currentCall, stopReason } from './call-context.js';

/**
 * The one place Strata spawns processes. Arguments are always an array (no
 * shell), every call has a timeout well under kubelet's 2-minute RPC deadline,
 * cut to what is left of the gRPC call's deadline, and is killed when the call
 * stops (deadline passed or client gone). Secrets travel by file or
 * environment, never argv. Callers get a typed
 * ExecError carrying the exit code and stderr so they can map known failures
 * (ENOENT, EBUSY...) to CSI codes.
 */

export const DEFAULT_TIMEOUT_MS = 60_000;

export interface RunOptions {
  timeoutMs?: number;
  /** Extra environment, merged over the process env (used for CEPH_ARGS). */
  env?: Record<string, string>;
  /** Variables of the process env the command must not see (e.g. AWS_CA_BUNDLE for rclone). */
  unsetEnv?: string[];
  input?: string;
  log?: Logger;
  /** Run detached in its own session (FUSE daemons must outlive the RPC). */
  cwd?: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** The first lines of a tool's stderr that say something (usage dumps and log noise cut). */
function summarize(stderr: string): string {
  return stderr
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .slice(0, 2)
    .join(' / ')
    .slice(0, 400);
}

export class ExecError extends Error {
  /**
   * `timedOut`: the command ran out of time (its own timeout or the call's
   * deadline). `unavailable`: the tool could not reach the storage or died
   * (the rados client process), so a retry may well succeed.
   */
  constructor(
    readonly cmd: string,
    readonly exitCode: number | undefined,
    readonly stderr: string,
    readonly timedOut: boolean,
    readonly unavailable = false,
  ) {
    super(`${cmd} failed${timedOut ? ' (timed out)' : exitCode === undefined ? '' : ` with exit code ${exitCode}`}: ${summarize(stderr)}`);
    this.name = 'ExecError';
  }
}

/** The error for a command not started, or killed, because its call's deadline passed or its client left. */
export function stoppedError(cmd: string, why: string): ExecError {
  return new ExecError(cmd, undefined, why, true);
}

/**
 * The time `what` (a command, a request to the rados client, a system call) may take: `ownMs`,
 * cut to what is left of the current call. Throws the stopped error when the call has stopped
 * or has no time left, so that nothing is started for a call no one waits for.
 */
export function timeLeft(what: string, ownMs: number): number {
  const why = stopReason();
  if (why) throw stoppedError(what, why.message);
  const ms = boundedTimeout(ownMs);
  if (ms <= 0) throw stoppedError(what, "no time left before the call's deadline");
  return ms;
}

/** Runs a command and returns its output; throws ExecError on non-zero exit. */
export async function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await runAllowFail(file, args, opts);
  if (r.exitCode !== 0) throw new ExecError(file + ' ' + (args[0] ?? ''), r.exitCode, r.stderr, false);
  return r;
}

function withoutKeys(env: NodeJS.ProcessEnv, keys: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && !keys.includes(k)) out[k] = v;
  return out;
}

/** Runs a command and returns its output whatever the exit code. */
export async function runAllowFail(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeout = timeLeft(file, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const started = Date.now();
  const options: Options = {
    timeout,
    cancelSignal: currentCall()?.signal,
    reject: false,
    stripFinalNewline: true,
    env: opts.unsetEnv ? { ...withoutKeys(process.env, opts.unsetEnv), ...opts.env } : opts.env,
    extendEnv: !opts.unsetEnv,
    input: opts.input,
    cwd: opts.cwd,
    killSignal: 'SIGKILL',
  };
  const r = await execa(file, args, options);
  opts.log?.debug({ cmd: file, args: args.slice(0, 3), exitCode: r.exitCode, ms: Date.now() - started }, 'exec');
  if (r.timedOut) throw new ExecError(file, undefined, `no answer within ${timeout} ms; ${String(r.stderr ?? '')}`, true);
  if (r.isCanceled) throw stoppedError(file, stopReason()?.message ?? 'the call stopped');
  if (r.failed && r.exitCode === undefined) {
    // Spawn failures (binary missing, EACCES) never got an exit code.
    throw new ExecError(file, undefined, r.message ?? 'spawn failed', false);
  }
  return { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), exitCode: r.exitCode ?? -1 };
}
