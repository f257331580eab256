import type { Config } from '../../config/config.js';
import { S3Stores } from './credentials.js';
import { rgwAdminApi, type RgwAnswer } from './rgw-admin.js';
import type { S3Credentials, S3Endpoint } from './store.js';

/**
 * What the S3 controller needs from a store and from Ceph RGW's admin side,
 * for one endpoint and identity. The real ones are S3Store (the AWS SDK) and
 * the signed admin requests of rgw-admin.ts; unit tests use an in-memory fake
 * (test/helpers/fake-s3.ts). Errors the CO should see differently (missing
 * bucket, refused credentials, full bucket, store down) arrive as CsiErrors;
 * a missing source object of a copy arrives as the store's NoSuchKey
 * (isNoSuchKey), and a bucket that is not empty as the store's error.
 */

export interface ObjectInfo {
  key: string;
  size: number;
}

export interface S3Api {
  /** Creates a bucket; one that is already ours is fine, one of someone else's is FAILED_PRECONDITION. */
  createBucket(bucket: string): Promise<void>;
  bucketExists(bucket: string): Promise<boolean>;
  /** Removes an empty bucket; a missing one is fine, a non-empty one throws. */
  deleteBucket(bucket: string): Promise<void>;
  listBuckets(): Promise<string[]>;
  putBucketPolicy(bucket: string, policy: string): Promise<void>;
  /** Every object under a prefix, one ListObjectsV2 page (up to LIST_PAGE keys) at a time, in key order; nothing when the bucket is gone. */
  list(bucket: string, prefix: string): AsyncGenerator<ObjectInfo[]>;
  /** The "directories" directly under a prefix (common prefixes with "/" as delimiter). */
  subPrefixes(bucket: string, prefix: string): Promise<string[]>;
  /** Undefined when the key or its bucket does not exist. */
  getJson<T>(bucket: string, key: string): Promise<T | undefined>;
  putJson(bucket: string, key: string, value: unknown): Promise<void>;
  /** Writes only where the key does not exist yet (If-None-Match: *); false when it did. */
  putJsonIfAbsent(bucket: string, key: string, value: unknown): Promise<boolean>;
  put(bucket: string, key: string, body: string | Buffer, contentType?: string): Promise<void>;
  hasKey(bucket: string, key: string): Promise<boolean>;
  /** A missing key or bucket is fine. */
  deleteKey(bucket: string, key: string): Promise<void>;
  /** Up to LIST_PAGE keys in one DeleteObjects request; keys already gone count as deleted. */
  deleteBatch(bucket: string, keys: string[]): Promise<void>;
  /** Removes every object under a prefix; answers how many. Safe to repeat after a partial run. */
  deletePrefix(bucket: string, prefix: string): Promise<number>;
  /** A server-side copy; `parts` bounds the part copies of a large object. */
  copy(src: { bucket: string; key: string; size: number }, dst: { bucket: string; key: string }, parts: <T>(f: () => Promise<T>) => Promise<T>): Promise<void>;
}

/**
 * RGW's admin ops API (/admin/bucket, /admin/user) and its IAM API, signed
 * with one cluster's rgwAdmin identity. Answers whatever RGW said (see
 * rgwAdminOk); only an unreachable gateway throws.
 */
export interface RgwAdminApi {
  request(method: 'GET' | 'PUT' | 'DELETE', resource: 'bucket' | 'user', query: Record<string, string>, body?: string): Promise<RgwAnswer>;
  iam(params: Record<string, string>): Promise<RgwAnswer>;
}

export interface S3Connector {
  /** The store of one endpoint and identity (the same object for the same pair while it is in use). */
  store(ep: S3Endpoint, creds: S3Credentials): S3Api;
  /** The cluster's admin API, undefined when its config names no rgwAdmin identity (looked up on every use: key files may rotate). */
  admin(cluster: string): RgwAdminApi | undefined;
}

/** The real clients: one SDK client per endpoint and identity (kept for its connections), admin requests signed with the config's rgwAdmin identity. */
export function s3Connector(cfg: Config): S3Connector {
  const stores = new S3Stores();
  return { store: (ep, creds) => stores.get(ep, creds), admin: (cluster) => rgwAdminApi(cfg, cluster) };
}
