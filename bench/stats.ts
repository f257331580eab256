import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import pLimit from 'p-limit';

/** Latency sampling for the benchmarks: run `n` jobs at a concurrency, report percentiles. */

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

export async function measure(n: number, concurrency: number, job: (i: number) => Promise<unknown>): Promise<Sample> {
  const limit = pLimit(concurrency);
  const times: number[] = [];
  let errors = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: n }, (_, i) =>
      limit(async () => {
        const s = performance.now();
        try {
          await job(i);
          times.push(performance.now() - s);
        } catch (e) {
          errors++;
          if (errors <= 3) console.error(`  error: ${(e as Error).message.split('\n')[0]}`);
        }
      }),
    ),
  );
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99), errors, wallMs: performance.now() - t0 };
}

export function rssMb(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

const fmtMs = (ms: number) => (Number.isNaN(ms) ? '-' : ms.toFixed(0)).padStart(6);

export const LATENCY_HEADER = `${'operation'.padEnd(26)}   n  driver p50    p99     bare p50    p99   p50 ratio`;

/** One table row: the driver's call beside the bare commands doing the same work, n times each. */
export async function latencyRow(op: string, n: number, driver: (i: number) => Promise<unknown>, bare: (i: number) => Promise<unknown>): Promise<void> {
  const d = await measure(n, 1, driver);
  const b = await measure(n, 1, bare);
  const errs = d.errors + b.errors ? `  errors driver ${d.errors} bare ${b.errors}` : '';
  console.log(`${op.padEnd(26)}${String(n).padStart(4)}  ${fmtMs(d.p50)} ${fmtMs(d.p99)}   ${fmtMs(b.p50)} ${fmtMs(b.p99)}   ${(d.p50 / b.p50).toFixed(2).padStart(5)}x${errs}`);
}
