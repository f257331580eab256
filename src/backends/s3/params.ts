import { invalidArgument } from '../../errors.js';
import { shown } from '../../csi/ids.js';
import { isBucketName } from '../../csi/grammar.js';

/** StorageClass parameters of the S3 backend, validated with errors that name the key. */

export type S3Mounter = 's3fs' | 'rclone';

export interface S3Params {
  clusterID: string;
  /** A shared bucket: each volume is a prefix in it. Without it each volume gets its own bucket. */
  bucket?: string;
  mounter: S3Mounter;
  uid?: number;
  gid?: number;
  /** Permission bits of files and directories, e.g. 0775. */
  mode?: number;
  mountOptions: string[];
}

const KEYS = new Set(['backend', 'clusterID', 'bucket', 'mounter', 'uid', 'gid', 'mode', 'mountOptions']);
const SIDECAR_PREFIX = 'csi.storage.k8s.io/';
// Options go to s3fs as one -o list or to rclone as flags: no spaces, no shell syntax.
// No "/": an option that takes a path (rclone's log-file, cache-dir; s3fs's logfile, use_cache)
// would let a StorageClass make the node plugin, as root, write where it names.
const optionPattern = /^[A-Za-z0-9_][A-Za-z0-9_.:=+-]*$/;
// Where the endpoint and credentials come from is the driver's business, not the StorageClass's.
const RESERVED_OPTION = /^(--?)?(passwd_file|url|endpoint|use_path_request_style|s3-(access-key-id|secret-access-key|endpoint|provider|region|acl|no-check-bucket)|default_acl|config|daemon|rc.*|allow_other|allow-other|uid|gid|umask|mp_umask|ro|read-only)(=|$)/;

function options(v: string | undefined): string[] {
  const list = (v ?? '').split(',').map((o) => o.trim()).filter(Boolean);
  for (const o of list) {
    if (RESERVED_OPTION.test(o)) throw invalidArgument(`parameter "mountOptions": option ${shown(o)} is set by the driver (use uid, gid, mode or the cluster config instead)`);
    if (!optionPattern.test(o)) throw invalidArgument(`parameter "mountOptions": option ${shown(o)} has characters a mount option cannot have (no "/": options may not name paths on the node)`);
  }
  return list;
}

function id(key: string, v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  if (!/^\d{1,10}$/.test(v) || Number(v) > 2 ** 32 - 2) throw invalidArgument(`parameter "${key}" must be a numeric id`);
  return Number(v);
}

export function parseS3Params(p: Record<string, string>): S3Params {
  for (const k of Object.keys(p)) {
    if (!KEYS.has(k) && !k.startsWith(SIDECAR_PREFIX)) throw invalidArgument(`unknown parameter ${shown(k)} for backend s3`);
  }
  if (!p.clusterID) throw invalidArgument('parameter "clusterID" is required for backend s3');
  if (p.bucket && !isBucketName(p.bucket)) {
    throw invalidArgument('parameter "bucket" is not a valid S3 bucket name (3-63 lowercase letters, digits, "." and "-")');
  }
  // Buckets of their own are named csi-vol-<hash> and csi-snap-<hash>: a shared bucket there would be taken for one, or removed as one.
  if (p.bucket && /^csi-(vol|snap)-/.test(p.bucket)) {
    throw invalidArgument('parameter "bucket": names beginning "csi-vol-" or "csi-snap-" are kept for the buckets of volumes and snapshots');
  }
  const mounter = (p.mounter || 's3fs') as S3Mounter;
  if (mounter !== 's3fs' && mounter !== 'rclone') throw invalidArgument('parameter "mounter" must be s3fs or rclone');
  let mode: number | undefined;
  if (p.mode) {
    if (!/^0?[0-7]{3}$/.test(p.mode)) throw invalidArgument('parameter "mode" must be octal permission bits such as 0775');
    mode = parseInt(p.mode, 8);
  }
  return { clusterID: p.clusterID, bucket: p.bucket || undefined, mounter, uid: id('uid', p.uid), gid: id('gid', p.gid), mode, mountOptions: options(p.mountOptions) };
}
