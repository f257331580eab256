import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Logger } from 'pino';
import { ExecError } from '../util/exec.js';
import type { CephConn } from './conn.js';

/**
 * Mon and mgr commands through one long-lived librados client per cluster
 * identity, instead of one `ceph` CLI process per command. The CLI spends
 * ~0.5 s starting Python and connecting for a command the mgr answers in
 * ~3 ms; CephFS calls need several commands each.
 *
 * The client is a small Python program on the python3-rados binding that
 * ceph-common ships (the CLI itself is built on it). It reads JSON requests
 * on stdin and answers on stdout, several at once. The key file's path
 * reaches it on stdin, never in argv. Failures come back as ExecError with
 * the errno as exit code, exactly as from the CLI, so callers don't change.
 */

const BRIDGE = String.raw`
import json, sys, threading
from concurrent.futures import ThreadPoolExecutor
import rados
cfg = json.loads(sys.stdin.readline())
lock = threading.Lock()
def send(m):
    with lock:
        sys.stdout.write(json.dumps(m) + "\n")
        sys.stdout.flush()
try:
    c = rados.Rados(name="client." + cfg["id"], conffile="/dev/null", conf=cfg["conf"])
    c.connect(timeout=cfg["connect_timeout"])
except Exception as e:
    send({"ready": False, "error": str(e)})
    sys.exit(1)
send({"ready": True})
def handle(req):
    fn = c.mgr_command if req["target"] == "mgr" else c.mon_command
    try:
        rc, out, err = fn(json.dumps(req["cmd"]), b"", timeout=req["timeout"])
        send({"id": req["id"], "rc": rc, "out": out.decode("utf-8", "replace"), "err": err})
    except rados.TimedOut as e:
        send({"id": req["id"], "rc": -110, "out": "", "err": str(e)})
    except Exception as e:
        send({"id": req["id"], "rc": -5, "out": "", "err": str(e)})
pool = ThreadPoolExecutor(max_workers=8)
for line in sys.stdin:
    if line.strip():
        pool.submit(handle, json.loads(line))
pool.shutdown(wait=True)
c.shutdown()
`;

// Debian's python3 has the rados binding; a python3 earlier on PATH (pyenv, venvs) may not.
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const CONNECT_TIMEOUT_S = 15;
const IDLE_MS = 60_000;
const ETIMEDOUT = 110;

export type CephCommand = { prefix: string } & Record<string, string | number | boolean | string[]>;

interface Pending {
  resolve: (out: string) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  cmd: CephCommand;
}

class Bridge {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private idle: NodeJS.Timeout | undefined;
  private stderr = '';
  readonly ready: Promise<void>;
  closed = false;

  constructor(conn: CephConn, private readonly onClose: () => void) {
    this.child = spawn(PYTHON, ['-c', BRIDGE], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-2000)));
    const lines = createInterface({ input: this.child.stdout });
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(this.fail(`could not connect to the Ceph monitors within ${CONNECT_TIMEOUT_S + 5} s`)), (CONNECT_TIMEOUT_S + 5) * 1000);
      lines.once('line', (first) => {
        clearTimeout(timer);
        let m: { ready?: boolean; error?: string } = {};
        try {
          m = JSON.parse(first) as typeof m;
        } catch {
          /* reported below */
        }
        if (m.ready) resolve();
        else reject(this.fail(`could not connect to Ceph: ${m.error ?? first}`));
        lines.on('line', (l) => this.answer(l));
      });
      this.child.once('exit', (code) => {
        clearTimeout(timer);
        reject(this.fail(`rados client exited with ${code}: ${this.stderr.trim().split('\n').slice(-2).join(' / ')}`));
      });
    });
    this.ready.catch(() => undefined);
    this.child.stdin.write(
      JSON.stringify({
        id: conn.identity.id,
        conf: { mon_host: conn.monitors.join(','), keyfile: conn.identity.keyFile, client_mount_timeout: '15', rados_mon_op_timeout: '20', rados_osd_op_timeout: '30' },
        connect_timeout: CONNECT_TIMEOUT_S,
      }) + '\n',
    );
    this.touch();
  }

  private fail(msg: string): Error {
    this.close();
    const e = new ExecError('ceph (rados client)', 5, msg, msg.includes('within'));
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(e);
    }
    this.pending.clear();
    return e;
  }

  private answer(line: string): void {
    let m: { id: number; rc: number; out: string; err: string };
    try {
      m = JSON.parse(line) as typeof m;
    } catch {
      return;
    }
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    clearTimeout(p.timer);
    if (m.rc === 0) p.resolve(m.out);
    else p.reject(new ExecError(`ceph ${p.cmd.prefix}`, -m.rc, m.err || `errno ${-m.rc}`, -m.rc === ETIMEDOUT));
    this.touch();
  }

  private touch(): void {
    if (this.idle) clearTimeout(this.idle);
    this.idle = setTimeout(() => {
      if (!this.pending.size) this.close();
      else this.touch();
    }, IDLE_MS);
    this.idle.unref();
  }

  async command(target: 'mon' | 'mgr', cmd: CephCommand, timeoutMs: number): Promise<string> {
    await this.ready;
    if (this.closed) throw new ExecError(`ceph ${cmd.prefix}`, 5, 'rados client closed', false);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ExecError(`ceph ${cmd.prefix}`, ETIMEDOUT, `no answer within ${timeoutMs} ms`, true));
      }, timeoutMs + 2000);
      this.pending.set(id, { resolve, reject, timer, cmd });
      this.child.stdin.write(JSON.stringify({ id, target, cmd, timeout: Math.ceil(timeoutMs / 1000) }) + '\n');
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.idle) clearTimeout(this.idle);
    this.child.stdin.end();
    // A client stuck on a dead cluster must not linger.
    setTimeout(() => this.child.kill('SIGKILL'), 5000).unref();
    this.onClose();
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
