import { randomBytes } from 'node:crypto';
import { status, type ServerUnaryCall, type ServiceDefinition, type sendUnaryData, type handleUnaryCall } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { CsiError, aborted } from '../errors.js';
import { ExecError } from '../util/exec.js';
import { CallScope } from '../util/call-context.js';
import { observeRpc } from '../metrics.js';
import type { KeyedTryLock } from './locks.js';

/**
 * The single wrapper every RPC goes through: it gives each call a request id
 * and a child logger, logs the request with secrets censored, takes the
 * per-volume try-lock (ABORTED when busy), runs the handler in a call scope
 * that follows the client's deadline and cancellation (commands, Ceph and S3
 * requests stop with it), maps errors to gRPC status codes, and logs timing.
 * Handlers themselves stay small and only throw.
 */

export interface RpcContext {
  reqId: string;
  log: Logger;
  /** Aborts when the call's deadline (less a margin) passes or its client cancels; none outside a call (the healer). */
  signal?: AbortSignal;
  /** Epoch ms of the client's deadline; undefined when it set none. */
  deadline?: number;
}

export interface RpcRuntime {
  log: Logger;
  locks: KeyedTryLock;
  /** Counts calls in flight so shutdown can wait for them. */
  inflight: { count: number; idle?: () => void };
  /** Set during shutdown: new calls are refused with UNAVAILABLE. */
  draining?: boolean;
}

export interface HandlerOptions<Req> {
  /** Keys to lock for the duration of the call (usually the volume id). */
  lockKeys?: (req: Req) => Array<string | undefined>;
}

export interface CheckedHandlerOptions<Req, C> extends HandlerOptions<Req> {
  /**
   * Checks the request before its lock is taken, and returns what the handler
   * needs from it (the parsed id, the backend). A malformed request is
   * answered as such even while another call holds its volume: ABORTED would
   * have the sidecar retry a request that can never succeed.
   */
  check: (req: Req) => C;
}

// Request fields that may hold credentials; redacted again here (besides
// pino's own censoring) so no log line depends on one mechanism.
const SECRET_FIELDS = new Set(['secrets', 'mount_flags', 'publish_context']);

export function redact(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redact);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (SECRET_FIELDS.has(k)) {
        const n = Array.isArray(v) ? v.length : v && typeof v === 'object' ? Object.keys(v).length : 0;
        out[k] = n ? `[redacted ${n}]` : v;
      } else out[k] = redact(v);
    }
    return out;
  }
  return value;
}

// Errnos (as a Ceph tool's exit code, or from the rados client) that say the cluster could not be reached.
const UNREACHABLE_ERRNOS = new Set([101, 103, 104, 107, 108, 111, 113]); // ENETUNREACH ECONNABORTED ECONNRESET ENOTCONN ESHUTDOWN ECONNREFUSED EHOSTUNREACH
const ETIMEDOUT = 110;
// Errnos of an operation that is busy or still in progress: the CO's retry is the answer.
const BUSY_ERRNOS = new Set([11, 16]); // EAGAIN EBUSY
const CEPH_TOOL = /^(ceph|rbd|rados)\b/;
const UNREACHABLE_TEXT = /error connecting to the cluster|couldn't connect to the cluster|authenticate timed out|failed to fetch mon config|no monitors? (?:reachable|specified)/i;
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT']);

/** The gRPC status for an error that reached the edge; INTERNAL only for what nothing here recognises. */
export function toStatus(e: unknown): { code: status; details: string } {
  if (e instanceof CsiError) return { code: e.code, details: e.message };
  if (e instanceof ExecError) {
    const ceph = CEPH_TOOL.test(e.cmd);
    if (e.timedOut || (ceph && e.exitCode === ETIMEDOUT && !UNREACHABLE_TEXT.test(e.stderr))) return { code: status.DEADLINE_EXCEEDED, details: e.message };
    if (e.unavailable || (ceph && (UNREACHABLE_ERRNOS.has(e.exitCode ?? 0) || e.exitCode === ETIMEDOUT || UNREACHABLE_TEXT.test(e.stderr)))) {
      return { code: status.UNAVAILABLE, details: e.message };
    }
    if (ceph && BUSY_ERRNOS.has(e.exitCode ?? 0)) return { code: status.ABORTED, details: `${e.message} (busy; retry)` };
    return { code: status.INTERNAL, details: e.message };
  }
  // Only a truncated or garbled answer from a tool or the storage makes a parse fail: retrying reads it again.
  if (e instanceof SyntaxError) return { code: status.UNAVAILABLE, details: `an answer from the storage could not be read (${e.message}); retry` };
  const netCode = (e as { code?: unknown })?.code;
  if (typeof netCode === 'string' && NETWORK_CODES.has(netCode)) return { code: status.UNAVAILABLE, details: `storage unreachable: ${netCode}` };
  return { code: status.INTERNAL, details: `internal error: ${(e as Error)?.message ?? String(e)}` };
}

// After its deadline passed, a handler gets this long to stop before its lock is taken back anyway.
export const STOP_GRACE_MS = 5000;

const MAX_DETAILS = 1024;

/** Marks a request whose bytes did not decode (see lenientService); the wrapper answers INVALID_ARGUMENT. */
export const MALFORMED = Symbol('malformed request');

/**
 * A service definition whose requests never fail to decode: grpc-js answers
 * a request it cannot deserialize with INTERNAL before any handler runs, so
 * undecodable bytes reach the wrapper marked instead, and get INVALID_ARGUMENT.
 */
export function lenientService<S extends ServiceDefinition>(svc: S): S {
  const out: Record<string, unknown> = {};
  for (const [name, def] of Object.entries(svc)) {
    out[name] = {
      ...def,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return def.requestDeserialize(bytes);
        } catch (e) {
          return { [MALFORMED]: (e as Error).message ?? String(e) };
        }
      },
    };
  }
  return out as S;
}

export function wrap<Req, Res>(
  rt: RpcRuntime,
  method: string,
  fn: (req: Req, ctx: RpcContext) => Promise<Res>,
  opts: HandlerOptions<Req> = {},
): handleUnaryCall<Req, Res> {
  return wrapChecked(rt, method, { ...opts, check: () => undefined }, (req, ctx) => fn(req, ctx));
}

/** wrap, with the request checked before its lock (the options come first so that the check's result types the handler). */
export function wrapChecked<Req, Res, C>(
  rt: RpcRuntime,
  method: string,
  opts: CheckedHandlerOptions<Req, C>,
  fn: (req: Req, ctx: RpcContext, checked: C) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    const reqId = randomBytes(6).toString('hex');
    const log = rt.log.child({ reqId, method });
    if (rt.draining) {
      callback({ code: status.UNAVAILABLE, details: 'driver is shutting down' });
      return;
    }
    const started = process.hrtime.bigint();
    const req = call.request;
    if (log.isLevelEnabled('debug')) log.debug({ req: redact(req) }, 'request');
    rt.inflight.count++;
    let release: (() => void) | undefined;
    const finish = (err: { code: status; details: string } | null, res?: Res) => {
      release?.();
      // Status details travel in a header: one that echoes a huge request string never reaches the client and wedges its connection.
      if (err && err.details.length > MAX_DETAILS) err = { ...err, details: `${err.details.slice(0, MAX_DETAILS)}…` };
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      observeRpc(method, err ? status[err.code] : 'OK', ms);
      if (err) {
        const lvl = err.code === status.INTERNAL || err.code === status.DEADLINE_EXCEEDED ? 'error' : 'info';
        log[lvl]({ code: status[err.code], ms, err: err.details }, 'rpc failed');
        callback(err);
      } else {
        log.info({ ms }, 'rpc ok');
        callback(null, res);
      }
      if (--rt.inflight.count === 0) rt.inflight.idle?.();
    };
    const malformed = (req as { [MALFORMED]?: string } | undefined)?.[MALFORMED];
    if (malformed !== undefined) {
      finish({ code: status.INVALID_ARGUMENT, details: `the request is not a valid ${method}Request message: ${malformed.slice(0, 200)}` });
      return;
    }
    let checked: C;
    try {
      checked = opts.check(req);
    } catch (e) {
      finish(toStatus(e));
      return;
    }
    const keys = (opts.lockKeys?.(req) ?? []).filter((k): k is string => !!k);
    if (keys.length) {
      release = rt.locks.tryAcquire(keys);
      if (!release) {
        const e = aborted(`an operation on ${keys.join(', ')} is already in progress`);
        finish({ code: e.code, details: e.message });
        return;
      }
    }
    const scope = new CallScope(deadlineOf(call));
    call.on?.('cancelled', () => scope.cancel());
    let answered = false;
    const answer = (err: { code: status; details: string } | null, res?: Res) => {
      if (answered) return;
      answered = true;
      finish(err, res);
    };
    // Last resort: a handler still running long after its call stopped must not hold the volume's lock for ever.
    let straggler: NodeJS.Timeout | undefined;
    scope.signal.addEventListener('abort', () => {
      straggler = setTimeout(() => {
        log.warn({ graceMs: STOP_GRACE_MS }, 'handler still running after its call stopped: lock released, answering now');
        answer(toStatus(scope.signal.reason));
      }, STOP_GRACE_MS);
    });
    scope
      .run(async () => fn(req, { reqId, log, signal: scope.signal, deadline: scope.deadline }, checked))
      .then(
        (res) => answer(null, res),
        (e) => answer(toStatus(scope.signal.aborted && !(e instanceof CsiError && e.code !== status.INTERNAL) ? scope.signal.reason : e)),
      )
      .finally(() => {
        if (straggler) clearTimeout(straggler);
        scope.settle();
      });
  };
}

/** The client's deadline in epoch ms, or undefined when it set none. */
function deadlineOf(call: ServerUnaryCall<unknown, unknown>): number | undefined {
  const d = call.getDeadline?.();
  if (d === undefined || d === Infinity) return undefined;
  const ms = d instanceof Date ? d.getTime() : Number(d);
  return Number.isFinite(ms) ? ms : undefined;
}
