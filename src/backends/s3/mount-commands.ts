import type { S3Mounter } from './params.js';

/**
 * The exact commands that mount an S3 prefix, built without side effects so
 * they can be checked in unit tests. Credentials never appear here: s3fs
 * reads a 0600 passwd file, rclone its environment.
 */

export interface S3MountSpec {
  mounter: S3Mounter;
  endpoint: string;
  region: string;
  bucket: string;
  /** Key prefix of the mount root, ending in "/" (e.g. "fs/" or "csi-vol-x/fs/"). */
  prefix: string;
  target: string;
  readonly: boolean;
  uid?: number;
  gid?: number;
  mode?: number;
  options: string[];
}

/**
 * Objects a node writes with a volume's own RGW user belong to that user: the
 * bucket's owner (the provisioner, which snapshots, clones and reads
 * records) gets full control of each, or it could not read them.
 */
const OBJECT_ACL = 'bucket-owner-full-control';

// Files written from another node show up within this many seconds.
const CACHE_SECONDS = 5;

const umaskOf = (mode: number) => (~mode & 0o777).toString(8).padStart(4, '0');

export function s3fsCommand(s: S3MountSpec, passwdFile: string): [string, string[]] {
  const o = [
    `passwd_file=${passwdFile}`,
    `url=${s.endpoint}`,
    'use_path_request_style',
    `endpoint=${s.region}`,
    // Pods run as other users than the node plugin.
    'allow_other',
    `stat_cache_expire=${CACHE_SECONDS}`,
    `default_acl=${OBJECT_ACL}`,
    ...(s.uid !== undefined ? [`uid=${s.uid}`] : []),
    ...(s.gid !== undefined ? [`gid=${s.gid}`] : []),
    ...(s.mode !== undefined ? [`umask=${umaskOf(s.mode)}`, `mp_umask=${umaskOf(s.mode)}`] : []),
    ...(s.readonly ? ['ro'] : []),
    ...s.options,
  ];
  return ['s3fs', [`${s.bucket}:/${s.prefix.replace(/\/$/, '')}`, s.target, '-o', o.join(',')]];
}

/**
 * rclone streams each file to S3 while it is written (no write cache): close
 * and fsync return once the object is in the bucket. The price is POSIX:
 * files are written sequentially, once (see README).
 */
export function rcloneCommand(s: S3MountSpec): [string, string[], Record<string, string>] {
  const args = ['mount', `:s3:${s.bucket}/${s.prefix.replace(/\/$/, '')}`, s.target, '--daemon', '--config', '/dev/null'];
  args.push('--vfs-cache-mode', 'off', '--allow-other', '--dir-cache-time', `${CACHE_SECONDS}s`, '--poll-interval', '0');
  // Without a cache rclone MD5s every sequential read, even of files it wrote
  // itself in parts (no MD5 stored, so the sum is never compared): a third of
  // the read throughput on the CPU. Uploads are still checked; users who want
  // the read check back pass the mount option "no-checksum=false".
  args.push('--no-checksum');
  if (s.uid !== undefined) args.push('--uid', String(s.uid));
  if (s.gid !== undefined) args.push('--gid', String(s.gid));
  if (s.mode !== undefined) args.push('--umask', umaskOf(s.mode));
  if (s.readonly) args.push('--read-only');
  for (const o of s.options) args.push(`--${o.replace(/^--?/, '')}`);
  // The bucket exists (CreateVolume made it), and a volume's own key may not create buckets.
  const env = { RCLONE_S3_PROVIDER: 'Ceph', RCLONE_S3_ENDPOINT: s.endpoint, RCLONE_S3_REGION: s.region, RCLONE_S3_FORCE_PATH_STYLE: 'true', RCLONE_S3_NO_CHECK_BUCKET: 'true', RCLONE_S3_ACL: OBJECT_ACL };
  return ['rclone', args, env];
}
