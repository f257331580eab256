import type { Logger } from 'pino';
import type { CephConn } from '../../ceph/conn.js';
import { cephCommand, cephCommandChain, cephCommandThen, cephError, type CephCommand, type ChainStep } from '../../ceph/rados-bridge.js';
import { unavailable } from '../../errors.js';
import { parseOutput } from '../../util/json.js';
import { EACCES, EAGAIN, ENOENT, EINVAL, EPERM, isErrno, type SubvolumeApi, type SubvolumeInfo } from './subvolume-api.js';

/**
 * Typed access to `ceph fs subvolume ...` (the mgr volumes module) for one
 * cluster, file system and subvolume group, through the long-lived rados
 * client (the real SubvolumeApi). Failures carry the errno as exit code, as from the CLI.
 */

const T = 45_000;

export class CephFsCli implements SubvolumeApi {
  constructor(
    private readonly conn: CephConn,
    readonly fs: string,
    readonly group: string,
    private readonly log?: Logger,
  ) {}

  private mon(cmd: CephCommand): Promise<string> {
    return cephCommand(this.conn, 'mon', { format: 'json', ...cmd }, { timeoutMs: T, log: this.log });
  }

  private mgr(cmd: CephCommand): Promise<string> {
    return cephCommand(this.conn, 'mgr', { format: 'json', ...cmd }, { timeoutMs: T, log: this.log });
  }

  /** A `fs subvolume ...` command on this file system and group. */
  private svCmd(verb: string, args: Record<string, string | number | boolean> = {}): CephCommand {
    return { format: 'json', prefix: `fs subvolume ${verb}`, vol_name: this.fs, group_name: this.group, ...args };
  }

  private sv(verb: string, args: Record<string, string | number | boolean> = {}): Promise<string> {
    return this.mgr(this.svCmd(verb, args));
  }

  private createCmd(name: string, bytes: number, pool?: string): CephCommand {
    return this.svCmd('create', { sub_name: name, size: bytes, namespace_isolated: true, ...(pool ? { pool_layout: pool } : {}) });
  }

  async ensureGroup(): Promise<void> {
    await this.mgr({ prefix: 'fs subvolumegroup create', vol_name: this.fs, group_name: this.group });
  }

  async fsNames(): Promise<string[]> {
    return parseOutput<Array<{ name: string }>>(await this.mon({ prefix: 'fs ls' }), 'fs ls').map((f) => f.name);
  }

  async groupNames(): Promise<string[]> {
    return parseOutput<Array<{ name: string }>>(await this.mgr({ prefix: 'fs subvolumegroup ls', vol_name: this.fs }), 'fs subvolumegroup ls').map((g) => g.name);
  }

  async info(name: string): Promise<SubvolumeInfo | undefined> {
    return this.lookup(() => this.sv('info', { sub_name: name }));
  }

  async grow(name: string, bytes: number): Promise<SubvolumeInfo | undefined> {
    const at = { vol_name: this.fs, group_name: this.group, sub_name: name };
    const resize: CephCommand = { format: 'json', prefix: 'fs subvolume resize', ...at, new_size: String(bytes), no_shrink: true };
    // Only a larger size is sent: `--no-shrink` refuses only a size below the bytes used, and sets any other, shrinking the quota.
    return this.lookup(async () => (await cephCommandThen(this.conn, 'mgr', { format: 'json', prefix: 'fs subvolume info', ...at }, { field: 'bytes_quota', below: bytes, equals: { state: 'complete' }, cmd: resize }, { timeoutMs: T, log: this.log })).out);
  }

  /** An `info` answer read, or what its failure says of the subvolume. */
  private async lookup(ask: () => Promise<string>): Promise<SubvolumeInfo | undefined> {
    try {
      const r = parseOutput<Record<string, unknown>>(await ask(), 'fs subvolume info');
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

  /** The subvolume's path, undefined when it does not exist: half the mgr's work of an info. */
  async getpath(name: string): Promise<string | undefined> {
    try {
      const out = (await this.sv('getpath', { sub_name: name })).trim();
      // Answered as plain text whatever the format asked.
      return out.startsWith('"') ? parseOutput<string>(out, 'fs subvolume getpath') : out;
    } catch (e) {
      if (isErrno(e, ENOENT)) return undefined;
      throw e;
    }
  }

  /** Note: create on an existing subvolume resizes it; callers look first. */
  async create(name: string, bytes: number, pool?: string): Promise<void> {
    await this.mgr(this.createCmd(name, bytes, pool));
  }

  async createIfMissing(name: string, bytes: number, pool: string | undefined, key: string, value: string): Promise<'found' | 'made'> {
    const [lookup, ...made] = await cephCommandChain(
      this.conn,
      'mgr',
      { lookup: this.svCmd('getpath', { sub_name: name }), missing: ENOENT, then: [this.createCmd(name, bytes, pool), this.svCmd('metadata set', { sub_name: name, key_name: key, value })] },
      { timeoutMs: T, log: this.log },
    );
    const failed = (what: string, s: ChainStep) => cephError(`ceph fs subvolume ${what}`, s.rc, s.err);
    // A clone target answers EAGAIN until its clone completes: it is there.
    if (lookup!.rc === 0 || Math.abs(lookup!.rc) === EAGAIN) return 'found';
    if (Math.abs(lookup!.rc) !== ENOENT) throw failed('getpath', lookup!);
    for (const [i, what] of ['create', 'metadata set'].entries()) {
      const s = made[i];
      if (!s) throw unavailable(`ceph fs subvolume ${what} gave no answer; retry`);
      if (s.rc !== 0) throw failed(what, s);
    }
    return 'made';
  }

  async resize(name: string, bytes: number): Promise<void> {
    await this.sv('resize', { sub_name: name, new_size: String(bytes), no_shrink: true });
  }

  /** Removes a subvolume; with retainSnapshots its snapshots stay restorable. */
  async remove(name: string, retainSnapshots: boolean, force = false): Promise<void> {
    try {
      await this.sv('rm', { sub_name: name, retain_snapshots: retainSnapshots, force });
    } catch (e) {
      if (!isErrno(e, ENOENT)) throw e;
    }
  }

  async list(): Promise<string[]> {
    try {
      return parseOutput<Array<{ name: string }>>(await this.sv('ls'), 'fs subvolume ls').map((e) => e.name);
    } catch (e) {
      if (isErrno(e, ENOENT)) return [];
      throw e;
    }
  }

  async metaList(name: string): Promise<Record<string, string>> {
    return parseOutput<Record<string, string>>(await this.sv('metadata ls', { sub_name: name }), 'fs subvolume metadata ls');
  }

  async metaSet(name: string, key: string, value: string): Promise<void> {
    await this.sv('metadata set', { sub_name: name, key_name: key, value });
  }

  async metaRemove(name: string, key: string): Promise<void> {
    try {
      await this.sv('metadata rm', { sub_name: name, key_name: key, force: true });
    } catch (e) {
      if (!isErrno(e, ENOENT)) throw e;
    }
  }

  async snapCreate(name: string, snap: string): Promise<void> {
    await this.sv('snapshot create', { sub_name: name, snap_name: snap });
  }

  async snapRemove(name: string, snap: string): Promise<void> {
    try {
      await this.sv('snapshot rm', { sub_name: name, snap_name: snap, force: true });
    } catch (e) {
      if (!isErrno(e, ENOENT)) throw e;
    }
  }

  async snapList(name: string): Promise<string[]> {
    try {
      return parseOutput<Array<{ name: string }>>(await this.sv('snapshot ls', { sub_name: name }), 'fs subvolume snapshot ls').map((e) => e.name);
    } catch (e) {
      if (isErrno(e, ENOENT)) return [];
      throw e;
    }
  }

  async snapMetaList(name: string, snap: string): Promise<Record<string, string> | undefined> {
    try {
      return parseOutput<Record<string, string>>(await this.sv('snapshot metadata ls', { sub_name: name, snap_name: snap }), 'fs subvolume snapshot metadata ls');
    } catch (e) {
      if (isErrno(e, ENOENT)) return undefined;
      throw e;
    }
  }

  /**
   * Snapshot records of a removed subvolume. Ceph keeps such a subvolume's
   * snapshots (--retain-snapshots) but no longer answers for their metadata,
   * so DeleteVolume copies the records to the mon's config-key store first.
   */
  private retainedKey(name: string, snap: string): string {
    return `strata/cephfs/${this.fs}/${this.group}/${name}/${snap}`;
  }

  async retainedGet(name: string, snap: string): Promise<string | undefined> {
    try {
      return await this.mon({ prefix: 'config-key get', key: this.retainedKey(name, snap), format: 'plain' });
    } catch (e) {
      if (isErrno(e, ENOENT)) return undefined;
      throw e;
    }
  }

  async retainedSet(name: string, snap: string, value: string): Promise<void> {
    await this.mon({ prefix: 'config-key set', key: this.retainedKey(name, snap), val: value });
  }

  async retainedRemove(name: string, snap: string): Promise<void> {
    try {
      await this.mon({ prefix: 'config-key rm', key: this.retainedKey(name, snap) });
    } catch (e) {
      if (!isErrno(e, ENOENT)) throw e;
    }
  }

  /**
   * Which snapshot holds a snapshot name. Names are global to the driver, so
   * CreateSnapshot claims its name here before taking the snapshot: one
   * mon read answers "taken elsewhere?" whatever the number of volumes.
   */
  private claimKey(snap: string): string {
    return `strata/cephfs/snapshot-names/${snap}`;
  }

  async claimGet(snap: string): Promise<string | undefined> {
    try {
      return await this.mon({ prefix: 'config-key get', key: this.claimKey(snap), format: 'plain' });
    } catch (e) {
      if (isErrno(e, ENOENT)) return undefined;
      throw e;
    }
  }

  async claimSet(snap: string, snapshotId: string): Promise<void> {
    await this.mon({ prefix: 'config-key set', key: this.claimKey(snap), val: snapshotId });
  }

  async claimRemove(snap: string): Promise<void> {
    try {
      await this.mon({ prefix: 'config-key rm', key: this.claimKey(snap) });
    } catch (e) {
      if (!isErrno(e, ENOENT)) throw e;
    }
  }

  async snapMetaSet(name: string, snap: string, key: string, value: string): Promise<void> {
    await this.sv('snapshot metadata set', { sub_name: name, snap_name: snap, key_name: key, value });
  }

  /** Starts an asynchronous clone of name@snap into target (same group). */
  async clone(name: string, snap: string, target: string, pool?: string): Promise<void> {
    await this.sv('snapshot clone', { sub_name: name, snap_name: snap, target_sub_name: target, target_group_name: this.group, ...(pool ? { pool_layout: pool } : {}) });
  }

  async cloneState(target: string): Promise<{ state: string; reason?: string } | undefined> {
    try {
      const r = parseOutput<{ status: { state: string; failure?: { errstr?: string } } }>(
        await this.mgr({ prefix: 'fs clone status', vol_name: this.fs, clone_name: target, group_name: this.group }),
        'fs clone status',
      );
      return { state: r.status.state, reason: r.status.failure?.errstr };
    } catch (e) {
      if (isErrno(e, ENOENT)) return undefined;
      throw e;
    }
  }

  async cloneCancel(target: string): Promise<void> {
    try {
      await this.mgr({ prefix: 'fs clone cancel', vol_name: this.fs, clone_name: target, group_name: this.group });
    } catch (e) {
      // EINVAL: "cannot cancel -- clone finished".
      if (!isErrno(e, ENOENT) && !isErrno(e, EINVAL)) throw e;
    }
  }

  /** Creates (or keeps) a Ceph user that can reach only this subvolume; returns its key. */
  async authorize(name: string, authId: string): Promise<string> {
    await this.sv('authorize', { sub_name: name, auth_id: authId, access_level: 'rw' });
    return (await this.mon({ prefix: 'auth get-key', entity: `client.${authId}`, format: 'plain' })).trim();
  }

  async deauthorize(name: string, authId: string): Promise<void> {
    try {
      await this.sv('deauthorize', { sub_name: name, auth_id: authId });
    } catch (e) {
      if (!isErrno(e, ENOENT)) throw e;
    }
  }

  /** Whether the cluster has this Ceph user (a mon lookup, with the caps authorize's key read needs); undefined when the identity may not ask. */
  async userExists(authId: string): Promise<boolean | undefined> {
    try {
      await this.mon({ prefix: 'auth get-key', entity: `client.${authId}`, format: 'plain' });
      return true;
    } catch (e) {
      if (isErrno(e, ENOENT)) return false;
      if (isErrno(e, EACCES) || isErrno(e, EPERM)) return undefined;
      throw e;
    }
  }

  /** The Ceph users authorized on this subvolume. */
  async authorizedUsers(name: string): Promise<string[]> {
    try {
      const list = parseOutput<Array<Record<string, string>>>(await this.sv('authorized_list', { sub_name: name }), 'fs subvolume authorized_list');
      return list.flatMap((e) => Object.keys(e));
    } catch (e) {
      if (isErrno(e, ENOENT)) return [];
      throw e;
    }
  }

  /**
   * Evicts the MDS sessions of a user that mounted this subvolume; the MDS
   * blocklists their client instances, so nothing they still hold reaches the
   * OSDs. A user that is not (or no longer) authorized has nothing to evict.
   */
  async evict(name: string, authId: string): Promise<void> {
    try {
      await this.sv('evict', { sub_name: name, auth_id: authId });
    } catch (e) {
      if (!isErrno(e, ENOENT) && !isErrno(e, EINVAL)) throw e;
    }
  }

  async poolAvailable(pool: string): Promise<number | undefined> {
    const df = parseOutput<{ pools: Array<{ name: string; stats: { max_avail: number } }> }>(await this.mon({ prefix: 'df' }), 'df');
    return df.pools.find((p) => p.name === pool)?.stats.max_avail;
  }

  /** The file system's data pools; undefined when the cluster has no such file system. */
  async dataPools(): Promise<string[] | undefined> {
    const fss = parseOutput<Array<{ name: string; data_pools: string[] }>>(await this.mon({ prefix: 'fs ls' }), 'fs ls');
    return fss.find((f) => f.name === this.fs)?.data_pools;
  }
}
