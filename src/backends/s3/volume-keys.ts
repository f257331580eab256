import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../../config/config.js';
import { unavailable } from '../../errors.js';
import { bucketOf, dataPrefix, objectName, recordKey, type Location } from './layout.js';
import { rgwAdminOf, rgwAdminOk, rgwAdminRequest, type RgwAdminEndpoint } from './rgw-admin.js';
import type { S3Credentials, S3Store } from './store.js';

/**
 * Least privilege and fencing for S3 volumes on Ceph RGW. Each volume with a
 * bucket of its own has an RGW user of its own (uid from the volume's name),
 * which owns nothing and may create nothing; the volume's bucket policy lets
 * that user list the bucket, read its record and read and write its file
 * system, nothing else. Each node the volume is published to gets a key of
 * its own on that user, so fencing a node is removing its keys: whatever the
 * node kept then gets 403 from RGW, and the node's next key is a new one.
 *
 * Prefixes in a shared bucket, and stores without an rgwAdmin identity, are
 * mounted with the provisioner's keys as before (unfenced): one bucket
 * policy for many volumes would be a read-modify-write shared by all of them.
 */

export const volumeUser = (l: Location) => `strata-${objectName(l)}`;

/** The start of every access key of one node on a volume's user. */
const nodeKeyPrefix = (nodeId: string) => `STRATA${createHash('sha256').update(nodeId).digest('hex').slice(0, 16).toUpperCase()}`;
const NODE_PREFIX_LENGTH = nodeKeyPrefix('').length;
const isNodeKey = (accessKey: string) => /^STRATA[0-9A-F]{32}$/.test(accessKey);

interface UserInfo {
  keys?: Array<{ user?: string; access_key?: string; secret_key?: string }>;
}

/** The policy of a volume's own bucket: its user reaches its file system and reads its record. */
export function bucketPolicy(l: Location): string {
  const bucket = bucketOf(l);
  const principal = { AWS: [`arn:aws:iam:::user/${volumeUser(l)}`] };
  return JSON.stringify({
    Version: '2012-10-17',
    Statement: [
      { Sid: 'list', Effect: 'Allow', Principal: principal, Action: ['s3:ListBucket', 's3:ListBucketMultipartUploads', 's3:GetBucketLocation'], Resource: [`arn:aws:s3:::${bucket}`] },
      // "fs*": the mount root "fs/" and what mounters look up beside it ("fs", "fs_$folder$").
      {
        Sid: 'data',
        Effect: 'Allow',
        Principal: principal,
        Action: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'],
        Resource: [`arn:aws:s3:::${bucket}/${dataPrefix(l).replace(/\/$/, '')}*`],
      },
      // Staging checks the record exists, and usage reads the capacity from it.
      { Sid: 'record', Effect: 'Allow', Principal: principal, Action: ['s3:GetObject'], Resource: [`arn:aws:s3:::${bucket}/${recordKey(l)}`] },
    ],
  });
}

export class VolumeKeys {
  constructor(private readonly cfg: Config) {}

  /** The admin endpoint when the volume gets keys of its own; undefined when it is mounted with the provisioner's. */
  private admin(l: Location): RgwAdminEndpoint | undefined {
    return l.kind === 'v' && !l.shared ? rgwAdminOf(this.cfg, l.cluster) : undefined;
  }

  private async user(a: RgwAdminEndpoint, l: Location): Promise<UserInfo | undefined> {
    const r = await rgwAdminRequest(a, 'GET', 'user', { uid: volumeUser(l), format: 'json' });
    if (r.status === 404) return undefined;
    return JSON.parse(rgwAdminOk(r, `reading user ${volumeUser(l)}`)) as UserInfo;
  }

  /** The node's key on the volume, the same on every retry: the lowest of its keys (two racing publishes may each add one). */
  private static nodeKey(u: UserInfo | undefined, nodeId: string): S3Credentials | undefined {
    const prefix = nodeKeyPrefix(nodeId);
    const k = (u?.keys ?? []).filter((k) => k.access_key?.startsWith(prefix) && k.secret_key).sort((x, y) => x.access_key!.localeCompare(y.access_key!))[0];
    return k ? { accessKeyID: k.access_key!, secretAccessKey: k.secret_key! } : undefined;
  }

  /**
   * The node's key on the volume, made when it has none: the user (owning
   * nothing, allowed no bucket) and the bucket policy come first, so a key
   * never exists without them. `owner` is the bucket owner's store.
   */
  async issue(l: Location, nodeId: string, owner: S3Store, log: Logger): Promise<S3Credentials | undefined> {
    const a = this.admin(l);
    if (!a) return undefined;
    const uid = volumeUser(l);
    let u = await this.user(a, l);
    const known = VolumeKeys.nodeKey(u, nodeId);
    if (known) return known;
    if (!u) {
      const r = await rgwAdminRequest(a, 'PUT', 'user', { uid, 'display-name': `Strata volume ${objectName(l)}`, 'max-buckets': '-1', 'generate-key': 'false', format: 'json' });
      if (r.code !== 'UserAlreadyExists') rgwAdminOk(r, `creating user ${uid}`);
    }
    await owner.putBucketPolicy(bucketOf(l), bucketPolicy(l));
    // RGW makes the secret (it never travels in a request); the access key says whose it is.
    const accessKey = nodeKeyPrefix(nodeId) + randomBytes(8).toString('hex').toUpperCase();
    rgwAdminOk(await rgwAdminRequest(a, 'PUT', 'user', { key: '', uid, 'key-type': 's3', 'access-key': accessKey, 'generate-key': 'true', format: 'json' }), `adding a key to user ${uid}`);
    u = await this.user(a, l);
    const made = VolumeKeys.nodeKey(u, nodeId);
    if (!made) throw unavailable(`RGW lost the key just added to user ${uid}; retry`);
    log.debug({ user: uid }, 'node key added to the volume user');
    return made;
  }

  /** Removes the node's keys on the volume (fencing it); idempotent. Answers how many it removed. */
  revokeNode(l: Location, nodeId: string, log: Logger): Promise<number> {
    const prefix = nodeKeyPrefix(nodeId);
    return this.revokeWhere(l, (k) => k.startsWith(prefix), log);
  }

  /**
   * Removes the keys of every node the volume is not published to. Which
   * nodes those are is asked only once keys are found, after they are: a
   * node's key is made after its attachment is recorded, so a publish
   * running beside this one never loses the key it just made.
   */
  async revokeOthers(l: Location, published: () => Promise<Iterable<string>>, log: Logger): Promise<number> {
    const a = this.admin(l);
    if (!a) return 0;
    const keys = ((await this.user(a, l))?.keys ?? []).map((k) => k.access_key ?? '').filter(isNodeKey);
    if (!keys.length) return 0;
    const keep = new Set([...(await published())].map(nodeKeyPrefix));
    return this.revokeKeys(a, l, keys.filter((k) => !keep.has(k.slice(0, NODE_PREFIX_LENGTH))), log);
  }

  private async revokeWhere(l: Location, gone: (accessKey: string) => boolean, log: Logger): Promise<number> {
    const a = this.admin(l);
    if (!a) return 0;
    return this.revokeKeys(a, l, ((await this.user(a, l))?.keys ?? []).map((k) => k.access_key ?? '').filter((k) => isNodeKey(k) && gone(k)), log);
  }

  private async revokeKeys(a: RgwAdminEndpoint, l: Location, keys: string[], log: Logger): Promise<number> {
    const uid = volumeUser(l);
    for (const accessKey of keys) {
      const r = await rgwAdminRequest(a, 'DELETE', 'user', { key: '', uid, 'access-key': accessKey, format: 'json' });
      // Removed meanwhile (a racing retry): RGW no longer knows the key.
      if (r.code !== 'InvalidAccessKeyId' && r.status !== 404) rgwAdminOk(r, `removing a key of user ${uid}`);
    }
    if (keys.length) log.info({ user: uid, keys: keys.length }, 'node keys removed from the volume user');
    return keys.length;
  }

  /** Removes the volume's user and every key on it; a user already gone is fine. */
  async remove(l: Location): Promise<void> {
    const a = this.admin(l);
    if (!a) return;
    const r = await rgwAdminRequest(a, 'DELETE', 'user', { uid: volumeUser(l), 'purge-data': 'false', format: 'json' });
    if (r.status !== 404) rgwAdminOk(r, `removing user ${volumeUser(l)}`);
  }
}
