import { readFileSync, readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { codeOf, connect, startDriver, type CsiClients, type DriverProcess } from '../helpers/driver.js';

/**
 * What the crash and load tests share: a seeded PRNG, a driver that can be
 * killed with SIGKILL at a chosen instant and started again on the same
 * directory (so the node's state dir persists), and the retry loop the
 * sidecars run (ABORTED, UNAVAILABLE and DEADLINE_EXCEEDED are retried with
 * back-off; anything else is the answer).
 */

/** mulberry32: small, fast and reproducible from one printed seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function seedFromEnv(): number {
  const s = process.env.STRATA_CRASH_SEED;
  return s ? Number(s) : Math.floor(Math.random() * 2 ** 31);
}

export const RETRIED = new Set(['ABORTED', 'UNAVAILABLE', 'DEADLINE_EXCEEDED']);

export interface RetryResult<T> {
  value: T;
  retries: number;
  /** Codes of the retried failures, in order. */
  codes: string[];
}

/** Calls `fn` until it answers something other than a retried code, with back-off as a sidecar would. */
export async function retry<T>(fn: () => Promise<T>, budgetMs = 120_000): Promise<RetryResult<T>> {
  const end = Date.now() + budgetMs;
  const codes: string[] = [];
  for (let wait = 100; ; wait = Math.min(wait * 2, 2000)) {
    try {
      return { value: await fn(), retries: codes.length, codes };
    } catch (e) {
      const code = codeOf(e);
      if (!RETRIED.has(code) || Date.now() + wait > end) throw Object.assign(new Error(`${code}: ${(e as Error).message} (after ${codes.length} retries: ${codes.join(',')})`), { code });
      codes.push(code);
      await sleep(wait);
    }
  }
}

interface ProcInfo {
  pid: number;
  ppid: number;
  sid: number;
}

function procs(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const ent of readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    try {
      const st = readFileSync(`/proc/${ent}/stat`, 'utf8');
      // Fields after the parenthesised command name: state ppid pgrp session ...
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      out.push({ pid: Number(ent), ppid: Number(f[1]), sid: Number(f[3]) });
    } catch {
      /* exited */
    }
  }
  return out;
}

/**
 * SIGKILL to a process and every descendant in its session: what a container
 * crash does to the plugin and the commands it is running (rbd, ceph, mkfs,
 * the rados bridge). FUSE daemons run in sessions of their own and survive,
 * as they do when only the plugin's process dies; the node must cope.
 */
export function killTree(pid: number): number[] {
  const all = procs();
  const me = all.find((p) => p.pid === pid);
  if (!me) return [];
  const victims = [pid];
  for (let i = 0; i < victims.length; i++) {
    for (const p of all) if (p.ppid === victims[i] && p.sid === me.sid && !victims.includes(p.pid)) victims.push(p.pid);
  }
  for (const v of victims) {
    try {
      process.kill(v, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  return victims;
}

/** The plugin (controller and node in one process, node id node-a), killable and restartable in place. */
export class CrashableDriver {
  proc!: DriverProcess;
  c!: CsiClients;
  restarts = 0;

  constructor(
    private readonly config: string,
    readonly nodeId = 'node-a',
  ) {}

  get dir(): string {
    return this.proc.dir;
  }

  async start(dir?: string): Promise<void> {
    this.proc = await startDriver({ config: this.config, nodeId: this.nodeId, mode: 'all', dir, logLevel: 'debug' });
    this.c = connect(this.proc.socket);
  }

  /** kill -9, wait until it is gone, start again on the same directory. */
  async killAndRestart(): Promise<void> {
    const child = this.proc.child;
    killTree(child.pid!);
    for (let i = 0; i < 200 && child.exitCode === null && child.signalCode === null; i++) await sleep(10);
    // Closed only now: a client closing first would cancel the call, and the driver would see that before the kill.
    this.c.close();
    this.restarts++;
    await this.start(this.proc.dir);
  }

  async stop(): Promise<void> {
    this.c?.close();
    await this.proc?.stop();
  }
}

export interface KillRecord {
  backend: string;
  rpc: string;
  delayMs: number;
  undisturbedMs: number;
  /** What the killed call answered: OK when it finished before the kill landed. */
  killedCall: string;
  retries: number;
  convergeMs: number;
}

export function formatKill(n: number, k: KillRecord): string {
  return `kill ${String(n).padStart(2)} ${k.backend.padEnd(6)} ${k.rpc.padEnd(26)} at ${String(k.delayMs).padStart(5)} of ${String(k.undisturbedMs).padStart(5)} ms  killed call: ${k.killedCall.padEnd(11)} retries ${String(k.retries).padStart(2)}  converged in ${k.convergeMs} ms`;
}
