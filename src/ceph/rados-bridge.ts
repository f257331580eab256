import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Logger } from 'pino';
import { failedPrecondition } from '../errors.js';
import { boundedTimeout, currentCall, stopReason } from '../util/call-context.js';
import { ExecError, stoppedError } from '../util/exec.js';
import type { CephConn } from './conn.js';

/**
 * Mon and mgr commands through one long-lived librados client per cluster
 * identity, instead of one `ceph` CLI process per command. The CLI spends
 * ~0.5 s starting Python and connecting for a command the mgr answers in
 * ~3 ms; CephFS calls need several commands each.
 *
 * The client is a small Python program on the python3-rados binding that
 * ceph-common ships (the CLI itself is built on it). It reads JSON requests
 * on stdin and answers on stdout, several at once. The key reaches it on
 * stdin, never in argv or a file it must find later. Failures come back as
 * ExecError with the errno as exit code, exactly as from the CLI, so callers
 * don't change.
 *
 * librados (16.2) must never time a mgr command out itself: on timeout
 * RadosClient::mgr_command returns while MgrClient still holds pointers to
 * its stack, and the late reply corrupts the heap (`free(): invalid
 * pointer`, seen under 16 concurrent CephFS restores). So the client runs
 * with rados_mon_op_timeout=0 and every timeout lives here: a command whose
 * time is up (its own, or its gRPC call's deadline) is answered at once and
 * its late reply dropped; the Python thread it holds is freed by that reply.
 * A client that answers nothing for HUNG_MS, or dies, fails its calls with
 * UNAVAILABLE and the next call starts a fresh one.
 */

const BRIDGE = String.raw`
import json, os, sys, threading
from concurrent.futures import ThreadPoolExecutor
import rados
cfg = json.loads(sys.stdin.readline())
lock = threading.Lock()
def send(m):
    line = json.dumps(m) + "\n"
    with lock:
        sys.stdout.write(line)
        sys.stdout.flush()
try:
    c = rados.Rados(name="client." + cfg["id"], conffile="/dev/null", conf=cfg["conf"])
    c.connect(timeout=cfg["connect_timeout"])
except rados.Error as e:
    send({"ready": False, "errno": getattr(e, "errno", None) or 5, "error": str(e)})
    sys.exit(1)
send({"ready": True})
def handle(req):
    fn = c.mgr_command if req["target"] == "mgr" else c.mon_command
    try:
        rc, out, err = fn(json.dumps(req["cmd"]), b"")
        send({"id": req["id"], "rc": rc, "out": out.decode("utf-8", "replace"), "err": err})
    except Exception as e:
        send({"id": req["id"], "rc": -5, "out": "", "err": str(e)})
pool = ThreadPoolExecutor(max_workers=cfg["workers"])
for line in sys.stdin:
    if line.strip():
        pool.submit(handle, json.loads(line))
# Threads may wait on a mgr that never answers; nothing is left to answer to.
os._exit(0)
`;

// Debian's python3 has the rados binding; a python3 earlier on PATH (pyenv, venvs) may not.
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const CONNECT_TIMEOUT_S = 15;
const IDLE_MS = 60_000;
/** Commands on the wire at once per client; more wait here, where a deadline can still drop them unsent. */
export const BRIDGE_WORKERS = 8;
/** A client with a command unanswered this long is taken for hung and replaced. */
export const HUNG_MS = 90_000;
const ETIMEDOUT = 110;
const EIO = 5;

export type CephCommand = { prefix: string } & Record<string, string | number | boolean | string[]>;

interface Request {
  id: number;
  target: 'mon' | 'mgr';
  cmd: CephCommand;
  /** Undefined once the caller has its answer (or gave up): a late reply is dropped. */
  settle?: (e: Error | undefined, out?: string) => void;
  sentAt?: number;
}

class Bridge {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly queue: Request[] = [];
  /** Sent and not yet answered, including requests whose caller gave up: each holds a Python thread. */
  private readonly onWire = new Map<number, Request>();
  private nextId = 1;
  private idle: NodeJS.Timeout | undefined;
  private readonly watchdog: NodeJS.Timeout;
  private stderr = '';
  private failure: ExecError | undefined;
  private readonly ready: Promise<void>;
  closed = false;

  constructor(conn: CephConn, private readonly onClose: () => void) {
    const key = readKeyFile(conn);
    this.child = spawn(PYTHON, ['-c', BRIDGE], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdin.on('error', () => undefined); // EPIPE after a crash; the exit handler reports it
    this.child.stderr.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-2000)));
    const lines = createInterface({ input: this.child.stdout });
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(this.fail(`could not connect to the Ceph monitors within ${CONNECT_TIMEOUT_S + 5} s`)), (CONNECT_TIMEOUT_S + 5) * 1000);
      lines.once('line', (first) => {
        clearTimeout(timer);
        let m: { ready?: boolean; errno?: number; error?: string } = {};
        try {
          m = JSON.parse(first) as typeof m;
        } catch {
          /* reported below */
        }
        if (m.ready) {
          resolve();
          lines.on('line', (l) => this.answer(l));
          this.pump();
        } else if (m.errno === 1 || m.errno === 13) {
          const e = failedPrecondition(`Ceph refused client.${conn.identity.id}: check the user and key`);
          reject(e);
          this.fail(e.message, e);
        } else reject(this.fail(`could not connect to Ceph: ${m.error ?? first}`));
      });
      this.child.once('exit', (code, sig) => {
        clearTimeout(timer);
        reject(this.fail(`rados client exited (${sig ?? code}): ${this.stderr.trim().split('\n').slice(-2).join(' / ')}`));
      });
    });
    this.ready.catch(() => undefined);
    this.child.stdin.write(
      JSON.stringify({
        id: conn.identity.id,
        conf: { mon_host: conn.monitors.join(','), key, client_mount_timeout: String(CONNECT_TIMEOUT_S), rados_mon_op_timeout: '0', rados_osd_op_timeout: '30' },
        connect_timeout: CONNECT_TIMEOUT_S,
        workers: BRIDGE_WORKERS,
      }) + '\n',
    );
    this.watchdog = setInterval(() => {
      const oldest = Math.min(...[...this.onWire.values()].map((r) => r.sentAt!));
      if (Date.now() - oldest > HUNG_MS) this.fail(`rados client gave no answer in ${HUNG_MS / 1000} s; replaced`);
    }, 5000);
    this.watchdog.unref();
    this.touch();
  }

  /** Ends this client: every caller still waiting gets `e` (UNAVAILABLE unless given), later callers a fresh client. */
  private fail(msg: string, err?: Error): ExecError {
    const e = new ExecError('ceph (rados client)', undefined, msg, false, true);
    this.failure ??= e;
    for (const r of [...this.queue, ...this.onWire.values()]) r.settle?.(err ?? e);
    this.queue.length = 0;
    this.onWire.clear();
    this.close();
    this.child.kill('SIGKILL');
    return e;
  }

  private answer(line: string): void {
    let m: { id: number; rc: number; out: string; err: string };
    try {
      m = JSON.parse(line) as typeof m;
    } catch {
      return; // a line cut by a crash; the exit handler fails what waits
    }
    const r = this.onWire.get(m.id);
    if (!r) return;
    this.onWire.delete(m.id);
    this.pump();
    this.touch();
    // librados returns a positive errno from timed-out waits and a negative one from Ceph.
    const errno = Math.abs(m.rc);
    if (errno === 0) r.settle?.(undefined, m.out);
    else r.settle?.(new ExecError(`ceph ${r.cmd.prefix}`, errno, m.err || `errno ${errno}`, errno === ETIMEDOUT));
  }

  /** Puts queued requests on the wire while fewer than BRIDGE_WORKERS are there. */
  private pump(): void {
    while (!this.closed && this.onWire.size < BRIDGE_WORKERS && this.queue.length) {
      const r = this.queue.shift()!;
      r.sentAt = Date.now();
      this.onWire.set(r.id, r);
      this.child.stdin.write(JSON.stringify({ id: r.id, target: r.target, cmd: r.cmd }) + '\n');
    }
  }

  private touch(): void {
    if (this.idle) clearTimeout(this.idle);
    this.idle = setTimeout(() => {
      if (!this.onWire.size && !this.queue.length) this.close();
      else this.touch();
    }, IDLE_MS);
    this.idle.unref();
  }

  command(target: 'mon' | 'mgr', cmd: CephCommand, timeoutMs: number): Promise<string> {
    const name = `ceph ${cmd.prefix}`;
    if (this.failure || this.closed) return Promise.reject(this.failure ?? new ExecError(name, EIO, 'rados client closed', false, true));
    const why = stopReason();
    if (why) return Promise.reject(stoppedError(name, why.message));
    const ms = boundedTimeout(timeoutMs);
    if (ms <= 0) return Promise.reject(stoppedError(name, "no time left before the call's deadline"));
    return new Promise((resolve, reject) => {
      const r: Request = { id: this.nextId++, target, cmd };
      const signal = currentCall()?.signal;
      const onAbort = () => giveUp(stoppedError(name, stopReason()?.message ?? 'the call stopped'));
      const timer = setTimeout(() => giveUp(new ExecError(name, ETIMEDOUT, `no answer within ${ms} ms`, true)), ms);
      r.settle = (e, out) => {
        r.settle = undefined;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (e) reject(e);
        else resolve(out!);
      };
      // Unsent, it just leaves the queue; sent, its thread stays busy until the late reply, which is dropped.
      const giveUp = (e: ExecError) => {
        const i = this.queue.indexOf(r);
        if (i >= 0) this.queue.splice(i, 1);
        r.settle?.(e);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(r);
      this.pump();
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.idle) clearTimeout(this.idle);
    clearInterval(this.watchdog);
    this.child.stdin.end();
    // A client stuck on a dead cluster must not linger.
    setTimeout(() => this.child.kill('SIGKILL'), 5000).unref();
    this.onClose();
  }
}

function readKeyFile(conn: CephConn): string {
  try {
    return readFileSync(conn.identity.keyFile, 'utf8').trim();
  } catch (e) {
    throw failedPrecondition(`cannot read the key file of client.${conn.identity.id}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

const bridges = new Map<string, Bridge>();

/** Runs one mon or mgr command as the connection's identity; returns its output (JSON when asked). */
export async function cephCommand(conn: CephConn, target: 'mon' | 'mgr', cmd: CephCommand, opts: { timeoutMs?: number; log?: Logger } = {}): Promise<string> {
  const key = `${conn.monitors.join(',')}\0${conn.identity.id}\0${conn.identity.keyFile}`;
  let b = bridges.get(key);
  if (!b || b.closed) {
    b = new Bridge(conn, () => {
      if (bridges.get(key) === b) bridges.delete(key);
    });
    bridges.set(key, b);
  }
  const t0 = performance.now();
  try {
    const out = await b.command(target, cmd, opts.timeoutMs ?? 45_000);
    opts.log?.debug({ cmd: cmd.prefix, ms: Math.round(performance.now() - t0) }, 'ceph command');
    return out;
  } catch (e) {
    opts.log?.debug({ cmd: cmd.prefix, ms: Math.round(performance.now() - t0), err: (e as Error).message }, 'ceph command failed');
    throw e;
  }
}

/** Closes every client (shutdown, tests). */
export function closeCephClients(): void {
  for (const b of [...bridges.values()]) b.close();
}
