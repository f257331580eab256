import pLimit from 'p-limit';
import type { Logger } from 'pino';
import { aborted } from '../../errors.js';
import { outsideCall } from '../../util/call-context.js';
import type { S3Api } from './s3-api.js';
import { isNoSuchKey } from './store.js';

/**
 * Server-side copies of a whole tree of objects (snapshots, restores, clones)
 * and the background jobs that run them. A copy can stop at any point (crash,
 * restart, cancel) and be run again: objects already at the destination with
 * the source's size are skipped, so a resumed copy neither repeats finished
 * objects nor misses any.
 */

// Shared by every copy in this process: the store sees at most this many copies at once.
const objectLimit = pLimit(16);
// Parts of large objects have their own pool, so objects waiting for parts cannot starve them.
const partLimit = pLimit(8);

export interface Tree {
  bucket: string;
  prefix: string;
}

export interface CopyResult {
  objects: number;
  bytes: number;
  copied: number;
}

export async function copyTree(store: S3Api, src: Tree, dst: Tree, isCancelled: () => boolean): Promise<CopyResult> {
  const present = new Map<string, number>();
  for await (const page of store.list(dst.bucket, dst.prefix)) for (const o of page) present.set(o.key.slice(dst.prefix.length), o.size);
  const result: CopyResult = { objects: 0, bytes: 0, copied: 0 };
  for await (const page of store.list(src.bucket, src.prefix)) {
    if (isCancelled()) throw aborted('copy was cancelled');
    await Promise.all(
      page.map((o) =>
        objectLimit(async () => {
          const rel = o.key.slice(src.prefix.length);
          result.objects++;
          result.bytes += o.size;
          if (present.get(rel) === o.size || isCancelled()) return;
          try {
            await store.copy({ bucket: src.bucket, key: o.key, size: o.size }, { bucket: dst.bucket, key: dst.prefix + rel }, partLimit);
            result.copied++;
          } catch (e) {
            // Deleted after it was listed: the copy is consistent per object, and this one no longer exists.
            if (!isNoSuchKey(e)) throw e;
            result.objects--;
            result.bytes -= o.size;
          }
        }),
      ),
    );
  }
  if (isCancelled()) throw aborted('copy was cancelled');
  return result;
}

interface Job {
  done: Promise<void>;
  cancelled: boolean;
  error?: Error;
}

/**
 * Copies running in this process, one per target. Callers (RPC retries)
 * join the running job, wait a little, and answer "still copying" if it has
 * not finished; a copy lost with a restart is started again by the next call.
 */
export class CopyJobs {
  private readonly jobs = new Map<string, Job>();

  constructor(private readonly log: Logger) {}

  async run(key: string, work: (isCancelled: () => boolean) => Promise<void>, waitMs: number): Promise<'done' | 'running'> {
    let job = this.jobs.get(key);
    if (!job) {
      const j: Job = { cancelled: false, done: Promise.resolve() };
      // The job outlives the call that starts it: that call's deadline must not stop it.
      j.done = outsideCall(() => work(() => j.cancelled)).catch((e: Error) => {
        j.error = e;
        if (!j.cancelled) this.log.warn({ key, err: e.message }, 'copy stopped; the next request resumes it');
      });
      this.jobs.set(key, (job = j));
    }
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([job.done.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), waitMs)))]);
    clearTimeout(timer);
    if (!finished) return 'running';
    if (this.jobs.get(key) === job) this.jobs.delete(key);
    if (job.error) throw job.error;
    return 'done';
  }

  /** Stops a job and waits until it no longer writes. */
  async cancel(key: string): Promise<void> {
    const job = this.jobs.get(key);
    if (!job) return;
    job.cancelled = true;
    await job.done;
    if (this.jobs.get(key) === job) this.jobs.delete(key);
  }
}
