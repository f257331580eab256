import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * The benchmarks' floor (issue 14): the same Ceph operations a CSI call does,
 * run in one long-lived process straight on librados and librbd
 * (ceph-baseline.py). Each `run` is one call's worth of steps, in order.
 */

export type BaselineStep =
  | { op: 'create'; pool: string; image: string; size: number; features: string[] }
  | { op: 'meta_set'; pool: string; image: string; key: string; value: string }
  | { op: 'resize'; pool: string; image: string; size: number }
  | { op: 'snap_create' | 'snap_remove'; pool: string; image: string; snap: string }
  | { op: 'clone'; pool: string; parent: string; snap: string; child: string; features: string[] }
  | { op: 'remove'; pool: string; image: string }
  | { op: 'mon' | 'mgr'; cmd: Record<string, unknown> }
  // CephFS: `allow` lists errnos taken as an answer (a lookup's ENOENT); clone_wait polls `fs clone status` until complete.
  | { op: 'mon' | 'mgr'; cmd: Record<string, unknown>; allow: number[] }
  | { op: 'clone_wait'; fs: string; group: string; clone: string };

const SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../bench/ceph-baseline.py');

export class CephBaseline {
  private readonly child: ChildProcessByStdio<Writable, Readable, null>;
  private readonly pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private next = 1;
  readonly ready: Promise<void>;

  constructor(conn: { monitors: string[]; id: string; keyFile: string }) {
    this.child = spawn('/usr/bin/python3', [SCRIPT], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: this.child.stdout });
    this.ready = new Promise((resolve, reject) => {
      lines.once('line', (first) => ((JSON.parse(first) as { ready?: boolean }).ready ? resolve() : reject(new Error(first))));
      this.child.once('exit', (code) => reject(new Error(`ceph-baseline.py exited with ${code}`)));
    });
    lines.on('line', (l) => {
      const m = JSON.parse(l) as { id?: number; ok?: boolean; error?: string };
      const p = m.id === undefined ? undefined : this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id!);
      if (m.ok) p.resolve();
      else p.reject(new Error(m.error));
    });
    this.child.stdin.write(JSON.stringify({ id: conn.id, mon_host: conn.monitors.join(','), keyfile: conn.keyFile }) + '\n');
  }

  async run(steps: BaselineStep[]): Promise<void> {
    await this.ready;
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.stdin.write(JSON.stringify({ id, steps }) + '\n');
    });
  }

  close(): void {
    this.child.stdin.end();
  }
}
