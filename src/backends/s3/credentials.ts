import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ClusterConfig } from '../../config/config.js';
import { failedPrecondition, invalidArgument, notFound } from '../../errors.js';
import { S3Store, type S3Credentials, type S3Endpoint } from './store.js';

/**
 * S3 identities: the request's secrets (accessKeyID, secretAccessKey) when it
 * carries them, else the key files the cluster config names. Keys are read
 * from files each time, so a rotated Secret is picked up without a restart.
 */

export type S3ClusterConfig = NonNullable<ClusterConfig['s3']>;

const S3_ACCESS_KEY = /^[A-Za-z0-9][A-Za-z0-9+/=._-]{0,127}$/;
const S3_SECRET_KEY = /^[\x21-\x7e]{1,256}$/;

export function s3Of(cluster: ClusterConfig | undefined, id: string): S3ClusterConfig {
  if (!cluster) throw notFound(`cluster "${id}" is not in the driver config`);
  if (!cluster.s3) throw invalidArgument(`cluster "${id}" has no s3 endpoint in the driver config`);
  return cluster.s3;
}

export function readKey(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw failedPrecondition(`cannot read the ${what} file named in the driver config: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

/** The config's default identity, or undefined when it has none. */
export function configCredentials(s3: S3ClusterConfig): S3Credentials | undefined {
  if (!s3.accessKeyIDFile || !s3.secretAccessKeyFile) return undefined;
  return { accessKeyID: readKey(s3.accessKeyIDFile, 'accessKeyIDFile'), secretAccessKey: readKey(s3.secretAccessKeyFile, 'secretAccessKeyFile') };
}

export function resolveS3Credentials(s3: S3ClusterConfig, secrets: Record<string, string> | undefined): S3Credentials {
  const { accessKeyID, secretAccessKey } = secrets ?? {};
  if (accessKeyID || secretAccessKey) {
    if (!accessKeyID || !secretAccessKey) throw invalidArgument('secrets must hold both accessKeyID and secretAccessKey');
    // Keys land in s3fs's passwd file ("id:secret" lines) and in HTTP signatures: printable ASCII only, no ":" in the id.
    if (!S3_ACCESS_KEY.test(accessKeyID)) throw invalidArgument('secret accessKeyID is not a valid S3 access key id');
    if (!S3_SECRET_KEY.test(secretAccessKey)) throw invalidArgument('secret secretAccessKey is not a valid S3 secret key');
    return { accessKeyID, secretAccessKey };
  }
  const fromConfig = configCredentials(s3);
  if (!fromConfig) throw invalidArgument('no S3 credentials: give the accessKeyID and secretAccessKey secrets, or key files in the cluster config');
  return fromConfig;
}

/** One client per endpoint and identity, reused across requests (keep-alive connections). */
export class S3Stores {
  private readonly stores = new Map<string, S3Store>();

  get(ep: S3Endpoint, creds: S3Credentials): S3Store {
    const key = createHash('sha256').update(`${ep.endpoint}\0${ep.region}\0${creds.accessKeyID}\0${creds.secretAccessKey}`).digest('hex');
    let s = this.stores.get(key);
    if (!s) {
      // Rotated keys leave old clients behind; a small cap bounds that.
      if (this.stores.size >= 64) {
        const [oldKey, old] = this.stores.entries().next().value!;
        old.destroy();
        this.stores.delete(oldKey);
      }
      s = new S3Store(ep, creds);
      this.stores.set(key, s);
    }
    return s;
  }
}
