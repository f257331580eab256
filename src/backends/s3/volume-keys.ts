import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { unavailable } from '../../errors.js';
import { bucketOf, dataPrefix, objectName, recordKey, type Location } from './layout.js';
import type { S3Mounter } from './params.js';
import { rgwAdminOk } from './rgw-admin.js';
import type { RgwAdminApi, S3Api } from './s3-api.js';
import type { S3Credentials } from './store.js';

/**
 * Least privilege and fencing for S3 volumes on Ceph RGW: each node a volume
 * is published to mounts it with a key that reaches that volume alone, and
 * fencing the node removes that key, so whatever the node kept gets 403 from
 * RGW and its next key is a new one. The users own nothing and may create no
 * bucket.
 *
 * - A bucket of its own: one RGW user per volume (uid from its name), a key
 *   per node on it, and the bucket's policy granting that user its data.
 * - A prefix of a shared bucket: an RGW user per volume and node, with a
 *   user policy granting its prefix. Not a bucket policy (one document shared
 *   by the bucket's volumes would be read-modified-written by all of them),
 *   and not one user with a key per node: RGW 16 drops a user's policies
 *   whenever the admin API adds or removes one of its keys (measured).
 *
 * Stores without an rgwAdmin identity are mounted with the provisioner's
 * keys as before (unfenced).
 */

export const volumeUser = (l: Location) => `strata-${objectName(l)}`;
/** A node's user of a volume in a shared bucket. */
export const prefixUser = (l: Location, nodeId: string) => `strata-${objectName(l)}-${createHash('sha256').update(`${l.shared}\0${nodeId}`).digest('hex').slice(0, 16)}`;

/** The start of every access key of one node on a volume's user. */
const nodeKeyPrefix = (nodeId: string) => `STRATA${createHash('sha256').update(nodeId).digest('hex').slice(0, 16).toUpperCase()}`;
const NODE_PREFIX_LENGTH = nodeKeyPrefix('').length;
const isNodeKey = (accessKey: string) => /^STRATA[0-9A-F]{32}$/.test(accessKey);

interface UserInfo {
  keys?: Array<{ user?: string; access_key?: string; secret_key?: string }>;
}

const DATA_ACTIONS = ['s3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'];

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
        Action: DATA_ACTIONS,
        Resource: [`arn:aws:s3:::${bucket}/${dataPrefix(l).replace(/\/$/, '')}*`],
      },
      // Staging checks the record exists, and usage reads the capacity from it.
      { Sid: 'record', Effect: 'Allow', Principal: principal, Action: ['s3:GetObject'], Resource: [`arn:aws:s3:::${bucket}/${recordKey(l)}`] },
    ],
  });
}

/**
 * The user policy of a node's user of a prefix: its file system under
 * "<prefix>fs" and its record. Listing is limited to that prefix where the
 * mounter allows it: s3fs checks the bucket with an unfiltered listing when
 * it mounts, so an s3fs node lists every key name of the shared bucket (other
 * volumes' names, never their data).
 */
export function prefixPolicy(l: Location, mounter: S3Mounter): string {
  const bucket = bucketOf(l);
  const fs = dataPrefix(l).replace(/\/$/, '');
  return JSON.stringify({
    Version: '2012-10-17',
    Statement: [
      { Sid: 'list', Effect: 'Allow', Action: ['s3:ListBucket'], Resource: [`arn:aws:s3:::${bucket}`], ...(mounter === 's3fs' ? {} : { Condition: { StringLike: { 's3:prefix': [`${fs}*`] } } }) },
      { Sid: 'location', Effect: 'Allow', Action: ['s3:GetBucketLocation'], Resource: [`arn:aws:s3:::${bucket}`] },
      { Sid: 'data', Effect: 'Allow', Action: DATA_ACTIONS, Resource: [`arn:aws:s3:::${bucket}/${fs}*`] },
      { Sid: 'record', Effect: 'Allow', Action: ['s3:GetObject'], Resource: [`arn:aws:s3:::${bucket}/${recordKey(l)}`] },
    ],
  });
}

export class VolumeKeys {
  constructor(private readonly adminOf: (cluster: string) => RgwAdminApi | undefined) {}

  /** The admin endpoint when the volume gets keys of its own; undefined when it is mounted with the provisioner's. */
  private admin(l: Location): RgwAdminApi | undefined {
    return l.kind === 'v' ? this.adminOf(l.cluster) : undefined;
  }

  private async user(a: RgwAdminApi, l: Location): Promise<UserInfo | undefined> {
    const r = await a.request('GET', 'user', { uid: volumeUser(l), format: 'json' });
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
   * The node's key on the volume, made when it has none. A bucket of its
   * own: the volume's user (owning nothing, allowed no bucket) and the bucket
   * policy come first, so a key never exists without them; `owner` is the
   * bucket owner's store. A prefix: see issuePrefix.
   */
  async issue(l: Location, nodeId: string, mounter: S3Mounter, owner: S3Api, log: Logger): Promise<S3Credentials | undefined> {
    const a = this.admin(l);
    if (!a) return undefined;
    if (l.shared) return this.issuePrefix(a, l, nodeId, mounter, log);
    const uid = volumeUser(l);
    let u = await this.user(a, l);
    const known = VolumeKeys.nodeKey(u, nodeId);
    if (known) return known;
    if (!u) {
      const r = await a.request('PUT', 'user', { uid, 'display-name': `Strata volume ${objectName(l)}`, 'max-buckets': '-1', 'generate-key': 'false', format: 'json' });
      if (r.code !== 'UserAlreadyExists') rgwAdminOk(r, `creating user ${uid}`);
    }
    await owner.putBucketPolicy(bucketOf(l), bucketPolicy(l));
    // RGW makes the secret (it never travels in a request); the access key says whose it is.
    const accessKey = nodeKeyPrefix(nodeId) + randomBytes(8).toString('hex').toUpperCase();
    rgwAdminOk(await a.request('PUT', 'user', { key: '', uid, 'key-type': 's3', 'access-key': accessKey, 'generate-key': 'true', format: 'json' }), `adding a key to user ${uid}`);
    u = await this.user(a, l);
    const made = VolumeKeys.nodeKey(u, nodeId);
    if (!made) throw unavailable(`RGW lost the key just added to user ${uid}; retry`);
    log.debug({ user: uid }, 'node key added to the volume user');
    return made;
  }

  /**
   * A prefix's node user and its key, made when missing (RGW makes both keys:
   * no secret travels in a request). The policy is set on every call, after
   * the user, so a retry after a crash between the two completes it; nothing
   * changes the user's keys afterwards (which would drop the policy).
   */
  private async issuePrefix(a: RgwAdminApi, l: Location, nodeId: string, mounter: S3Mounter, log: Logger): Promise<S3Credentials> {
    const uid = prefixUser(l, nodeId);
    const get = async () => {
      const r = await a.request('GET', 'user', { uid, format: 'json' });
      return r.status === 404 ? undefined : (JSON.parse(rgwAdminOk(r, `reading user ${uid}`)) as UserInfo);
    };
    let u = await get();
    if (!u) {
      const r = await a.request('PUT', 'user', { uid, 'display-name': `Strata volume ${objectName(l)} on a node`, 'max-buckets': '-1', 'key-type': 's3', 'generate-key': 'true', format: 'json' });
      if (r.code !== 'UserAlreadyExists') rgwAdminOk(r, `creating user ${uid}`);
      u = await get();
      log.debug({ user: uid }, 'node user made for the volume');
    }
    rgwAdminOk(await a.iam({ Action: 'PutUserPolicy', UserName: uid, PolicyName: 'volume', PolicyDocument: prefixPolicy(l, mounter) }), `setting the policy of user ${uid}`);
    const k = u?.keys?.find((k) => k.access_key && k.secret_key);
    if (!k) throw unavailable(`RGW gave user ${uid} no key; retry`);
    return { accessKeyID: k.access_key!, secretAccessKey: k.secret_key! };
  }

  /** Removes an RGW user with its keys and policy; one already gone is fine (false). */
  private async removeUser(a: RgwAdminApi, uid: string): Promise<boolean> {
    const r = await a.request('DELETE', 'user', { uid, 'purge-data': 'false', format: 'json' });
    if (r.status === 404) return false;
    rgwAdminOk(r, `removing user ${uid}`);
    return true;
  }

  /** Removes the node's keys on the volume (fencing it); idempotent. Answers how many it removed. */
  async revokeNode(l: Location, nodeId: string, log: Logger): Promise<number> {
    const a = l.shared ? this.admin(l) : undefined;
    if (a) {
      const removed = await this.removeUser(a, prefixUser(l, nodeId));
      if (removed) log.info({ user: prefixUser(l, nodeId) }, 'node user of the volume removed');
      return removed ? 1 : 0;
    }
    const prefix = nodeKeyPrefix(nodeId);
    return this.revokeWhere(l, (k) => k.startsWith(prefix), log);
  }

  /**
   * Removes the keys of every node the volume is not published to. Which
   * nodes those are is asked only once keys are found, after they are: a
   * node's key is made after its attachment is recorded, so a publish
   * running beside this one never loses the key it just made. A prefix's
   * node users cannot be listed (RGW lists users only cluster-wide); none
   * outlives its attachment, which is written before it and removed after.
   */
  async revokeOthers(l: Location, published: () => Promise<Iterable<string>>, log: Logger): Promise<number> {
    const a = l.shared ? undefined : this.admin(l);
    if (!a) return 0;
    const keys = ((await this.user(a, l))?.keys ?? []).map((k) => k.access_key ?? '').filter(isNodeKey);
    if (!keys.length) return 0;
    const keep = new Set([...(await published())].map(nodeKeyPrefix));
    return this.revokeKeys(a, l, keys.filter((k) => !keep.has(k.slice(0, NODE_PREFIX_LENGTH))), log);
  }

  /** Removes the keys of every node: all keys of the volume's user, or the users of the `attached` nodes of a prefix. */
  async revokeAll(l: Location, attached: Iterable<string>, log: Logger): Promise<void> {
    if (!l.shared) {
      await this.revokeWhere(l, () => true, log);
      return;
    }
    for (const n of attached) await this.revokeNode(l, n, log);
  }

  private async revokeWhere(l: Location, gone: (accessKey: string) => boolean, log: Logger): Promise<number> {
    const a = this.admin(l);
    if (!a) return 0;
    return this.revokeKeys(a, l, ((await this.user(a, l))?.keys ?? []).map((k) => k.access_key ?? '').filter((k) => isNodeKey(k) && gone(k)), log);
  }

  private async revokeKeys(a: RgwAdminApi, l: Location, keys: string[], log: Logger): Promise<number> {
    const uid = volumeUser(l);
    for (const accessKey of keys) {
      const r = await a.request('DELETE', 'user', { key: '', uid, 'access-key': accessKey, format: 'json' });
      // Removed meanwhile (a racing retry): RGW no longer knows the key.
      if (r.code !== 'InvalidAccessKeyId' && r.status !== 404) rgwAdminOk(r, `removing a key of user ${uid}`);
    }
    if (keys.length) log.info({ user: uid, keys: keys.length }, 'node keys removed from the volume user');
    return keys.length;
  }

  /** Removes every key of the volume: its user (a bucket of its own), or the users of `nodes` (a prefix). Idempotent. */
  async remove(l: Location, nodes: Iterable<string>): Promise<void> {
    const a = this.admin(l);
    if (!a) return;
    for (const uid of l.shared ? [...nodes].map((n) => prefixUser(l, n)) : [volumeUser(l)]) await this.removeUser(a, uid);
  }
}
