import type { Logger } from 'pino';
import { cephArgs, type CephConn } from '../../ceph/conn.js';
import { ExecError, run, runAllowFail } from '../../util/exec.js';
import { parseOutput } from '../../util/json.js';

/**
 * Typed access to the `rbd` and `ceph` CLIs for one cluster and identity.
 * Every method is one command; exit codes are the errno librbd reports, so
 * callers can tell "missing" (2) from "exists" (17) from "busy" (16).
 */

export const ENOENT = 2;
export const EBUSY = 16;
export const EEXIST = 17;
export const ENOTEMPTY = 39;

export interface ImageParent {
  pool: string;
  image: string;
  id: string;
  snapshot: string;
  trash: boolean;
}

export interface ImageInfo {
  name: string;
  id: string;
  size: number;
  features: string[];
  parent?: ImageParent;
  createTimestamp?: string;
}

export interface SnapInfo {
  id: number;
  name: string;
  size: number;
  timestamp: string;
  namespace?: { type: string };
}

export interface CreateOptions {
  features: string[];
  dataPool?: string;
}

const TIMEOUT_MS = 45_000;

export class RbdCli {
  constructor(
    private readonly conn: CephConn,
    private readonly log?: Logger,
  ) {}

  private async rbd(args: string[]): Promise<string> {
    return (await run('rbd', [...cephArgs(this.conn), ...args], { timeoutMs: TIMEOUT_MS, log: this.log })).stdout;
  }

  private async rbdJson<T>(args: string[]): Promise<T> {
    return parseOutput<T>(await this.rbd([...args, '--format', 'json']), `rbd ${args[0]}`);
  }

  /** Returns undefined when the image does not exist. */
  async info(pool: string, image: string): Promise<ImageInfo | undefined> {
    try {
      return toInfo(await this.rbdJson<RawInfo>(['info', `${pool}/${image}`]));
    } catch (e) {
      if (isErrno(e, ENOENT)) return undefined;
      throw e;
    }
  }

  async infoById(pool: string, id: string): Promise<ImageInfo | undefined> {
    try {
      return toInfo(await this.rbdJson<RawInfo>(['info', '--pool', pool, '--image-id', id]));
    } catch (e) {
      if (isErrno(e, ENOENT)) return undefined;
      throw e;
    }
  }

  async create(pool: string, image: string, sizeBytes: number, opts: CreateOptions): Promise<void> {
    const args = ['create', `${pool}/${image}`, '--size', `${sizeBytes}B`, '--image-feature', opts.features.join(',')];
    if (opts.dataPool) args.push('--data-pool', opts.dataPool);
    await this.rbd(args);
  }

  async clone(pool: string, parent: string, snap: string, child: string, opts: CreateOptions): Promise<void> {
    const args = ['clone', '--rbd-default-clone-format', '2', `${pool}/${parent}@${snap}`, `${pool}/${child}`, '--image-feature', opts.features.join(',')];
    if (opts.dataPool) args.push('--data-pool', opts.dataPool);
    await this.rbd(args);
  }

  /**
   * Removes image metadata under `prefix`. rbd clone copies the parent's
   * metadata, so a fresh clone carries its source's name, attachments and
   * snapshot records until they are stripped.
   */
  async metaStrip(pool: string, image: string, prefix: string): Promise<void> {
    for (const key of Object.keys(await this.metaList(pool, image))) if (key.startsWith(prefix)) await this.metaRemove(pool, image, key);
  }

  async resize(pool: string, image: string, sizeBytes: number): Promise<void> {
    await this.rbd(['resize', `${pool}/${image}`, '--size', `${sizeBytes}B`]);
  }

  async flatten(pool: string, image: string): Promise<void> {
    await this.rbd(['flatten', `${pool}/${image}`]);
  }

  /** rbd prints nothing at all, not "{}", for an image without metadata (a create cut short leaves one). */
  async metaList(pool: string, image: string): Promise<Record<string, string>> {
    const out = await this.rbd(['image-meta', 'list', `${pool}/${image}`, '--format', 'json']);
    return out.trim() ? parseOutput<Record<string, string>>(out, 'rbd image-meta list') : {};
  }

  async metaSet(pool: string, image: string, key: string, value: string): Promise<void> {
    await this.rbd(['image-meta', 'set', `${pool}/${image}`, key, value]);
  }

  async metaRemove(pool: string, image: string, key: string): Promise<void> {
    try {
      await this.rbd(['image-meta', 'remove', `${pool}/${image}`, key]);
    } catch (e) {
      if (!isErrno(e, ENOENT)) throw e;
    }
  }

  async snapCreate(pool: string, image: string, snap: string): Promise<void> {
    try {
      await this.rbd(['snap', 'create', `${pool}/${image}@${snap}`]);
    } catch (e) {
      if (!isErrno(e, EEXIST)) throw e;
    }
  }

  /** Removes a snapshot; with clone v2 one that still has clones moves to the trash namespace. */
  async snapRemove(pool: string, image: string, snap: string): Promise<void> {
    try {
      await this.rbd(['snap', 'rm', `${pool}/${image}@${snap}`]);
    } catch (e) {
      if (!isErrno(e, ENOENT)) throw e;
    }
  }

  async snapList(pool: string, image: string): Promise<SnapInfo[]> {
    return this.rbdJson<SnapInfo[]>(['snap', 'ls', '--all', `${pool}/${image}`]);
  }

  /**
   * Removes an image. One with snapshots (trashed ones that clones still
   * need, or temporary ones a crash left) is not removed: the caller decides
   * (see trashMove).
   */
  async remove(pool: string, image: string): Promise<'removed' | 'has-snapshots' | 'missing'> {
    const r = await runAllowFail('rbd', [...cephArgs(this.conn), 'rm', '--no-progress', `${pool}/${image}`], { timeoutMs: TIMEOUT_MS, log: this.log });
    if (r.exitCode === 0) return 'removed';
    if (r.exitCode === ENOENT) return 'missing';
    if (r.exitCode === ENOTEMPTY) return 'has-snapshots';
    throw new ExecError('rbd rm', r.exitCode, r.stderr, false);
  }

  /** Moves an image to the RBD trash, where it waits until its last clone is gone (see purgeTrash). */
  async trashMove(pool: string, image: string): Promise<void> {
    await this.rbd(['trash', 'mv', `${pool}/${image}`]);
  }

  async trashList(pool: string): Promise<Array<{ id: string; name: string }>> {
    // --all: an image whose `rbd rm` was killed midway can wait there with source REMOVING, which plain ls hides.
    return this.rbdJson<Array<{ id: string; name: string }>>(['trash', 'ls', '--all', pool]);
  }

  /** Tries to purge a trashed image; false when it still has clones or snapshots. */
  async trashRemove(pool: string, id: string): Promise<boolean> {
    const r = await runAllowFail('rbd', [...cephArgs(this.conn), 'trash', 'rm', '--no-progress', `${pool}/${id}`], { timeoutMs: TIMEOUT_MS, log: this.log });
    return r.exitCode === 0 || r.exitCode === ENOENT;
  }

  async list(pool: string): Promise<string[]> {
    try {
      return await this.rbdJson<string[]>(['ls', pool]);
    } catch (e) {
      if (isErrno(e, ENOENT)) return [];
      throw e;
    }
  }

  /** Clients that have the image open (krbd, rbd-nbd, rbd-fuse all show here); undefined when there is no such image. */
  async watchers(pool: string, image: string): Promise<string[] | undefined> {
    try {
      const s = await this.rbdJson<{ watchers?: Array<{ address: string }> }>(['status', `${pool}/${image}`]);
      return (s.watchers ?? []).map((w) => w.address);
    } catch (e) {
      if (isErrno(e, ENOENT)) return undefined;
      throw e;
    }
  }

  /** Pools with the rbd application enabled, and the bytes each can still take. */
  async rbdPools(): Promise<Array<{ name: string; maxAvail: number }>> {
    const r = await run('ceph', [...cephArgs(this.conn), 'df', '--format', 'json'], { timeoutMs: TIMEOUT_MS, log: this.log });
    const df = parseOutput<{ pools: Array<{ name: string; stats: { max_avail: number } }> }>(r.stdout, 'ceph df');
    const apps = await run('ceph', [...cephArgs(this.conn), 'osd', 'pool', 'ls', 'detail', '--format', 'json'], { timeoutMs: TIMEOUT_MS, log: this.log });
    const rbdPools = new Set(
      parseOutput<Array<{ pool_name: string; application_metadata?: Record<string, unknown> }>>(apps.stdout, 'ceph osd pool ls')
        .filter((p) => p.application_metadata && 'rbd' in p.application_metadata)
        .map((p) => p.pool_name),
    );
    return df.pools.filter((p) => rbdPools.has(p.name)).map((p) => ({ name: p.name, maxAvail: p.stats.max_avail }));
  }

  async poolAvailable(pool: string): Promise<number | undefined> {
    const r = await run('ceph', [...cephArgs(this.conn), 'df', '--format', 'json'], { timeoutMs: TIMEOUT_MS, log: this.log });
    const df = parseOutput<{ pools: Array<{ name: string; stats: { max_avail: number } }> }>(r.stdout, 'ceph df');
    return df.pools.find((p) => p.name === pool)?.stats.max_avail;
  }
}

interface RawInfo {
  name: string;
  id: string;
  size: number;
  features: string[];
  create_timestamp?: string;
  parent?: { pool: string; image: string; id: string; snapshot: string; trash: boolean };
}

function toInfo(r: RawInfo): ImageInfo {
  return {
    name: r.name,
    id: r.id,
    size: r.size,
    features: r.features,
    createTimestamp: r.create_timestamp,
    parent: r.parent ? { pool: r.parent.pool, image: r.parent.image, id: r.parent.id, snapshot: r.parent.snapshot, trash: !!r.parent.trash } : undefined,
  };
}

export function isErrno(e: unknown, code: number): boolean {
  return e instanceof ExecError && e.exitCode === code;
}
