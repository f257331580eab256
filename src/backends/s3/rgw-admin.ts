import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import type { Config } from '../../config/config.js';
import { findCluster } from '../../config/config.js';
import { failedPrecondition, unavailable } from '../../errors.js';
import { boundedSignal, stopReason, throwIfStopped } from '../../util/call-context.js';
import { readKey, type S3ClusterConfig } from './credentials.js';
import type { RgwAdminApi } from './s3-api.js';

/**
 * Ceph RGW's admin ops API (/admin/bucket, /admin/user) and its IAM API (user
 * policies), signed like S3 with the cluster config's rgwAdmin identity.
 * Bucket quotas need its "buckets=*" cap, users and keys of volumes and nodes
 * "users=*", their policies "user-policy=*". Answers are never echoed into
 * errors: user answers carry secret keys.
 */

const TIMEOUT_MS = 10_000;

export interface RgwAdminEndpoint {
  s3: S3ClusterConfig;
  signer: SignatureV4;
  /** The same identity for RGW's IAM API (user policies), which is signed as service "iam". */
  iam: SignatureV4;
}

/** An answer of the admin API: HTTP status and RGW's error code ("NoSuchUser"...), body only when it succeeded. */
export interface RgwAnswer {
  status: number;
  code?: string;
  body: string;
}

/** The cluster's admin endpoint, or undefined when its config has no rgwAdmin identity (not Ceph RGW, or not wanted). */
export function rgwAdminOf(cfg: Config, cluster: string): RgwAdminEndpoint | undefined {
  const s3 = findCluster(cfg, cluster)?.s3;
  if (!s3?.rgwAdmin) return undefined;
  const credentials = { accessKeyId: readKey(s3.rgwAdmin.accessKeyIDFile, 'rgwAdmin.accessKeyIDFile'), secretAccessKey: readKey(s3.rgwAdmin.secretAccessKeyFile, 'rgwAdmin.secretAccessKeyFile') };
  const signer = (service: string) => new SignatureV4({ credentials, region: s3.region, service, sha256: Sha256 });
  return { s3, signer: signer('s3'), iam: signer('iam') };
}

/** The cluster's admin API (see rgwAdminOf), or undefined. */
export function rgwAdminApi(cfg: Config, cluster: string): RgwAdminApi | undefined {
  const a = rgwAdminOf(cfg, cluster);
  return a && { request: (method, resource, query, body) => rgwAdminRequest(a, method, resource, query, body), iam: (params) => rgwIamRequest(a, params) };
}

/**
 * One admin request. Answers whatever RGW said (the caller decides which
 * refusals are fine, such as NoSuchUser on a removal); only an unreachable
 * gateway throws. Bounded by the call's deadline; the body is read under the
 * same signal.
 */
export async function rgwAdminRequest(a: RgwAdminEndpoint, method: 'GET' | 'PUT' | 'DELETE', resource: 'bucket' | 'user', query: Record<string, string>, body?: string): Promise<RgwAnswer> {
  const url = new URL(`/admin/${resource}`, a.s3.endpoint);
  const signed = await a.signer.sign({
    method,
    protocol: url.protocol,
    hostname: url.hostname,
    port: url.port ? Number(url.port) : undefined,
    path: url.pathname,
    query,
    headers: { host: url.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
    body,
  });
  const qs = Object.entries(query).map(([k, v]) => (v === '' ? encodeURIComponent(k) : `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)).join('&');
  return send(`${url.origin}${url.pathname}?${qs}`, method, signed.headers, body);
}

/** One action of RGW's IAM API (a form POST to the endpoint's root), such as PutUserPolicy. */
export async function rgwIamRequest(a: RgwAdminEndpoint, params: Record<string, string>): Promise<RgwAnswer> {
  const url = new URL('/', a.s3.endpoint);
  const body = new URLSearchParams({ ...params, Version: '2010-05-08' }).toString();
  const signed = await a.iam.sign({
    method: 'POST',
    protocol: url.protocol,
    hostname: url.hostname,
    port: url.port ? Number(url.port) : undefined,
    path: '/',
    headers: { host: url.host, 'content-type': 'application/x-www-form-urlencoded' },
    body,
  });
  return send(url.href, 'POST', signed.headers, body);
}

async function send(url: string, method: string, headers: Record<string, string>, body: string | undefined): Promise<RgwAnswer> {
  throwIfStopped();
  try {
    const r = await fetch(url, { method, headers, body, signal: boundedSignal(TIMEOUT_MS) });
    const text = await r.text();
    // Admin ops answer errors in JSON, the IAM API in XML.
    return r.ok ? { status: r.status, body: text } : { status: r.status, code: (/"Code":"(\w+)"/.exec(text) ?? /<Code>(\w+)<\/Code>/.exec(text))?.[1], body: '' };
  } catch (e) {
    throw stopReason() ?? unavailable(`RGW admin API unreachable: ${(e as Error).name}`);
  }
}

/** The answer's body when it succeeded; else the error the CO sees (`what` names the request, never its secrets). */
export function rgwAdminOk(r: RgwAnswer, what: string): string {
  if (r.status >= 200 && r.status < 300) return r.body;
  const why = `RGW admin API refused ${what}: HTTP ${r.status} ${r.code ?? ''}`.trim();
  // A missing cap is the operator's to fix, not a passing failure.
  if (r.status === 403) throw failedPrecondition(`${why} (the rgwAdmin identity needs the "buckets=*", "users=*" and "user-policy=*" caps)`);
  throw unavailable(why);
}
