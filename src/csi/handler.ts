import { randomBytes } from 'node:crypto';
import { status, type ServerUnaryCall, type sendUnaryData, type handleUnaryCall } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { CsiError, aborted } from '../errors.js';
import { ExecError } from '../util/exec.js';
import { observeRpc } from '../metrics.js';
import type { KeyedTryLock } from './locks.js';

/**
 * The single wrapper every RPC goes through: it gives each call a request id
 * and a child logger, logs the request with secrets censored, takes the
 * per-volume try-lock (ABORTED when busy), maps typed errors to gRPC status
 * codes, and logs timing. Handlers themselves stay small and only throw.
 */

export interface RpcContext {
  reqId: string;
  log: Logger;
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

function toStatus(e: unknown): { code: status; details: string } {
  if (e instanceof CsiError) return { code: e.code, details: e.message };
  if (e instanceof ExecError) return { code: e.timedOut ? status.DEADLINE_EXCEEDED : status.INTERNAL, details: e.message };
  return { code: status.INTERNAL, details: `internal error: ${(e as Error)?.message ?? String(e)}` };
}

export function wrap<Req, Res>(
  rt: RpcRuntime,
  method: string,
  fn: (req: Req, ctx: RpcContext) => Promise<Res>,
  opts: HandlerOptions<Req> = {},
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
    log.debug({ req: redact(req) }, 'request');
    rt.inflight.count++;
    let release: (() => void) | undefined;
    const finish = (err: { code: status; details: string } | null, res?: Res) => {
      release?.();
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
    const keys = (opts.lockKeys?.(req) ?? []).filter((k): k is string => !!k);
    if (keys.length) {
      release = rt.locks.tryAcquire(keys);
      if (!release) {
        const e = aborted(`an operation on ${keys.join(', ')} is already in progress`);
        finish({ code: e.code, details: e.message });
        return;
      }
    }
    fn(req, { reqId, log }).then(
      (res) => finish(null, res),
      (e) => finish(toStatus(e)),
    );
  };
}
