import { AsyncLocalStorage } from 'node:async_hooks';
import { status } from '@grpc/grpc-js';
import { CsiError, deadlineExceeded } from '../errors.js';

/**
 * The gRPC call a piece of work belongs to, found through AsyncLocalStorage
 * so that the layers that talk to Ceph and S3 (exec, the rados client, the S3
 * store) follow the call's deadline without every backend signature carrying
 * it. The call's signal aborts a margin before the client's deadline, so the
 * answer (DEADLINE_EXCEEDED) still reaches the client, and when the client
 * cancels. Work outside any call (the node's healer) keeps its own timeouts.
 */

/** Commands end this long (at most a tenth of the call's time) before the client's deadline, leaving time to answer. */
export const DEADLINE_MARGIN_MS = 1000;

const MAX_TIMER_MS = 2 ** 31 - 1;

let begun = 0;
/** A number for work that is not a call (or a request made outside one), in the order calls and such work begin. */
export const nextOrder = (): number => ++begun;

export class CallScope {
  /** When this call began, relative to other calls: queues serve older calls first. */
  readonly order = nextOrder();
  private readonly controller = new AbortController();
  private readonly waiting: Array<() => void> = [];
  private readonly timer: NodeJS.Timeout | undefined;
  private done = false;
  /** Epoch ms at which the work stops: the deadline less the margin; undefined without a deadline. */
  readonly stopAt: number | undefined;

  /** `deadline`: epoch ms of the client's deadline, undefined when it gave none. */
  constructor(readonly deadline: number | undefined) {
    if (deadline !== undefined && Number.isFinite(deadline)) {
      const now = Date.now();
      this.stopAt = deadline - Math.min(DEADLINE_MARGIN_MS, Math.max(0, (deadline - now) / 10));
      const ms = Math.max(0, this.stopAt - now);
      // Timers cannot wait longer than 2^31-1 ms; such a deadline is as good as none.
      if (ms <= MAX_TIMER_MS) {
        this.timer = setTimeout(() => this.abort(deadlineExceeded("the call's deadline passed; its work was stopped")), ms);
      }
    }
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Stops the call's work; once the handler has settled there is nothing left to stop (grpc-js may report a cancel after the answer). */
  abort(reason: CsiError): void {
    if (!this.done && !this.controller.signal.aborted) this.controller.abort(reason);
  }

  /** The client went away: nobody waits for the answer, so the work stops. */
  cancel(): void {
    // grpc-js reports a cancel for calls already answered too: no error (and its stack) for those.
    if (!this.done) this.abort(new CsiError(status.CANCELLED, 'the client cancelled the call'));
  }

  /** Whether the call's handler has returned or thrown (work it left running still sees this scope). */
  get settled(): boolean {
    return this.done;
  }

  /** Runs fn once the call's work has settled (now if it already has). */
  onSettled(fn: () => void): void {
    if (this.done) fn();
    else this.waiting.push(fn);
  }

  /** The call's handler returned or threw: run what waited for it. */
  settle(): void {
    if (this.done) return;
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    for (const fn of this.waiting.splice(0)) fn();
  }

  run<T>(fn: () => T): T {
    return als.run(this, fn);
  }
}

const als = new AsyncLocalStorage<CallScope>();

export function currentCall(): CallScope | undefined {
  return als.getStore();
}

/** Why the current call's work must stop, or undefined while it may go on. */
export function stopReason(): CsiError | undefined {
  const c = als.getStore();
  return c?.signal.aborted ? (c.signal.reason as CsiError) : undefined;
}

/** Throws the call's stop reason when its deadline passed or its client left. */
export function throwIfStopped(): void {
  const why = stopReason();
  if (why) throw why;
}

/** A timeout cut to what is left of the current call's time (its deadline less the margin); at least 0. */
export function boundedTimeout(ownMs: number): number {
  const stopAt = als.getStore()?.stopAt;
  if (stopAt === undefined) return ownMs;
  return Math.max(0, Math.min(ownMs, stopAt - Date.now()));
}

/** A signal that aborts at ownMs or when the current call stops, whichever comes first. */
export function boundedSignal(ownMs: number): AbortSignal {
  const t = AbortSignal.timeout(Math.max(1, ownMs));
  const c = als.getStore();
  return c ? AbortSignal.any([c.signal, t]) : t;
}

/** Runs fn outside any call: work meant to outlive the call that starts it (background copies) keeps only its own timeouts. */
export function outsideCall<T>(fn: () => T): T {
  return als.exit(fn);
}
