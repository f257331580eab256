import type { Logger } from 'pino';
import type { CephConn } from '../../ceph/conn.js';
export { EACCES, EBUSY, EEXIST, ENOENT, ENOTEMPTY, EPERM, isErrno } from '../../ceph/errno.js';

/**
 * The RBD operations the controller (and the node's fence check) needs, for
 * one cluster and identity. Failures are ExecError carrying librbd's errno as
 * exit code, so callers tell "missing" (ENOENT) from "exists" (EEXIST) from
 * "busy" (EBUSY), and the edge maps them as it maps the Ceph tools'. The real
 * one is LibRbd (librbd in the long-lived rados client); unit tests use an
 * in-memory fake.
 *
 * Every `pool` argument is a PoolSpec: a pool, or a RADOS namespace of it.
 */

/**
 * Where images live: "<pool>" (its default namespace) or "<pool>/<namespace>",
 * Ceph's own spelling. Neither grammar lets a name hold "/", so it splits
 * back unambiguously.
 */
export type PoolSpec = string;

export const poolSpec = (pool: string, namespace?: string): PoolSpec => (namespace ? `${pool}/${namespace}` : pool);


export interface ImageInfo {
  size: number;
  /** Set for a clone still linked to its parent snapshot. */
  parent?: { pool: string; image: string; snapshot: string };
}

export interface SnapInfo {
  name: string;
  /** "user" for snapshots made by name; "trash" for removed ones that clones still need. */
  namespace: string;
}

export interface CreateOptions {
  features: string[];
  dataPool?: string;
}

export interface RbdApi {
  /** Undefined when the image (or its pool) does not exist. */
  info(pool: string, image: string): Promise<ImageInfo | undefined>;
  /** EEXIST when the name is taken. */
  create(pool: string, image: string, sizeBytes: number, opts: CreateOptions): Promise<void>;
  /** A clone-v2 child of parent@snap in the same pool; EEXIST when the name is taken. */
  clone(pool: string, parent: string, snap: string, child: string, opts: CreateOptions): Promise<void>;
  /** Grows the image to sizeBytes unless it is that large already (never shrinks); returns its size before, undefined when it does not exist. */
  grow(pool: string, image: string, sizeBytes: number): Promise<number | undefined>;
  /** ENOENT when the image does not exist; {} for one without metadata. */
  metaList(pool: string, image: string): Promise<Record<string, string>>;
  metaSet(pool: string, image: string, key: string, value: string): Promise<void>;
  /** Succeeds when the key is already gone. */
  metaRemove(pool: string, image: string, key: string): Promise<void>;
  /**
   * Removes the metadata keys under `prefix`, then sets those of `then` (in
   * one image open). A clone copies its parent's metadata, so a fresh clone
   * carries its source's name, attachments and snapshot records until they
   * are stripped.
   */
  metaStrip(pool: string, image: string, prefix: string, then?: Record<string, string>): Promise<void>;
  /** Succeeds when the snapshot exists already. */
  snapCreate(pool: string, image: string, snap: string): Promise<void>;
  /** Succeeds when it is already gone; one that clones still need moves to the trash namespace. */
  snapRemove(pool: string, image: string, snap: string): Promise<void>;
  /** Every snapshot, trashed ones included. */
  snapList(pool: string, image: string): Promise<SnapInfo[]>;
  /** An image with snapshots is left alone: the caller decides (see trashMove). EBUSY while a client has it open. */
  remove(pool: string, image: string): Promise<'removed' | 'has-snapshots' | 'missing'>;
  /** Moves an image to the RBD trash, where it waits until its last clone is gone. */
  trashMove(pool: string, image: string): Promise<void>;
  /** Every entry, also those a killed removal left (source REMOVING). */
  trashList(pool: string): Promise<Array<{ id: string; name: string }>>;
  /** Purges a trashed image; false while it still has clones or snapshots (or cannot be purged now). */
  trashRemove(pool: string, id: string): Promise<boolean>;
  /** Image names; [] for a pool or namespace that does not exist. */
  list(pool: string): Promise<string[]>;
  /** Creates a RADOS namespace for RBD in the pool; succeeds when it exists already. */
  namespaceCreate(pool: string, namespace: string): Promise<void>;
  /** The pool's RADOS namespaces (the default one not among them); [] for a pool that does not exist. */
  namespaces(pool: string): Promise<string[]>;
  /** Addresses of the clients that have the image open (krbd, rbd-nbd, rbd-fuse); undefined when there is no such image. */
  watchers(pool: string, image: string): Promise<string[] | undefined>;
  /**
   * Makes the OSD read the watches on an image's header (by name, or a trashed one's id) afresh.
   * A watch whose client was killed while registering it has no timeout in a Pacific OSD (Ceph
   * bug 58120, fixed in 17.2.8 and 18.2.5) and would hold the image until the OSD restarts; read
   * afresh, it times out like any other (30 s), or goes at once when its client is blocklisted.
   * Live clients keep theirs. False when it was done for this header moments ago, or cannot be.
   */
  reloadWatches(pool: string, header: { image: string } | { id: string }): Promise<boolean>;
  /** Pools with the rbd application enabled, and the bytes each can still take. */
  rbdPools(): Promise<Array<{ name: string; maxAvail: number }>>;
  poolAvailable(pool: string): Promise<number | undefined>;
}

/** reloadWatches for a caller that goes on whatever it does: a failure (caps that do not allow it, a slow mon) is only logged. */
export async function tryReloadWatches(rbd: RbdApi, pool: string, header: { image: string } | { id: string }, log?: Logger): Promise<void> {
  try {
    await rbd.reloadWatches(pool, header);
  } catch (e) {
    log?.warn({ err: String(e), pool, ...header }, 'could not make the OSD reload the watches of an image header');
  }
}

/** Makes the RbdApi of one cluster identity, for one call's logger. */
export type RbdConnector = (conn: CephConn, log?: Logger) => RbdApi;

