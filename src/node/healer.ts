import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { NodeBackend } from '../backends/types.js';
import { findMount, readMountInfo, type MountEntry } from '../mount/mountinfo.js';
import { FUSE_DAEMONS, bindMount, mountHealth, unmount } from '../mount/mounter.js';
import { fuseDaemonPid, waitExit } from '../mount/fuse-process.js';
import type { RpcContext } from '../csi/handler.js';
import { parseId, type Backend } from '../csi/ids.js';
import type { KeyedTryLock } from '../csi/locks.js';
import type { StageRecord, StageRecords } from './stage-records.js';
import { STAGED_BLOCK_FILE } from '../backends/types.js';

/** What staging mounted: the staging directory, or the device file in it for raw block. */
const stagedPath = (r: StageRecord): string => (r.request.volume_capability?.block ? path.join(r.request.staging_target_path, STAGED_BLOCK_FILE) : r.request.staging_target_path);

/** A mount's identity across bind mounts: the file system and the directory of it that is mounted. */
const layer = (m: MountEntry): string => `${m.majorMinor} ${m.root}`;

/** The layers a kernel restage stacked over at the staging path: a target bound from one of them reads the dead mount. */
const belowStaging = (r: StageRecord, entries: MountEntry[]): Set<string> => new Set(entries.filter((m) => m.mountPoint === path.resolve(stagedPath(r))).slice(0, -1).map(layer));

/**
 * Remounts FUSE volumes whose daemon died: the node plugin's container
 * restarted (taking its FUSE processes with it), a daemon crashed or was
 * OOM-killed. Kubelet does not stage again for pods already running, so the
 * plugin does it from its stage records, at start and then periodically,
 * and binds the new mount onto every pod target that pointed at the dead one.
 * A kernel mount over a FUSE daemon (RBD's loop device over an rbd-fuse file)
 * is staged again by its backend on top of the dead one at the staging path.
 */

const RETRY_MS = 5_000;

export class Healer {
  private timer?: NodeJS.Timeout;
  private running = false;
  private stopped = false;

  constructor(
    private readonly locks: KeyedTryLock,
    private readonly backends: Partial<Record<Backend, NodeBackend>>,
    private readonly records: StageRecords,
    private readonly log: Logger,
  ) {}

  /**
   * One pass now, then one every `intervalMs` (none when 0). A pass that
   * could not finish a volume (a cluster slow to answer, a daemon still
   * flushing) is followed by another within RETRY_MS, whatever the interval:
   * a volume left half released or unhealed must not wait for an interval,
   * or for ever at 0.
   */
  start(intervalMs: number, retryMs = RETRY_MS): void {
    const next = (unfinished: number) => {
      const ms = unfinished ? Math.min(retryMs, intervalMs || retryMs) : intervalMs;
      if (ms > 0 && !this.stopped) this.timer = setTimeout(() => void this.pass().then(next), ms).unref();
    };
    void this.pass().then(next);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Looks at every stage record once; answers how many volumes it could not finish. */
  async pass(): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    let unfinished = 0;
    try {
      const entries = await readMountInfo();
      for (const seen of this.records.all()) {
        const log = this.log.child({ volumeId: seen.request.volume_id, staging: seen.request.staging_target_path });
        const ctx: RpcContext = { reqId: `heal-${Date.now().toString(36)}`, log };
        // The probe takes no lock: a pass that finds every volume still this node's and every mount
        // well never turns one of kubelet's calls away, however slow the cluster is to say so (a
        // fencing backend's answer is a round trip to Ceph or S3 on every pass).
        let care: boolean;
        try {
          care = await this.needsCare(seen, entries, ctx);
        } catch (e) {
          unfinished++;
          log.error({ err: (e as Error).message }, 'could not tell whether the volume needs care; will try again');
          continue;
        }
        if (!care) continue;
        // Kubelet acting on the volume right now wins; the next pass looks again.
        const release = this.locks.tryAcquire([seen.request.volume_id]);
        if (!release) {
          unfinished++;
          continue;
        }
        // What the probe saw may be gone by now (kubelet unstaged it meanwhile): only the record as it is counts.
        const r = this.records.get(seen.request.staging_target_path);
        if (r?.request.volume_id !== seen.request.volume_id) {
          release();
          continue;
        }
        try {
          if (await this.release(r, ctx)) continue;
          const health = r.kernel ? undefined : await mountHealth(stagedPath(r), entries);
          if (health === 'unmounted') {
            // Nothing to heal: the node rebooted or someone unmounted it; kubelet stages again if it needs it.
            this.records.unstaged(r.request.staging_target_path);
            continue;
          }
          await this.heal(r, ctx, health);
        } catch (e) {
          unfinished++;
          log.error({ err: (e as Error).message }, 'could not heal the volume; will try again');
        } finally {
          release();
        }
      }
    } catch (e) {
      unfinished++;
      this.log.error({ err: (e as Error).message }, 'heal pass failed');
    } finally {
      this.running = false;
    }
    return unfinished;
  }

  /**
   * Whether the volume needs the healer under its lock: no longer this node's (a fencing backend
   * says so), a kernel stage over a FUSE daemon that is gone, or a FUSE mount that is not well.
   * Decided again under the lock by whatever acts on it.
   */
  private async needsCare(r: StageRecord, entries: Awaited<ReturnType<typeof readMountInfo>>, ctx: RpcContext): Promise<boolean> {
    const id = parseId(r.request.volume_id, 'v');
    const backend = id && this.backends[id.backend];
    if (id && backend?.owned && !(await backend.owned(id, r.request, ctx))) return true;
    if (r.kernel) {
      if (id && backend?.deadStage && backend.restage && (await backend.deadStage(id, r.request))) return true;
      // A heal cut short after its restage: targets still bound from the dead layer below.
      const below = belowStaging(r, entries);
      for (const target of Object.keys(r.targets)) {
        const top = await findMount(target, entries);
        if (top && below.has(layer(top))) return true;
      }
      return false;
    }
    if ((await mountHealth(stagedPath(r), entries)) !== 'ok') return true;
    for (const target of Object.keys(r.targets)) if ((await mountHealth(target, entries)) === 'dead') return true;
    return false;
  }

  /**
   * A volume that is no longer this node's (fenced, or given to another node
   * while this one was away): its pod targets and staging are unmounted, its
   * client released and its record dropped, and it is never mounted again
   * here. True when it did so; the caller holds the volume's lock.
   */
  private async release(r: StageRecord, ctx: RpcContext): Promise<boolean> {
    const id = parseId(r.request.volume_id, 'v');
    const backend = id && this.backends[id.backend];
    if (!id || !backend?.owned || (await backend.owned(id, r.request, ctx))) return false;
    const staging = r.request.staging_target_path;
    ctx.log.warn('volume is no longer this node\'s (fenced, or published to another node): removing its mounts instead of healing them');
    // Nothing its FUSE daemon still holds can reach the cluster now, and a daemon that no longer
    // answers would hang every unmount below for good (a ceph-fuse thawed after its user was
    // removed cannot log in again to learn it is blocklisted, and waits for ever): it goes first.
    const pid = fuseDaemonPid(FUSE_DAEMONS, staging);
    if (pid !== undefined) {
      ctx.log.warn({ pid }, 'stopping its FUSE daemon before the unmounts');
      process.kill(pid, 'SIGKILL');
      await waitExit(pid, 10_000);
    }
    for (const target of Object.keys(r.targets)) {
      await unmount(target, ctx.log);
      this.records.unpublished(r.request.volume_id, target);
    }
    await backend.unstage(id, staging, ctx, r.request);
    this.records.unstaged(staging);
    ctx.log.warn({ targets: Object.keys(r.targets).length }, 'volume released');
    return true;
  }

  /** Restages a dead staging mount and rebinds dead targets; the caller holds the volume's lock. */
  async heal(r: StageRecord, ctx: RpcContext, known?: Awaited<ReturnType<typeof mountHealth>>): Promise<void> {
    const t0 = performance.now();
    const staging = r.request.staging_target_path;
    const id = parseId(r.request.volume_id, 'v');
    const backend = id && this.backends[id.backend];
    let restaged = false;
    if (r.kernel) {
      // A kernel mount over a FUSE daemon that died answers statfs as ever: the backend tells.
      if (id && backend?.deadStage && backend.restage && (await backend.deadStage(id, r.request))) {
        if (await this.release(r, ctx)) return;
        ctx.log.warn('staged volume reads through a FUSE daemon that is gone: staging it again on top of the dead mount');
        await backend.restage(id, r.request, ctx);
        restaged = true;
      }
    } else {
      const health = known ?? (await mountHealth(stagedPath(r)));
      if (health === 'hung') {
        // Alive but stuck (a network partition, a SIGSTOP): remounting would lose what it holds, and its targets hang alike.
        ctx.log.warn('staging mount does not answer; its FUSE daemon is alive, so it is left alone');
        return;
      }
      if (health === 'dead') {
        if (!id || !backend) return;
        if (await this.release(r, ctx)) return;
        ctx.log.warn('staging mount is dead (its FUSE daemon is gone): mounting it again');
        await unmount(staging, ctx.log);
        await backend.stage(id, r.request, ctx);
        restaged = true;
      }
    }
    const entries = await readMountInfo();
    const below = belowStaging(r, entries);
    let rebound = 0;
    for (const [target, t] of Object.entries(r.targets)) {
      const top = await findMount(target, entries);
      if (!(r.kernel ? !!top && below.has(layer(top)) : (await mountHealth(target, entries)) === 'dead')) continue;
      // Stacked on the dead mount, never in its place: a running pod's container holds its own
      // copy of the target (HostToContainer propagation), which sees mounts made on the target
      // but not a new one after the target was unmounted. NodeUnpublish unmounts the whole stack.
      await bindMount(stagedPath(r), target, t.readonly, t.flags, ctx.log);
      rebound++;
    }
    if (restaged || rebound) ctx.log.info({ restaged, rebound, ms: Math.round(performance.now() - t0) }, 'volume healed');
  }
}
