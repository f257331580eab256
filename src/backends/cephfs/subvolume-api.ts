import type { Logger } from 'pino';
import type { CephConn } from '../../ceph/conn.js';
export { EACCES, EAGAIN, EEXIST, EINVAL, ENOENT, ENOTEMPTY, EPERM, isErrno } from '../../ceph/errno.js';

/**
 * The CephFS operations the controller needs, for one cluster identity, file
 * system and subvolume group: the mgr volumes module (`ceph fs subvolume ...`)
 * and a few mon commands (config-key, auth, fs ls, df). Failures are ExecError
 * carrying the mgr's errno as exit code, as from the CLI, so callers tell
 * "missing" (ENOENT) from "exists" (EEXIST) from "a clone target"
 * (EAGAIN). The real one is CephFsCli (commands through the long-lived rados
 * client); unit tests use an in-memory fake.
 */


export interface SubvolumeInfo {
  path: string;
  bytesQuota: number; // 0 when unlimited
  bytesUsed: number;
  state: string; // complete, snapshot-retained, pending, in-progress, failed, canceled
  dataPool: string;
  createdAt: string;
}

export interface SubvolumeApi {
  readonly fs: string;
  readonly group: string;
  /** Creates the subvolume group; succeeds when it exists. */
  ensureGroup(): Promise<void>;
  fsNames(): Promise<string[]>;
  groupNames(): Promise<string[]>;
  /** Undefined when missing; state "in-progress" for a clone target not yet complete (the mgr answers it EAGAIN). */
  info(name: string): Promise<SubvolumeInfo | undefined>;
  /** Undefined when missing (or only its snapshots are retained); EAGAIN for a clone target not yet complete. */
  getpath(name: string): Promise<string | undefined>;
  /** Creates the subvolume with its own RADOS namespace; on an existing one it resizes. ENOENT for a missing file system or group, EINVAL for a pool layout that is no data pool. */
  create(name: string, bytes: number, pool?: string): Promise<void>;
  /**
   * A blank subvolume and its record in one round trip: the lookup (`getpath`), then, only when
   * it finds nothing, `create` and the metadata `key`. 'found' when it exists (a clone target
   * too); errors as from `create` and `metaSet`.
   */
  createIfMissing(name: string, bytes: number, pool: string | undefined, key: string, value: string): Promise<'found' | 'made'>;
  /**
   * Grows the quota of a complete subvolume to `bytes` unless it is that large already: the
   * lookup and the resize it decides in one round trip. Returns the subvolume as it was before,
   * as `info` does (undefined when missing, state "in-progress" for a clone target).
   */
  grow(name: string, bytes: number): Promise<SubvolumeInfo | undefined>;
  /** Sets the quota with `--no-shrink`, which refuses (EINVAL) only a size below the bytes used: a size below the quota shrinks it. */
  resize(name: string, bytes: number): Promise<void>;
  /** Removes a subvolume (succeeds when it is gone); with retainSnapshots its snapshots stay restorable; force also cancels a clone. */
  remove(name: string, retainSnapshots: boolean, force?: boolean): Promise<void>;
  /** Subvolume names of the group; [] when the group does not exist. */
  list(): Promise<string[]>;
  metaList(name: string): Promise<Record<string, string>>;
  metaSet(name: string, key: string, value: string): Promise<void>;
  /** Succeeds when the key is already gone. */
  metaRemove(name: string, key: string): Promise<void>;
  /** EEXIST when the snapshot exists. */
  snapCreate(name: string, snap: string): Promise<void>;
  /** Succeeds when it is already gone; EAGAIN while clones from it are pending. */
  snapRemove(name: string, snap: string): Promise<void>;
  /** [] for a subvolume that does not exist. */
  snapList(name: string): Promise<string[]>;
  /** Undefined when the snapshot (or its subvolume) is missing, or the subvolume keeps only retained snapshots. */
  snapMetaList(name: string, snap: string): Promise<Record<string, string> | undefined>;
  snapMetaSet(name: string, snap: string, key: string, value: string): Promise<void>;
  /** Snapshot records of a removed subvolume, in config-key (Ceph no longer answers for a retained snapshot's metadata). */
  retainedGet(name: string, snap: string): Promise<string | undefined>;
  retainedSet(name: string, snap: string, value: string): Promise<void>;
  retainedRemove(name: string, snap: string): Promise<void>;
  /** Which snapshot id holds a snapshot name (config-key). */
  claimGet(snap: string): Promise<string | undefined>;
  claimSet(snap: string, snapshotId: string): Promise<void>;
  claimRemove(snap: string): Promise<void>;
  /** Starts an asynchronous clone of name@snap into target (same group). */
  clone(name: string, snap: string, target: string, pool?: string): Promise<void>;
  /** Undefined when the target does not exist. */
  cloneState(target: string): Promise<{ state: string; reason?: string } | undefined>;
  /** Stops a clone still pending or in progress (`rm --force` refuses those), releasing its source snapshot; succeeds when it has finished or is gone. */
  cloneCancel(target: string): Promise<void>;
  /** Creates (or keeps) a Ceph user that can reach only this subvolume; returns its key. */
  authorize(name: string, authId: string): Promise<string>;
  /** Succeeds when the user is not authorized. */
  deauthorize(name: string, authId: string): Promise<void>;
  /** Undefined when the identity may not ask. */
  userExists(authId: string): Promise<boolean | undefined>;
  authorizedUsers(name: string): Promise<string[]>;
  /** Evicts the user's MDS sessions on this subvolume; succeeds when there is nothing to evict. */
  evict(name: string, authId: string): Promise<void>;
  poolAvailable(pool: string): Promise<number | undefined>;
  /** The file system's data pools; undefined when the cluster has no such file system. */
  dataPools(): Promise<string[] | undefined>;
}

/** Makes the SubvolumeApi of one cluster identity, file system and group, for one call's logger. */
export type SubvolumeConnector = (conn: CephConn, fs: string, group: string, log?: Logger) => SubvolumeApi;

