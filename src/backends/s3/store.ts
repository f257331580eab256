import type { ListObjectsV2CommandOutput, S3Client } from '@aws-sdk/client-s3';
import { Agent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { CsiError, failedPrecondition, notFound, resourceExhausted, unavailable } from '../../errors.js';
import { boundedSignal, stopReason, throwIfStopped } from '../../util/call-context.js';
import type { ObjectInfo, S3Api } from './s3-api.js';

// The SDK is a third of an idle process's memory: it loads with the first S3 request, not at start.
type Sdk = typeof import('@aws-sdk/client-s3');
let sdkLoad: Promise<[Sdk, typeof import('@smithy/node-http-handler')]> | undefined;
const sdk = () => (sdkLoad ??= Promise.all([import('@aws-sdk/client-s3'), import('@smithy/node-http-handler')]));

/**
 * The few S3 operations Strata needs, on one client per endpoint and
 * identity. Errors the CO should see differently (missing bucket, refused
 * credentials, store down) become CsiErrors here; the rest pass through.
 *
 * Every request is bounded: a store that accepts connections but never
 * answers (RGW in front of a stopped OSD) fails it within REQUEST_TIMEOUT_MS,
 * one retry at most, and the gRPC call's deadline aborts it sooner.
 */

export interface S3Credentials {
  accessKeyID: string;
  secretAccessKey: string;
}

export interface S3Endpoint {
  endpoint: string;
  region: string;
}

// One CopyObject is limited to 5 GiB and serial; above this, parts are copied side by side.
export const MULTIPART_COPY_THRESHOLD = 32 * 1024 * 1024;
export const COPY_PART_SIZE = 32 * 1024 * 1024;
/** Keys per ListObjectsV2 page (the S3 default and maximum). */
export const LIST_PAGE = 1000;
const CONNECT_TIMEOUT_MS = 3_000;
// Whole request, body included; RGW copies up to MULTIPART_COPY_THRESHOLD in one request in well under a second.
const REQUEST_TIMEOUT_MS = 15_000;
const SOCKET_IDLE_MS = 10_000;
// Cleanup after a failed multipart copy runs even once the call has stopped, briefly.
const CLEANUP_TIMEOUT_MS = 5_000;
// An AbortError's cause is why the call stopped (its deadline or its client), set by the call scope.
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'TimeoutError', 'RequestTimeout']);

// A service exception (it has $fault) is named after the store's error code.
const code = (e: unknown) => (typeof (e as { $fault?: unknown })?.$fault === 'string' ? (e as Error).name : (e as { Code?: string })?.Code ?? (e as Error)?.name);
const sysCode = (e: unknown) => (e as { code?: unknown })?.code;
const httpStatus = (e: unknown) => (e as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;

export const isNoSuchBucket = (e: unknown) => code(e) === 'NoSuchBucket';
export const isNoSuchKey = (e: unknown) => code(e) === 'NoSuchKey' || code(e) === 'NotFound' || httpStatus(e) === 404;

/** Turns what the store says into what the CO needs to hear, without echoing request details. */
export function mapS3Error(e: unknown, what: string): Error {
  const c = code(e);
  if (c === 'QuotaExceeded') return resourceExhausted(`S3 refused ${what}: the bucket quota (the volume's capacity) is used up`);
  if (c === 'InvalidAccessKeyId' || c === 'SignatureDoesNotMatch' || c === 'AccessDenied' || httpStatus(e) === 403) {
    return failedPrecondition(`S3 refused ${what}: ${c ?? 'access denied'} (check the credentials)`);
  }
  if (c === 'NoSuchBucket') return notFound(`S3 bucket for ${what} does not exist`);
  if (c === 'AbortError') {
    const why = (e as Error).cause;
    return why instanceof CsiError ? why : stopReason() ?? unavailable(`S3 endpoint gave no answer during ${what} within ${REQUEST_TIMEOUT_MS} ms`);
  }
  const sc = sysCode(e);
  if (NETWORK_CODES.has(c ?? '') || (typeof sc === 'string' && NETWORK_CODES.has(sc)) || (httpStatus(e) ?? 0) >= 500) {
    return unavailable(`S3 endpoint unavailable during ${what}: ${typeof sc === 'string' ? sc : c ?? httpStatus(e)}`);
  }
  return e as Error;
}

export class S3Store implements S3Api {
  private made?: Promise<S3Client>;

  constructor(
    private readonly ep: S3Endpoint,
    private readonly creds: S3Credentials,
  ) {}

  /** The SDK client, made on first use. */
  private client(): Promise<S3Client> {
    return (this.made ??= sdk().then(([{ S3Client }, { NodeHttpHandler }]) => {
      const keepAlive = { keepAlive: true, maxSockets: 64 };
      return new S3Client({
        endpoint: this.ep.endpoint,
        region: this.ep.region,
        credentials: { accessKeyId: this.creds.accessKeyID, secretAccessKey: this.creds.secretAccessKey },
        // Path style works on every S3 store (RGW included) without wildcard DNS.
        forcePathStyle: true,
        // RGW 16 rejects the SDK's default trailing checksums (MissingContentLength).
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        maxAttempts: 2,
        requestHandler: new NodeHttpHandler({
          httpAgent: new Agent(keepAlive),
          httpsAgent: new HttpsAgent(keepAlive),
          connectionTimeout: CONNECT_TIMEOUT_MS,
          requestTimeout: REQUEST_TIMEOUT_MS,
          // Without it the handler only logs a warning when requestTimeout passes, and waits on.
          throwOnRequestTimeout: true,
          socketTimeout: SOCKET_IDLE_MS,
        }),
      });
    }));
  }

  /** Sends the command `make` builds from the SDK, bounded by the current call (and not sent when it has stopped). */
  private async run<T>(make: (m: Sdk, c: S3Client) => Promise<T>): Promise<T> {
    throwIfStopped();
    const [[m], c] = await Promise.all([sdk(), this.client()]);
    return make(m, c);
  }

  /** Options for one request: aborted when the current gRPC call stops (and it is not sent when it already has). */
  private opts(): { abortSignal: AbortSignal } {
    throwIfStopped();
    return { abortSignal: boundedSignal(2 * REQUEST_TIMEOUT_MS + CONNECT_TIMEOUT_MS) };
  }

  /** Creates a bucket; one that is already ours is fine. */
  async createBucket(bucket: string): Promise<void> {
    try {
      await this.run((m, c) => c.send(new m.CreateBucketCommand({ Bucket: bucket }), this.opts()));
    } catch (e) {
      if (code(e) === 'BucketAlreadyOwnedByYou') return;
      if (code(e) === 'BucketAlreadyExists') throw failedPrecondition(`bucket ${bucket} exists and belongs to someone else`);
      throw mapS3Error(e, `creating bucket ${bucket}`);
    }
  }

  async bucketExists(bucket: string): Promise<boolean> {
    try {
      await this.run((m, c) => c.send(new m.HeadBucketCommand({ Bucket: bucket }), this.opts()));
      return true;
    } catch (e) {
      if (isNoSuchBucket(e) || httpStatus(e) === 404) return false;
      throw mapS3Error(e, `reading bucket ${bucket}`);
    }
  }

  /** Removes an empty bucket; a missing one is fine. */
  async deleteBucket(bucket: string): Promise<void> {
    try {
      await this.run((m, c) => c.send(new m.DeleteBucketCommand({ Bucket: bucket }), this.opts()));
    } catch (e) {
      if (isNoSuchBucket(e) || httpStatus(e) === 404) return;
      throw mapS3Error(e, `removing bucket ${bucket}`);
    }
  }

  async listBuckets(): Promise<string[]> {
    try {
      const r = await this.run((m, c) => c.send(new m.ListBucketsCommand({}), this.opts()));
      return (r.Buckets ?? []).map((b) => b.Name!).filter(Boolean);
    } catch (e) {
      throw mapS3Error(e, 'listing buckets');
    }
  }

  async putBucketPolicy(bucket: string, policy: string): Promise<void> {
    try {
      await this.run((m, c) => c.send(new m.PutBucketPolicyCommand({ Bucket: bucket, Policy: policy }), this.opts()));
    } catch (e) {
      throw mapS3Error(e, `setting the policy of bucket ${bucket}`);
    }
  }

  /** False when the store no longer knows this client's access key (it was removed); true when it answers. */
  async knowsKey(): Promise<boolean> {
    try {
      await this.run((m, c) => c.send(new m.ListBucketsCommand({}), this.opts()));
      return true;
    } catch (e) {
      if (code(e) === 'InvalidAccessKeyId') return false;
      throw mapS3Error(e, 'checking the access key');
    }
  }

  /** ListObjectsV2 responses under a prefix, following continuation tokens; nothing when the bucket is gone. */
  private async *pages(bucket: string, prefix: string, delimiter?: string): AsyncGenerator<ListObjectsV2CommandOutput> {
    let token: string | undefined;
    do {
      let r;
      try {
        r = await this.run((m, c) => c.send(new m.ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, Delimiter: delimiter, ContinuationToken: token }), this.opts()));
      } catch (e) {
        if (isNoSuchBucket(e)) return;
        throw mapS3Error(e, `listing ${bucket}/${prefix}`);
      }
      yield r;
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
  }

  /** Every object under a prefix, page by page (1000 keys per request). */
  async *list(bucket: string, prefix: string): AsyncGenerator<ObjectInfo[]> {
    for await (const r of this.pages(bucket, prefix)) yield (r.Contents ?? []).map((o) => ({ key: o.Key!, size: Number(o.Size ?? 0) }));
  }

  /** The "directories" directly under a prefix (common prefixes with "/" as delimiter). */
  async subPrefixes(bucket: string, prefix: string): Promise<string[]> {
    const out: string[] = [];
    for await (const r of this.pages(bucket, prefix, '/')) for (const p of r.CommonPrefixes ?? []) if (p.Prefix) out.push(p.Prefix);
    return out;
  }

  async getJson<T>(bucket: string, key: string): Promise<T | undefined> {
    try {
      const r = await this.run((m, c) => c.send(new m.GetObjectCommand({ Bucket: bucket, Key: key }), this.opts()));
      return JSON.parse(await r.Body!.transformToString()) as T;
    } catch (e) {
      if (isNoSuchKey(e) || isNoSuchBucket(e)) return undefined;
      throw mapS3Error(e, `reading ${bucket}/${key}`);
    }
  }

  async putJson(bucket: string, key: string, value: unknown): Promise<void> {
    await this.put(bucket, key, JSON.stringify(value), 'application/json');
  }

  /**
   * Writes `value` only where the key does not exist yet (If-None-Match: *); false when it did.
   * For stores known to honour the condition (Ceph RGW does): one that ignores it overwrites.
   */
  async putJsonIfAbsent(bucket: string, key: string, value: unknown): Promise<boolean> {
    try {
      await this.send(bucket, key, JSON.stringify(value), 'application/json', '*');
      return true;
    } catch (e) {
      if (code(e) === 'PreconditionFailed' || httpStatus(e) === 412) return false;
      throw mapS3Error(e, `writing ${bucket}/${key}`);
    }
  }

  async put(bucket: string, key: string, body: string | Buffer, contentType?: string): Promise<void> {
    try {
      await this.send(bucket, key, body, contentType);
    } catch (e) {
      throw mapS3Error(e, `writing ${bucket}/${key}`);
    }
  }

  private async send(bucket: string, key: string, body: string | Buffer, contentType?: string, ifNoneMatch?: '*'): Promise<void> {
    const Body = typeof body === 'string' ? Buffer.from(body) : body;
    await this.run((m, c) => c.send(new m.PutObjectCommand({ Bucket: bucket, Key: key, Body, ContentType: contentType, IfNoneMatch: ifNoneMatch }), this.opts()));
  }

  async hasKey(bucket: string, key: string): Promise<boolean> {
    try {
      await this.run((m, c) => c.send(new m.HeadObjectCommand({ Bucket: bucket, Key: key }), this.opts()));
      return true;
    } catch (e) {
      if (isNoSuchKey(e)) return false;
      throw mapS3Error(e, `reading ${bucket}/${key}`);
    }
  }

  async deleteKey(bucket: string, key: string): Promise<void> {
    try {
      await this.run((m, c) => c.send(new m.DeleteObjectCommand({ Bucket: bucket, Key: key }), this.opts()));
    } catch (e) {
      if (isNoSuchKey(e) || isNoSuchBucket(e)) return;
      throw mapS3Error(e, `removing ${bucket}/${key}`);
    }
  }

  /** Deletes up to 1000 keys in one request; keys already gone count as deleted. */
  async deleteBatch(bucket: string, keys: string[]): Promise<void> {
    if (!keys.length) return;
    let r;
    try {
      r = await this.run((m, c) => c.send(new m.DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true } }), this.opts()));
    } catch (e) {
      if (isNoSuchBucket(e)) return;
      throw mapS3Error(e, `removing objects in ${bucket}`);
    }
    const failed = (r.Errors ?? []).filter((x) => x.Code !== 'NoSuchKey');
    if (failed.length) throw mapS3Error({ Code: failed[0]!.Code }, `removing ${failed.length} objects in ${bucket}`);
  }

  /** Removes every object under a prefix, 1000 per request. Safe to repeat after a partial run. */
  async deletePrefix(bucket: string, prefix: string): Promise<number> {
    let n = 0;
    // Listing restarts after each batch: deleting while paging a continuation token can skip keys on some stores.
    for (;;) {
      const page = await this.list(bucket, prefix).next();
      const keys = page.done ? [] : page.value.map((o) => o.key);
      if (!keys.length) return n;
      await this.deleteBatch(bucket, keys);
      n += keys.length;
    }
  }

  /** A server-side copy; objects above the threshold go as parallel part copies. */
  async copy(src: { bucket: string; key: string; size: number }, dst: { bucket: string; key: string }, parts: <T>(f: () => Promise<T>) => Promise<T>): Promise<void> {
    const source = `${src.bucket}/${encodeURIComponent(src.key).replace(/%2F/g, '/')}`;
    try {
      if (src.size <= MULTIPART_COPY_THRESHOLD) {
        await this.run((m, c) => c.send(new m.CopyObjectCommand({ Bucket: dst.bucket, Key: dst.key, CopySource: source, MetadataDirective: 'COPY' }), this.opts()));
        return;
      }
      await this.multipartCopy(source, src.size, dst, parts);
    } catch (e) {
      throw isNoSuchKey(e) ? e : mapS3Error(e, `copying ${src.bucket}/${src.key}`);
    }
  }

  private async multipartCopy(source: string, size: number, dst: { bucket: string; key: string }, parts: <T>(f: () => Promise<T>) => Promise<T>): Promise<void> {
    const { UploadId } = await this.run((m, c) => c.send(new m.CreateMultipartUploadCommand({ Bucket: dst.bucket, Key: dst.key }), this.opts()));
    try {
      const count = Math.ceil(size / COPY_PART_SIZE);
      const done = await Promise.all(
        Array.from({ length: count }, (_, i) =>
          parts(async () => {
            const first = i * COPY_PART_SIZE;
            const last = Math.min(size, first + COPY_PART_SIZE) - 1;
            const r = await this.run((m, c) =>
              c.send(new m.UploadPartCopyCommand({ Bucket: dst.bucket, Key: dst.key, UploadId, PartNumber: i + 1, CopySource: source, CopySourceRange: `bytes=${first}-${last}` }), this.opts()),
            );
            return { PartNumber: i + 1, ETag: r.CopyPartResult!.ETag };
          }),
        ),
      );
      await this.run((m, c) => c.send(new m.CompleteMultipartUploadCommand({ Bucket: dst.bucket, Key: dst.key, UploadId, MultipartUpload: { Parts: done } }), this.opts()));
    } catch (e) {
      // Not through run: the cleanup goes out even when the call has stopped.
      const [[m], c] = await Promise.all([sdk(), this.client()]);
      await c.send(new m.AbortMultipartUploadCommand({ Bucket: dst.bucket, Key: dst.key, UploadId }), { abortSignal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS) }).catch(() => undefined);
      throw e;
    }
  }

  destroy(): void {
    void this.made?.then((c) => c.destroy());
  }
}
