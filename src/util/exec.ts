import { execa, type Options } from 'execa';
import type { Logger } from 'pino';
import { deadlineExceeded, internal } from '../errors.js';

/**
 * The one place Strata spawns processes. Arguments are always an array (no
 * shell), every call has a timeout well under kubelet's 2-minute RPC deadline,
 * and secrets travel by file or environment, never argv. Callers get a typed
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
  constructor(
    readonly cmd: string,
    readonly exitCode: number | undefined,
    readonly stderr: string,
    readonly timedOut: boolean,
  ) {
    super(`${cmd} failed${timedOut ? ' (timed out)' : ` with exit code ${exitCode}`}: ${summarize(stderr)}`);
    this.name = 'ExecError';
  }
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
  const timeout = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const started = Date.now();
  const options: Options = {
    timeout,
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
  if (r.timedOut) throw new ExecError(file, undefined, String(r.stderr ?? ''), true);
  if (r.failed && r.exitCode === undefined) {
    // Spawn failures (binary missing, EACCES) never got an exit code.
    throw new ExecError(file, undefined, r.message ?? 'spawn failed', false);
  }
  return { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), exitCode: r.exitCode ?? -1 };
}

/** Maps an ExecError that timed out to DEADLINE_EXCEEDED, anything else to INTERNAL. */
export function toCsi(e: unknown, what: string): Error {
  if (e instanceof ExecError) {
    return e.timedOut ? deadlineExceeded(`${what}: timed out`) : internal(`${what}: ${e.stderr.trim().split('\n').slice(-2).join(' ')}`);
  }
  return e instanceof Error ? e : internal(String(e));
}
