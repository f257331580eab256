import type { Logger } from 'pino';
import { cephArgs, type CephConn } from '../../ceph/conn.js';
import { ExecError, run } from '../../util/exec.js';

/**
 * Typed access to `ceph fs subvolume ...` (the mgr volumes module) for one
 * cluster, file system and subvolume group. Exit codes are errnos, as for rbd.
 */

export const ENOENT = 2;
export const EEXIST = 17;
export const EAGAIN = 11;
export const ENOTEMPTY = 39;

export interface SubvolumeInfo {
  path: string;
  bytesQuota: number; // 0 when unlimited
  bytesUsed: number;
  state: string; // complete, snapshot-retained, pending, in-progress, failed, canceled
  dataPool: string;
  createdAt: string;
}

const T = 45_000;

export class CephFsCli {
  constructor(
    private readonly conn: CephConn,
    readonly fs: string,
    readonly group: string,
    private readonly log?: Logger,
  ) {}

  async ceph(args: string[]): Promise<string> {
    return (await run('ceph', [...cephArgs(this.conn), ...args], { timeoutMs: T, log: this.log })).stdout;
  }

  private sv(args: string[]): Promise<string> {
    return this.ceph(['fs', 'subvolume', ...args, '--group_name', this.group]);
  }

  async ensureGroup(): Promise<void> {
    await this.ceph(['fs', 'subvolumegroup', 'create', this.fs, this.group]);
  }

  async info(name: string): Promise<SubvolumeInfo | undefined> {
    try {
      const r = JSON.parse(await this.sv(['info', this.fs, name, '--format', 'json'])) as Record<string, unknown>;
      return {
        path: String(r.path ?? ''),
        bytesQuota: typeof r.bytes_quota === 'number' ? r.bytes_quota : 0,
        bytesUsed: Number(r.bytes_used ?? 0),
        state: String(r.state ?? 'complete'),
        dataPool: String(r.data_pool ?? ''),
        createdAt: String(r.created_at ?? ''),
      };
    } catch (e) {
      if (isErrno(e, ENOENT)) return undefined;
      // A clone target answers EAGAIN ("not ready for operation info") until its clone completes.
      if (isErrno(e, EAGAIN)) return { path: '', bytesQuota: 0, bytesUsed: 0, state: 'in-progress', dataPool: '', createdAt: '' };
      throw e;
    }
  }

  /** Note: create on an existing subvolume resizes it; callers look first. */
  async create(name: string, bytes: number, pool?: string): Promise<void> {
    const args = ['create', this.fs, name, '--size', String(bytes), '--namespace-isolated'];
    if (pool) args.push('--pool_layout', pool);
    await this.sv(args);
  }

  async resize(name: string, bytes: number): Promise<void> {
    await this.sv(['resize', this.fs, name, String(bytes), '--no_shrink']);
  }

  /** Removes a subvolume; with retainSnapshots its snapshots stay restorable. */
  async remove(name: string, retainSnapshots: boolean, force = false): Promise<void> {
    const args = ['rm', this.fs, name];
    if (retainSnapshots) args.push('--retain-snapshots');
    if (force) args.push('--force');
    try {
      await this.sv(args);
    } catch (e) {
      if (!isErrno(e, ENOENT)) throw e;
    }
  }

  async list(): Promise<string[]> {
    try {
      return (JSON.parse(await this.sv(['ls', this.fs, '--format', 'json'])) as Array<{ name: string }>).map((e) => e.name);
    } catch (e) {
      if (isErrno(e, ENOENT)) return [];
      throw e;
    }
  }

  async metaList(name: string): Promise<Record<string, string>> {
    return JSON.parse(await this.sv(['metadata', 'ls', this.fs, name, '--format', 'json'])) as Record<string, string>;
  }

  async metaSet(name: string, key: string, value: string): Promise<void> {
    await this.sv(['metadata', 'set', this.fs, name, key, value]);
  }

  async metaRemove(name: string, key: string): Promise<void> {
    try {
      await this.sv(['metadata', 'rm', this.fs, name, key, '--force']);
    } catch (e) {
      if (!isErrno(e, ENOENT)) throw e;
    }
  }

  async snapCreate(name: string, snap: string): Promise<void> {
    await this.sv(['snapshot', 'create', this.fs, name, snap]);
  }

  async snapRemove(name: string, snap: string): Promise<void> {
    try {
      await this.sv(['snapshot', 'rm', this.fs, name, snap, '--force']);
    } catch (e) {
      if (!isErrno(e, ENOENT)) throw e;
    }
  }

  async snapList(name: string): Promise<string[]> {
    try {
      return (JSON.parse(await this.sv(['snapshot', 'ls', this.fs, name, '--format', 'json'])) as Array<{ name: string }>).map((e) => e.name);
    } catch (e) {
      if (isErrno(e, ENOENT)) return [];
      throw e;
    }
  }

  async snapMetaList(name: string, snap: string): Promise<Record<string, string> | undefined> {
    try {
      return JSON.parse(await this.sv(['snapshot', 'metadata', 'ls', this.fs, name, snap, '--format', 'json'])) as Record<string, string>;
    } catch (e) {
      if (isErrno(e, ENOENT)) return undefined;
      throw e;
    }
  }

  async snapMetaSet(name: string, snap: string, key: string, value: string): Promise<void> {
    await this.sv(['snapshot', 'metadata', 'set', this.fs, name, snap, key, value]);
  }

  /** Starts an asynchronous clone of name@snap into target (same group). */
  async clone(name: string, snap: string, target: string, pool?: string): Promise<void> {
    const args = ['fs', 'subvolume', 'snapshot', 'clone', this.fs, name, snap, target, '--group_name', this.group, '--target_group_name', this.group];
    if (pool) args.push('--pool_layout', pool);
    await this.ceph(args);
  }

  async cloneState(target: string): Promise<{ state: string; reason?: string } | undefined> {
    try {
      const r = JSON.parse(await this.ceph(['fs', 'clone', 'status', this.fs, target, '--group_name', this.group, '--format', 'json'])) as {
        status: { state: string; failure?: { errstr?: string } };
      };
      return { state: r.status.state, reason: r.status.failure?.errstr };
    } catch (e) {
      if (isErrno(e, ENOENT)) return undefined;
      throw e;
    }
  }

  /** Creates (or keeps) a Ceph user that can reach only this subvolume; returns its key. */
  async authorize(name: string, authId: string): Promise<string> {
    await this.sv(['authorize', this.fs, name, authId, '--access_level', 'rw']);
    return (await this.ceph(['auth', 'get-key', `client.${authId}`])).trim();
  }

  async deauthorize(name: string, authId: string): Promise<void> {
    try {
      await this.sv(['deauthorize', this.fs, name, authId]);
    } catch (e) {
      if (!isErrno(e, ENOENT)) throw e;
    }
  }

  async poolAvailable(pool: string): Promise<number | undefined> {
    const df = JSON.parse(await this.ceph(['df', '--format', 'json'])) as { pools: Array<{ name: string; stats: { max_avail: number } }> };
    return df.pools.find((p) => p.name === pool)?.stats.max_avail;
  }

  async dataPools(): Promise<string[]> {
    const fss = JSON.parse(await this.ceph(['fs', 'ls', '--format', 'json'])) as Array<{ name: string; data_pools: string[] }>;
    return fss.find((f) => f.name === this.fs)?.data_pools ?? [];
  }
}

export function isErrno(e: unknown, code: number): boolean {
  return e instanceof ExecError && e.exitCode === code;
}
