import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Logger } from 'pino';
import { failedPrecondition, unavailable } from '../errors.js';
import { parseOutput } from '../util/json.js';
import { currentCall, nextOrder, stopReason } from '../util/call-context.js';
import { ExecError, stoppedError, timeLeft } from '../util/exec.js';
import type { CephConn } from './conn.js';
import { ETIMEDOUT } from './errno.js';

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
 *
 * RBD control operations (create, clone, metadata, snapshots, trash) run in
 * the same client on the python3-rbd binding (rbdCall), with the same
 * timeouts and errnos; the CLI paid a process and a cluster connect for
 * each. A librbd call can wait without end (an image another client keeps
 * locked: `rbd rm` was seen spinning for 11 min) and holds its Python
 * thread meanwhile, so threads are bounded per lane (at most MON_WORKERS mon
 * commands, MGR_WORKERS mgr commands and RBD_WORKERS librbd calls on the
 * wire; more wait here, where a deadline can still drop them unsent), and
 * such a call ends when the watchdog replaces its client. Waiting requests go
 * out oldest call first. Mon commands have a
 * lane of their own: the mgr's volumes module runs its commands one at a
 * time, and a config-key read must not queue behind a burst of them.
 */

const BRIDGE = String.raw`
import json, os, re, struct, sys, threading
from concurrent.futures import ThreadPoolExecutor
import rados
try:
    import rbd
except ImportError:
    rbd = None
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
ioctxs = {}
io_lock = threading.Lock()
# One ioctx per "<pool>" or "<pool>/<namespace>": an ioctx's namespace is its
# state, so ioctxs are never shared across namespaces.
def io(spec):
    with io_lock:
        if spec not in ioctxs:
            pool, _, ns = spec.partition("/")
            x = c.open_ioctx(pool)
            if ns:
                x.set_namespace(ns)
            ioctxs[spec] = x
        return ioctxs[spec]
def image(a, read_only=False):
    return rbd.Image(io(a["pool"]), a["image"], read_only=read_only)
def features(names):
    f = 0
    for n in names:
        f |= FEATURES[n]
    return f
SNAP_NS = {0: "user", 1: "group", 2: "trash", 3: "mirror"}
def info(a):
    with image(a, True) as img:
        out = {"size": img.size()}
        try:
            p = img.get_parent_image_spec()
            out["parent"] = {"pool": p["pool_name"], "image": p["image_name"], "snapshot": p["snap_name"]}
        except rbd.ImageNotFound:
            pass
        return out
# Image metadata is read and written with the rbd object class on the image's
# header, as librbd itself does, without opening the image: an open registers
# a watch, and the watch of a client killed mid-call outlives it by 30 s, in
# which NodeStage takes the image for open elsewhere and refuses it.
def enc(s):
    b = s.encode()
    return struct.pack("<I", len(b)) + b
def dec(buf, off):
    n = struct.unpack_from("<I", buf, off)[0]
    return buf[off + 4:off + 4 + n], off + 4 + n
def header(a):
    ioctx = io(a["pool"])
    hid, _ = dec(ioctx.read("rbd_id." + a["image"], 4096), 0)
    return ioctx, "rbd_header." + hid.decode()
META_PAGE = 1024
def meta_list(a):
    ioctx, oid = header(a)
    out, start = {}, ""
    while True:
        raw = ioctx.execute(oid, "rbd", "metadata_list", enc(start) + struct.pack("<Q", META_PAGE), 1 << 20)[1]
        n, off = struct.unpack_from("<I", raw, 0)[0], 4
        for _ in range(n):
            k, off = dec(raw, off)
            v, off = dec(raw, off)
            start = k.decode()
            out[start] = v.decode("utf-8", "replace")
        if n < META_PAGE:
            return out
def meta_set(ioctx, oid, pairs):
    if pairs:
        ioctx.execute(oid, "rbd", "metadata_set", struct.pack("<I", len(pairs)) + b"".join(enc(k) + enc(v) for k, v in pairs.items()))
def meta_remove(a):
    ioctx, oid = header(a)
    ioctx.execute(oid, "rbd", "metadata_remove", enc(a["key"]))
def meta_strip(a):
    ioctx, oid = header(a)
    for k in meta_list(a):
        if k.startswith(a["prefix"]) and k not in a["set"]:
            try:
                ioctx.execute(oid, "rbd", "metadata_remove", enc(k))
            except rados.ObjectNotFound:
                pass
    meta_set(ioctx, oid, a["set"])
def grow(img, a):
    size = img.size()
    if a["size"] > size:
        img.resize(a["size"])
    return size
# Misses on names in the placement group of an image's header push the header's
# object context out of that group's cache (64 entries by default), so the OSD
# reads it afresh next time and gives every watch in it a timeout: one whose
# client was killed while registering it has none in a Pacific OSD (Ceph bug
# 58120) and would block the image for good. Only names of this form are taken.
RELOAD_NAME = re.compile(r"strata\.watch-reload\.[0-9]{1,9}\Z")
def reload_pg(a):
    x = io(a["pool"])
    for n in a["names"]:
        if not RELOAD_NAME.match(n):
            raise ValueError("not a reload name")
        try:
            x.remove_object(n)
        except rados.ObjectNotFound:
            pass
    return len(a["names"])
def with_image(fn, read_only=False):
    def op(a):
        with image(a, read_only) as img:
            return fn(img, a)
    return op
OPS = {
    "info": info,
    "create": lambda a: rbd.RBD().create(io(a["pool"]), a["image"], a["size"], old_format=False, features=features(a["features"]), data_pool=a.get("data_pool")),
    "clone": lambda a: rbd.RBD().clone(io(a["pool"]), a["parent"], a["snap"], io(a["pool"]), a["image"], features=features(a["features"]), data_pool=a.get("data_pool")),
    "grow": with_image(grow),
    "meta_list": meta_list,
    "meta_set": lambda a: meta_set(*header(a), {a["key"]: a["value"]}),
    "meta_remove": meta_remove,
    "meta_strip": meta_strip,
    "snap_create": with_image(lambda img, a: img.create_snap(a["snap"])),
    "snap_remove": with_image(lambda img, a: img.remove_snap(a["snap"])),
    "snap_list": with_image(lambda img, a: [{"id": s["id"], "name": s["name"], "size": s["size"], "namespace": SNAP_NS.get(s.get("namespace"), "other")} for s in img.list_snaps()], True),
    "header": lambda a: header(a)[1],
    "reload_pg": reload_pg,
    "watchers": with_image(lambda img, a: [w["addr"] for w in img.watchers_list()], True),
    "remove": lambda a: rbd.RBD().remove(io(a["pool"]), a["image"]),
    "trash_move": lambda a: rbd.RBD().trash_move(io(a["pool"]), a["image"], 0),
    "trash_list": lambda a: [{"id": e["id"], "name": e["name"]} for e in rbd.RBD().trash_list(io(a["pool"]))],
    "trash_remove": lambda a: rbd.RBD().trash_remove(io(a["pool"]), a["id"]),
    "list": lambda a: rbd.RBD().list(io(a["pool"])),
    "namespace_create": lambda a: rbd.RBD().namespace_create(io(a["pool"]), a["namespace"]),
    "namespace_list": lambda a: rbd.RBD().namespace_list(io(a["pool"])),
}
FEATURES = {}
if rbd:
    FEATURES = {"layering": rbd.RBD_FEATURE_LAYERING, "exclusive-lock": rbd.RBD_FEATURE_EXCLUSIVE_LOCK, "object-map": rbd.RBD_FEATURE_OBJECT_MAP,
                "fast-diff": rbd.RBD_FEATURE_FAST_DIFF, "deep-flatten": rbd.RBD_FEATURE_DEEP_FLATTEN, "journaling": rbd.RBD_FEATURE_JOURNALING}
def run_rbd(req):
    if rbd is None:
        return -38, None, "python3-rbd is not installed"
    a = req["args"]
    try:
        return 0, OPS[req["op"]](a), ""
    except Exception as e:
        errno = abs(getattr(e, "errno", None) or 5)
        if errno == 2:
            # A pool deleted and made again gets a new id: open it afresh next time.
            pool = str(a.get("pool")).partition("/")[0]
            with io_lock:
                for k in [k for k in ioctxs if k.partition("/")[0] == pool]:
                    del ioctxs[k]
        return -errno, None, "%s: %s" % (type(e).__name__, e)
def handle(req):
    if req["target"] == "rbd":
        rc, out, err = run_rbd(req)
        send({"id": req["id"], "rc": rc, "out": out, "err": err})
        return
    fn = c.mgr_command if req["target"] == "mgr" else c.mon_command
    try:
        rc, out, err = fn(json.dumps(req["cmd"]), b"")
        out = out.decode("utf-8", "replace")
        then = req.get("then")
        if then is not None:
            sent = False
            if rc == 0:
                d = json.loads(out)
                v = d.get(then["field"])
                same = all(d.get(k, x) == x for k, x in then.get("equals", {}).items())
                if same and (not isinstance(v, int) or v < then["below"]):
                    rc, _, err = fn(json.dumps(then["cmd"]), b"")
                    sent = True
            out = json.dumps({"out": out, "sent": sent})
        send({"id": req["id"], "rc": rc, "out": out, "err": err})
    except Exception as e:
        send({"id": req["id"], "rc": -5, "out": "", "err": str(e)})
def handle_chain(req):
    fn = c.mgr_command if req["target"] == "mgr" else c.mon_command
    chain, steps = req["chain"], []
    try:
        for i, cmd in enumerate([chain["lookup"]] + chain["then"]):
            rc, out, err = fn(json.dumps(cmd), b"")
            steps.append({"rc": rc, "out": out.decode("utf-8", "replace"), "err": err})
            # The lookup goes on only when it found nothing; the commands after it, while each succeeds.
            if (abs(rc) != chain["missing"]) if i == 0 else (rc != 0):
                break
        send({"id": req["id"], "rc": 0, "out": json.dumps(steps), "err": ""})
    except Exception as e:
        send({"id": req["id"], "rc": -5, "out": "", "err": str(e)})
pool = ThreadPoolExecutor(max_workers=cfg["workers"])
for line in sys.stdin:
    if line.strip():
        req = json.loads(line)
        pool.submit(handle_chain if "chain" in req else handle, req)
# Threads may wait on a mgr or an OSD that never answers; nothing is left to answer to.
os._exit(0)
`;

// Debian's python3 has the rados binding; a python3 earlier on PATH (pyenv, venvs) may not.
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const CONNECT_TIMEOUT_S = 15;
const IDLE_MS = 60_000;
/** Mon commands, and mgr commands, on the wire at once per client (each). */
export const MON_WORKERS = 8;
export const MGR_WORKERS = 8;
/** librbd calls on the wire at once per client: most wait on OSDs, and a burst of creates wants many at once. */
export const RBD_WORKERS = 32;
/** A client with a request unanswered this long is taken for hung and replaced. */
export const HUNG_MS = 90_000;
const EIO = 5;

export type CephCommand = { prefix: string } & Record<string, string | number | boolean | string[]>;
type Lane = 'mon' | 'mgr' | 'rbd';
/**
 * A second command the client sends right after the first when `field` of
 * the first's JSON answer is not a number of at least `below`, and each field
 * of `equals` (where the answer has it) holds the value given.
 */
export interface ThenCommand {
  field: string;
  below: number;
  equals?: Record<string, string>;
  cmd: CephCommand;
}
/**
 * The error of a command the client answered with `rc`, its errno as the exit code, as from the
 * CLI. librados returns a positive errno from timed-out waits and a negative one from Ceph.
 */
export function cephError(name: string, rc: number, err: string): ExecError {
  const errno = Math.abs(rc);
  return new ExecError(name, errno, err || `errno ${errno}`, errno === ETIMEDOUT);
}

/**
 * A lookup and the commands that make what it did not find, run by the client one after the
 * other: `then` is sent only when `lookup` fails with `missing`, and stops at its first failure.
 */
export interface CommandChain {
  lookup: CephCommand;
  missing: number;
  then: CephCommand[];
}
/** What one command of a chain answered: rc 0, or the errno (negative from Ceph, positive from a timed-out wait). */
export interface ChainStep {
  rc: number;
  out: string;
  err: string;
}
const LIMIT: Record<Lane, number> = { mon: MON_WORKERS, mgr: MGR_WORKERS, rbd: RBD_WORKERS };

interface Request {
  id: number;
  lane: Lane;
  /** Names the request in errors and logs ("ceph df", "rbd create"). */
  name: string;
  /** What goes on the wire besides the id. */
  body: { target: 'mon' | 'mgr'; cmd: CephCommand; then?: ThenCommand } | { target: 'mon' | 'mgr'; chain: CommandChain } | { target: 'rbd'; op: string; args: Record<string, unknown> };
  /** Undefined once the caller has its answer (or gave up): a late reply is dropped. */
  settle?: (e: Error | undefined, out?: unknown) => void;
  sentAt?: number;
  /** The order its call began in: a lane's queue sends the requests of older calls first. */
  order: number;
}

/**
 * Puts a request behind every waiting one of its call or an older call, ahead of newer calls'
 * (FIFO among equals): a burst of calls of several steps each then finishes call by call, instead
 * of every call waiting behind every other call's earlier steps.
 */
export function enqueueByOrder<T extends { order: number }>(queue: T[], r: T): void {
  let i = queue.length;
  while (i > 0 && queue[i - 1]!.order > r.order) i--;
  queue.splice(i, 0, r);
}

class Bridge {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly queue: Request[] = [];
  /** Sent and not yet answered, including requests whose caller gave up: each holds a Python thread. */
  private readonly onWire = new Map<number, Request>();
  private readonly busy: Record<Lane, number> = { mon: 0, mgr: 0, rbd: 0 };
  private nextId = 1;
  private idle: NodeJS.Timeout | undefined;
  private readonly watchdog: NodeJS.Timeout;
  private stderr = '';
  private failure: ExecError | undefined;
  private readonly ready: Promise<void>;
  closed = false;

  constructor(conn: CephConn, private readonly onClose: () => void) {
    const key = readKey(conn);
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
        conf: {
          mon_host: conn.monitors.join(','),
          key,
          client_mount_timeout: String(CONNECT_TIMEOUT_S),
          rados_mon_op_timeout: '0',
          rados_osd_op_timeout: '30',
          // Clones need no protected snapshot and let their parent snapshot be removed (to the trash namespace); the CLI path passed --rbd-default-clone-format 2.
          rbd_default_clone_format: '2',
        },
        connect_timeout: CONNECT_TIMEOUT_S,
        workers: MON_WORKERS + MGR_WORKERS + RBD_WORKERS,
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
    let m: { id: number; rc: number; out: unknown; err: string };
    try {
      m = JSON.parse(line) as typeof m;
    } catch {
      return; // a line cut by a crash; the exit handler fails what waits
    }
    const r = this.onWire.get(m.id);
    if (!r) return;
    this.onWire.delete(m.id);
    this.busy[r.lane]--;
    this.pump();
    this.touch();
    if (m.rc === 0) r.settle?.(undefined, m.out);
    else r.settle?.(cephError(r.name, m.rc, m.err));
  }

  /** Puts queued requests on the wire while their lane has a free thread. */
  private pump(): void {
    for (let i = 0; !this.closed && i < this.queue.length; ) {
      const r = this.queue[i]!;
      if (this.busy[r.lane] >= LIMIT[r.lane]) {
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      r.sentAt = Date.now();
      this.onWire.set(r.id, r);
      this.busy[r.lane]++;
      this.child.stdin.write(JSON.stringify({ id: r.id, ...r.body }) + '\n');
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

  /** Sends one request; its answer's `out` once it succeeds, an ExecError with the errno otherwise. */
  call(lane: Lane, name: string, body: Request['body'], timeoutMs: number): Promise<unknown> {
    if (this.failure || this.closed) return Promise.reject(this.failure ?? new ExecError(name, EIO, 'rados client closed', false, true));
    let ms: number;
    try {
      ms = timeLeft(name, timeoutMs);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      const call = currentCall();
      // Work a call left running after it settled (a background purge) waits like work outside any call.
      const r: Request = { id: this.nextId++, lane, name, body, order: call && !call.settled ? call.order : nextOrder() };
      const signal = call?.signal;
      const onAbort = () => giveUp(stoppedError(name, stopReason()?.message ?? 'the call stopped'));
      const timer = setTimeout(() => giveUp(new ExecError(name, ETIMEDOUT, `no answer within ${ms} ms`, true)), ms);
      r.settle = (e, out) => {
        r.settle = undefined;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (e) reject(e);
        else resolve(out);
      };
      // Unsent, it just leaves the queue; sent, its thread stays busy until the late reply, which is dropped.
      const giveUp = (e: ExecError) => {
        const i = this.queue.indexOf(r);
        if (i >= 0) this.queue.splice(i, 1);
        r.settle?.(e);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      enqueueByOrder(this.queue, r);
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

function readKey(conn: CephConn): string {
  try {
    return conn.identity.key();
  } catch (e) {
    throw failedPrecondition(`cannot read the key file of client.${conn.identity.id}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

const bridges = new Map<string, Bridge>();

function bridgeFor(conn: CephConn): Bridge {
  const key = `${conn.monitors.join(',')}\0${conn.identity.id}\0${conn.identity.tag}`;
  let b = bridges.get(key);
  if (!b || b.closed) {
    const made = new Bridge(conn, () => {
      if (bridges.get(key) === made) bridges.delete(key);
    });
    bridges.set(key, made);
    b = made;
  }
  return b;
}

async function timed<T>(what: string, log: Logger | undefined, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    const out = await fn();
    log?.debug({ cmd: what, ms: Math.round(performance.now() - t0) }, 'ceph command');
    return out;
  } catch (e) {
    log?.debug({ cmd: what, ms: Math.round(performance.now() - t0), err: (e as Error).message }, 'ceph command failed');
    throw e;
  }
}

/** Runs one mon or mgr command as the connection's identity; returns its output (JSON when asked). */
export async function cephCommand(conn: CephConn, target: 'mon' | 'mgr', cmd: CephCommand, opts: { timeoutMs?: number; log?: Logger } = {}): Promise<string> {
  const name = `ceph ${cmd.prefix}`;
  const out = await timed(name, opts.log, () => bridgeFor(conn).call(target, name, { target, cmd }, opts.timeoutMs ?? 45_000));
  return typeof out === 'string' ? out : '';
}

/**
 * Runs a mon or mgr command and, in the same client thread, `then.cmd` when
 * the first's answer asks for it: a read and the write it decides in one
 * round trip to the client. Returns the first's output and whether the second
 * was sent; an error of either is the call's.
 */
export async function cephCommandThen(conn: CephConn, target: 'mon' | 'mgr', cmd: CephCommand, then: ThenCommand, opts: { timeoutMs?: number; log?: Logger } = {}): Promise<{ out: string; sent: boolean }> {
  const name = `ceph ${cmd.prefix}, then ${then.cmd.prefix}`;
  const out = await timed(name, opts.log, () => bridgeFor(conn).call(target, name, { target, cmd, then }, opts.timeoutMs ?? 45_000));
  const r = parseOutput<{ out?: unknown; sent?: unknown }>(typeof out === 'string' ? out : '', name);
  if (typeof r.out !== 'string' || typeof r.sent !== 'boolean') throw unavailable(`${name} gave an incomplete answer; retry`);
  return { out: r.out, sent: r.sent };
}

/**
 * Runs a chain (a lookup, then the commands that make what it did not find) in one round trip
 * to the client. Returns what each command that ran answered, in order: the caller reads the
 * errnos. An answer that is not one step or more is UNAVAILABLE (retry).
 */
export async function cephCommandChain(conn: CephConn, target: 'mon' | 'mgr', chain: CommandChain, opts: { timeoutMs?: number; log?: Logger } = {}): Promise<ChainStep[]> {
  const name = `ceph ${[chain.lookup, ...chain.then].map((c) => c.prefix).join(', then ')}`;
  const out = await timed(name, opts.log, () => bridgeFor(conn).call(target, name, { target, chain }, opts.timeoutMs ?? 45_000));
  const steps = parseOutput<unknown>(typeof out === 'string' ? out : '', name);
  const ok = (x: unknown): x is ChainStep => typeof x === 'object' && x !== null && typeof (x as ChainStep).rc === 'number' && typeof (x as ChainStep).out === 'string' && typeof (x as ChainStep).err === 'string';
  if (!Array.isArray(steps) || steps.length === 0 || steps.length > chain.then.length + 1 || !steps.every(ok)) throw unavailable(`${name} gave an incomplete answer; retry`);
  return steps;
}

/**
 * Runs one librbd operation (see OPS in the client) as the connection's
 * identity; returns its result as the client sent it, unchecked: the caller
 * checks its shape. Failures are ExecError "rbd <op>" with librbd's errno.
 */
export function rbdCall(conn: CephConn, op: string, args: Record<string, unknown>, opts: { timeoutMs?: number; log?: Logger } = {}): Promise<unknown> {
  const name = `rbd ${op}`;
  return timed(name, opts.log, () => bridgeFor(conn).call('rbd', name, { target: 'rbd', op, args }, opts.timeoutMs ?? 45_000));
}

/** Closes every client (shutdown, tests). */
export function closeCephClients(): void {
  for (const b of [...bridges.values()]) b.close();
}
