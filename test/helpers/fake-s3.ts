import { randomBytes } from 'node:crypto';
import type { RgwAnswer } from '../../src/backends/s3/rgw-admin.js';
import type { ObjectInfo, RgwAdminApi, S3Api, S3Connector } from '../../src/backends/s3/s3-api.js';
import { LIST_PAGE, mapS3Error, type S3Credentials } from '../../src/backends/s3/store.js';
import { failedPrecondition } from '../../src/errors.js';

/**
 * An in-memory S3 store with RGW's admin side, behaving as S3Store and RGW
 * do for what the S3 controller relies on: buckets with owners, objects with
 * sizes, ListObjectsV2 pages in key order (each page one request, the next
 * one starting after the last key seen, as a continuation token does),
 * common prefixes, If-None-Match: * answered 412 where the key exists,
 * DeleteObjects, server-side copies, bucket quotas that refuse a write
 * (QuotaExceeded), users with keys and policies. Errors go through the same
 * mapping S3Store applies (mapS3Error), so the controller sees what it would.
 *
 * Tests reach into `buckets` (and `users`) to stage what a crash leaves,
 * `failNext` to cut a sequence at a step, and `calls` (operation names in
 * order) or `trail` (with their targets) to assert what a path sent.
 */

export interface FakeObject {
  body: Buffer;
  size: number;
}

export interface FakeBucket {
  owner: string;
  objects: Map<string, FakeObject>;
  quota?: { enabled: boolean; max_size: number };
  policy?: string;
}

export interface FakeUser {
  keys: Array<{ user: string; access_key: string; secret_key: string }>;
  policies: Map<string, string>;
}

/** Admin requests are named "admin <METHOD> <resource>" and IAM actions "iam <Action>" in `calls`. */
export type FakeOp = keyof S3Api | `admin ${'GET' | 'PUT' | 'DELETE'} ${'bucket' | 'user'}` | `iam ${string}`;

/** An error as the SDK throws it for a store's answer (a service exception has $fault). */
export function s3Error(name: string, httpStatusCode: number): Error {
  return Object.assign(new Error(name), { name, $fault: httpStatusCode >= 500 ? 'server' : 'client', $metadata: { httpStatusCode } });
}

/** The connector's identity: the bucket owner every bucket this store makes gets. */
export const PROVISIONER = 'provisioner';

export class FakeS3 implements S3Api {
  readonly buckets = new Map<string, FakeBucket>();
  readonly users = new Map<string, FakeUser>();
  /** Operation names in call order; `trail` has the same with what each acted on. */
  readonly calls: FakeOp[] = [];
  readonly trail: string[] = [];
  /** Credentials the controller asked for stores with. */
  readonly identities: S3Credentials[] = [];
  /** Keys per ListObjectsV2 page. */
  pageSize = LIST_PAGE;
  /** Whether the cluster has an rgwAdmin identity (quotas and node keys), as the connector tells the controller. */
  rgw = true;
  private readonly failures: Array<{ op: FakeOp; error: Error; after: number }> = [];

  readonly admin: RgwAdminApi = {
    request: async (method, resource, query, body) => {
      this.step(`admin ${method} ${resource}`, `${resource} ${query.bucket ?? query.uid ?? ''}`);
      return resource === 'bucket' ? this.adminBucket(method, query, body) : this.adminUser(method, query);
    },
    iam: async (params) => {
      this.step(`iam ${params.Action}`, params.UserName ?? '');
      const u = params.UserName && this.users.get(params.UserName);
      if (!u) return { status: 404, code: 'NoSuchEntity', body: '' };
      if (params.Action !== 'PutUserPolicy') return { status: 400, code: 'InvalidAction', body: '' };
      u.policies.set(params.PolicyName!, params.PolicyDocument!);
      return { status: 200, body: '' };
    },
  };

  connector(): S3Connector {
    return {
      store: (_ep, creds) => {
        this.identities.push(creds);
        return this;
      },
      admin: () => (this.rgw ? this.admin : undefined),
    };
  }

  /** The next call of `op` (or the one after `after` more) throws `error` instead of acting: a crash or a failure at that step. */
  failNext(op: FakeOp, error: Error = new Error(`killed before ${op}`), after = 0): void {
    this.failures.push({ op, error, after });
  }

  private step(op: FakeOp, target: string): void {
    this.calls.push(op);
    this.trail.push(`${op} ${target}`);
    const f = this.failures.find((x) => x.op === op);
    if (!f) return;
    if (f.after-- > 0) return;
    this.failures.splice(this.failures.indexOf(f), 1);
    throw f.error;
  }

  /** Sorted keys of a bucket (under `prefix`); [] for a missing bucket. */
  keys(bucket: string, prefix = ''): string[] {
    return [...(this.buckets.get(bucket)?.objects.keys() ?? [])].filter((k) => k.startsWith(prefix)).sort(byKey);
  }

  json<T = Record<string, unknown>>(bucket: string, key: string): T | undefined {
    const o = this.buckets.get(bucket)?.objects.get(key);
    return o && (JSON.parse(o.body.toString()) as T);
  }

  /** Puts an object as an app writing through a mount would, with no call logged and no quota check. */
  write(bucket: string, key: string, body: string | Buffer | number): void {
    const b = typeof body === 'number' ? Buffer.alloc(body) : Buffer.from(body);
    this.need(bucket).objects.set(key, { body: b, size: b.length });
  }

  clearCalls(): void {
    this.calls.length = 0;
    this.trail.length = 0;
  }

  private need(bucket: string, what?: string): FakeBucket {
    const b = this.buckets.get(bucket);
    if (!b) throw what ? mapS3Error(s3Error('NoSuchBucket', 404), what) : new Error(`no bucket ${bucket}`);
    return b;
  }

  private store(bucket: string, key: string, body: Buffer, what: string): void {
    const b = this.need(bucket, what);
    // RGW checks the bucket's usage before the write against the write's size.
    const used = [...b.objects.values()].reduce((n, o) => n + o.size, 0);
    if (b.quota?.enabled && b.quota.max_size >= 0 && used + body.length > b.quota.max_size) throw mapS3Error(s3Error('QuotaExceeded', 403), what);
    b.objects.set(key, { body, size: body.length });
  }

  async createBucket(bucket: string): Promise<void> {
    this.step('createBucket', bucket);
    const b = this.buckets.get(bucket);
    if (b && b.owner !== PROVISIONER) throw failedPrecondition(`bucket ${bucket} exists and belongs to someone else`);
    if (!b) this.buckets.set(bucket, { owner: PROVISIONER, objects: new Map() });
  }

  async bucketExists(bucket: string): Promise<boolean> {
    this.step('bucketExists', bucket);
    return this.buckets.has(bucket);
  }

  async deleteBucket(bucket: string): Promise<void> {
    this.step('deleteBucket', bucket);
    const b = this.buckets.get(bucket);
    if (!b) return;
    if (b.objects.size) throw mapS3Error(s3Error('BucketNotEmpty', 409), `removing bucket ${bucket}`);
    this.buckets.delete(bucket);
  }

  async listBuckets(): Promise<string[]> {
    this.step('listBuckets', '');
    return [...this.buckets.keys()].sort(byKey);
  }

  async putBucketPolicy(bucket: string, policy: string): Promise<void> {
    this.step('putBucketPolicy', bucket);
    this.need(bucket, `setting the policy of bucket ${bucket}`).policy = policy;
  }

  async *list(bucket: string, prefix: string): AsyncGenerator<ObjectInfo[]> {
    let after: string | undefined;
    for (;;) {
      this.step('list', `${bucket}/${prefix}`);
      const b = this.buckets.get(bucket);
      if (!b) return;
      const keys = [...b.objects.keys()].filter((k) => k.startsWith(prefix) && (after === undefined || k > after)).sort(byKey);
      const page = keys.slice(0, this.pageSize);
      yield page.map((key) => ({ key, size: b.objects.get(key)!.size }));
      if (keys.length <= this.pageSize) return;
      after = page[page.length - 1];
    }
  }

  async subPrefixes(bucket: string, prefix: string): Promise<string[]> {
    this.step('subPrefixes', `${bucket}/${prefix}`);
    const out = new Set<string>();
    for (const k of this.keys(bucket, prefix)) {
      const slash = k.indexOf('/', prefix.length);
      if (slash >= 0) out.add(k.slice(0, slash + 1));
    }
    return [...out].sort(byKey);
  }

  async getJson<T>(bucket: string, key: string): Promise<T | undefined> {
    this.step('getJson', `${bucket}/${key}`);
    const o = this.buckets.get(bucket)?.objects.get(key);
    return o && (JSON.parse(o.body.toString()) as T);
  }

  async putJson(bucket: string, key: string, value: unknown): Promise<void> {
    this.step('putJson', `${bucket}/${key}`);
    this.store(bucket, key, Buffer.from(JSON.stringify(value)), `writing ${bucket}/${key}`);
  }

  async putJsonIfAbsent(bucket: string, key: string, value: unknown): Promise<boolean> {
    this.step('putJsonIfAbsent', `${bucket}/${key}`);
    if (this.buckets.get(bucket)?.objects.has(key)) return false;
    this.store(bucket, key, Buffer.from(JSON.stringify(value)), `writing ${bucket}/${key}`);
    return true;
  }

  async put(bucket: string, key: string, body: string | Buffer): Promise<void> {
    this.step('put', `${bucket}/${key}`);
    this.store(bucket, key, Buffer.from(body), `writing ${bucket}/${key}`);
  }

  async hasKey(bucket: string, key: string): Promise<boolean> {
    this.step('hasKey', `${bucket}/${key}`);
    return !!this.buckets.get(bucket)?.objects.has(key);
  }

  async deleteKey(bucket: string, key: string): Promise<void> {
    this.step('deleteKey', `${bucket}/${key}`);
    this.buckets.get(bucket)?.objects.delete(key);
  }

  async deleteBatch(bucket: string, keys: string[]): Promise<void> {
    if (!keys.length) return;
    this.step('deleteBatch', `${bucket} ${keys.length}`);
    if (keys.length > LIST_PAGE) throw mapS3Error(s3Error('MalformedXML', 400), `removing objects in ${bucket}`);
    const b = this.buckets.get(bucket);
    for (const k of keys) b?.objects.delete(k);
  }

  /** As S3Store's: list a page, delete it, list again. */
  async deletePrefix(bucket: string, prefix: string): Promise<number> {
    this.step('deletePrefix', `${bucket}/${prefix}`);
    let n = 0;
    for (;;) {
      const page = await this.list(bucket, prefix).next();
      const keys = page.done ? [] : page.value.map((o) => o.key);
      if (!keys.length) return n;
      await this.deleteBatch(bucket, keys);
      n += keys.length;
    }
  }

  async copy(src: { bucket: string; key: string; size: number }, dst: { bucket: string; key: string }): Promise<void> {
    this.step('copy', `${src.bucket}/${src.key} ${dst.bucket}/${dst.key}`);
    const o = this.buckets.get(src.bucket)?.objects.get(src.key);
    // S3Store lets a missing source through unmapped (the copier skips it).
    if (!o) throw s3Error('NoSuchKey', 404);
    this.store(dst.bucket, dst.key, Buffer.from(o.body), `copying ${src.bucket}/${src.key}`);
  }

  private adminBucket(method: string, q: Record<string, string>, body?: string): RgwAnswer {
    const b = q.bucket !== undefined ? this.buckets.get(q.bucket) : undefined;
    if (!b) return { status: 404, code: 'NoSuchBucket', body: '' };
    if (method === 'GET') return { status: 200, body: JSON.stringify({ bucket: q.bucket, owner: b.owner }) };
    if (method === 'PUT' && 'quota' in q) {
      // RGW wants the bucket's owner as uid.
      if (q.uid !== b.owner) return { status: 404, code: 'NoSuchBucket', body: '' };
      const quota = JSON.parse(body ?? '{}') as { enabled: boolean; max_size: number };
      b.quota = { enabled: quota.enabled, max_size: quota.max_size };
      return { status: 200, body: '' };
    }
    return { status: 400, code: 'InvalidArgument', body: '' };
  }

  private adminUser(method: string, q: Record<string, string>): RgwAnswer {
    const uid = q.uid ?? '';
    const u = this.users.get(uid);
    const info = (x: FakeUser) => ({ status: 200, body: JSON.stringify({ user_id: uid, keys: x.keys }) });
    const newKey = (access = randomBytes(10).toString('hex').toUpperCase()) => ({ user: uid, access_key: access, secret_key: randomBytes(20).toString('base64') });
    if (method === 'GET') return u ? info(u) : { status: 404, code: 'NoSuchUser', body: '' };
    if ('key' in q) {
      if (!u) return { status: 404, code: 'NoSuchUser', body: '' };
      if (method === 'PUT') {
        u.keys.push(newKey(q['access-key']));
        return info(u);
      }
      const i = u.keys.findIndex((k) => k.access_key === q['access-key']);
      if (i < 0) return { status: 403, code: 'InvalidAccessKeyId', body: '' };
      u.keys.splice(i, 1);
      return { status: 200, body: '' };
    }
    if (method === 'PUT') {
      if (u) return { status: 409, code: 'UserAlreadyExists', body: '' };
      const made: FakeUser = { keys: [], policies: new Map() };
      if (q['generate-key'] === 'true') made.keys.push(newKey());
      this.users.set(uid, made);
      return info(made);
    }
    if (!u) return { status: 404, code: 'NoSuchUser', body: '' };
    this.users.delete(uid);
    return { status: 200, body: '' };
  }
}

// S3 lists keys in byte order (ASCII here, where it matches JavaScript's).
const byKey = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
