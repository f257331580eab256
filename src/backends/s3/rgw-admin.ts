import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import type { Config } from '../../config/config.js';
import { findCluster } from '../../config/config.js';
import { failedPrecondition, unavailable } from '../../errors.js';
import { boundedSignal, stopReason, throwIfStopped } from '../../util/call-context.js';
import { readKey, type S3ClusterConfig } from './credentials.js';

/**
 * Ceph RGW's admin ops API (/admin/bucket, /admin/user), signed like S3 with
 * the cluster config's rgwAdmin identity. Bucket quotas need its
 * "buckets=*" cap, per-volume users and keys its "users=*" cap. Answers are
 * never echoed into errors: user answers carry secret keys.
 */

const TIMEOUT_MS = 10_000;

export interface RgwAdminEndpoint {
  s3: S3ClusterConfig;
  signer: SignatureV4;
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
  return { s3, signer: new SignatureV4({ credentials, region: s3.region, service: 's3', sha256: Sha256 }) };
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
  throwIfStopped();
  try {
    const r = await fetch(`${url.origin}${url.pathname}?${qs}`, { method, headers: signed.headers, body, signal: boundedSignal(TIMEOUT_MS) });
    const text = await r.text();
    return r.ok ? { status: r.status, body: text } : { status: r.status, code: /"Code":"(\w+)"/.exec(text)?.[1], body: '' };
  } catch (e) {
    throw stopReason() ?? unavailable(`RGW admin API unreachable: ${(e as Error).name}`);
  }
}

/** The answer's body when it succeeded; else the error the CO sees (`what` names the request, never its secrets). */
export function rgwAdminOk(r: RgwAnswer, what: string): string {
  if (r.status >= 200 && r.status < 300) return r.body;
  const why = `RGW admin API refused ${what}: HTTP ${r.status} ${r.code ?? ''}`.trim();
  // A missing cap is the operator's to fix, not a passing failure.
  if (r.status === 403) throw failedPrecondition(`${why} (the rgwAdmin identity needs the "buckets=*" and "users=*" caps)`);
  throw unavailable(why);
}
