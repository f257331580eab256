import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import pLimit from 'p-limit';

/**
 * What every benchmark prints: p50/p99 of the driver's calls beside a
 * baseline doing the same work in the same run, and the RSS of the driver's
 * processes. One place, so the tables of bench/*.ts read alike.
 */

export interface Sample {
  p50: number;
  p99: number;
  errors: number;
  wallMs: number;
}

export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

interface Timing {
  times: number[];
  errors: number;
}

/** Runs jobs `from`..`to`-1 at a concurrency, adding their times (or errors) to `t`. */
async function timeJobs(t: Timing, from: number, to: number, concurrency: number, job: (i: number) => Promise<unknown>): Promise<void> {
  const limit = pLimit(concurrency);
  await Promise.all(
    Array.from({ length: to - from }, (_, k) =>
      limit(async () => {
        const s = performance.now();
        try {
          await job(from + k);
          t.times.push(performance.now() - s);
        } catch (e) {
          t.errors++;
          if (t.errors <= 3) console.error(`  error: ${(e as Error).message.split('\n')[0]}`);
        }
      }),
    ),
  );
}

function sample(t: Timing, wallMs: number): Sample {
  const sorted = [...t.times].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), errors: t.errors, wallMs };
}

/** Runs `n` jobs at a concurrency; their p50, p99, errors and the wall time of the lot. */
export async function measure(n: number, concurrency: number, job: (i: number) => Promise<unknown>): Promise<Sample> {
  const t: Timing = { times: [], errors: 0 };
  const t0 = performance.now();
  await timeJobs(t, 0, n, concurrency, job);
  return sample(t, performance.now() - t0);
}

/**
 * The driver's job and the baseline's, `n` each, in alternating waves of
 * `concurrency` (driver first, then baseline first, ...): whatever the lab does
 * meanwhile (the mgr purging what an earlier row removed, another job on the
 * machine) falls on both columns alike instead of on whichever ran first.
 */
export async function measurePair(n: number, concurrency: number, driver: (i: number) => Promise<unknown>, bare: (i: number) => Promise<unknown>): Promise<{ driver: Sample; bare: Sample }> {
  const d: Timing = { times: [], errors: 0 };
  const b: Timing = { times: [], errors: 0 };
  const wall = { d: 0, b: 0 };
  for (let from = 0, wave = 0; from < n; from += concurrency, wave++) {
    const to = Math.min(n, from + concurrency);
    const sides = [
      { t: d, job: driver, k: 'd' as const },
      { t: b, job: bare, k: 'b' as const },
    ];
    for (const s of wave % 2 ? sides.reverse() : sides) {
      const t0 = performance.now();
      await timeJobs(s.t, from, to, concurrency, s.job);
      wall[s.k] += performance.now() - t0;
    }
  }
  return { driver: sample(d, wall.d), bare: sample(b, wall.b) };
}

const fmtMs = (ms: number) => (Number.isNaN(ms) ? '-' : ms.toFixed(0)).padStart(6);

export const ROW_HEADER = `${'operation'.padEnd(26)}conc    n  driver p50    p99   baseline p50    p99   p50 ratio`;

/** One table row: the driver's calls beside the baseline's (named by `kind`: librbd, librados, sdk, cli), measured interleaved. */
export async function compareRow(op: string, conc: number, n: number, kind: string, driver: (i: number) => Promise<unknown>, bare: (i: number) => Promise<unknown>): Promise<void> {
  const r = await measurePair(n, conc, driver, bare);
  const errs = r.driver.errors + r.bare.errors ? `  errors driver ${r.driver.errors} bare ${r.bare.errors}` : '';
  console.log(
    `${op.padEnd(26)}${String(conc).padStart(4)}${String(n).padStart(5)}  ${fmtMs(r.driver.p50)} ${fmtMs(r.driver.p99)}   ${kind.padStart(8)} ${fmtMs(r.bare.p50)} ${fmtMs(r.bare.p99)}   ${(r.driver.p50 / r.bare.p50).toFixed(2).padStart(5)}x${errs}`,
  );
}

export function rssMb(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

export type ProcessRss = Record<'controller' | 'node', { rss: number; peak: number }>;

export const processRss = (pids: { controller: number; node: number }): ProcessRss => ({ controller: rssMb(pids.controller), node: rssMb(pids.node) });

/** The RSS table: each process idle (before any load) and after the load, with its peak. */
export function printRss(idle: ProcessRss, after: ProcessRss): void {
  console.log(`\nRSS (MB)        idle   after load   peak`);
  for (const k of ['controller', 'node'] as const) console.log(`${k.padEnd(14)}${idle[k].rss.toFixed(0).padStart(6)}${after[k].rss.toFixed(0).padStart(13)}${after[k].peak.toFixed(0).padStart(7)}`);
}
