import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

/** Driver configuration, read once at start; every error names the bad key. */

const clusterIdPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
// Segment keys follow the CSI topology key rules (optional DNS prefix + name).
const topologyKey = /^([a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

const CephSchema = z
  .object({
    monitors: z.array(z.string().min(1)).min(1, 'at least one monitor address is required'),
    /** Default identity when a request carries no secrets. */
    userID: z.string().min(1).optional(),
    /** File holding the default identity's key (the key itself never sits in config). */
    userKeyFile: z.string().min(1).optional(),
  })
  .strict()
  .refine((c) => (c.userID === undefined) === (c.userKeyFile === undefined), {
    message: 'userID and userKeyFile go together',
  });

const S3Schema = z
  .object({
    endpoint: z.string().url(),
    region: z.string().min(1).default('us-east-1'),
    accessKeyIDFile: z.string().min(1).optional(),
    secretAccessKeyFile: z.string().min(1).optional(),
    /** Ceph RGW only: an admin identity (cap buckets=*) to enforce capacity as bucket quotas. */
    rgwAdmin: z.object({ accessKeyIDFile: z.string().min(1), secretAccessKeyFile: z.string().min(1) }).strict().optional(),
  })
  .strict()
  .refine((c) => (c.accessKeyIDFile === undefined) === (c.secretAccessKeyFile === undefined), {
    message: 'accessKeyIDFile and secretAccessKeyFile go together',
  });

const ClusterSchema = z
  .object({
    id: z.string().regex(clusterIdPattern, 'must be 1-32 letters, digits, "_", "." or "-"'),
    topology: z.record(z.string().regex(topologyKey, 'not a valid topology key'), z.string().min(1).max(63)).optional(),
    ceph: CephSchema.optional(),
    s3: S3Schema.optional(),
  })
  .strict();

export const ConfigSchema = z
  .object({
    driverName: z
      .string()
      .max(63)
      .regex(/^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$/, 'must be a DNS-style name')
      .default('strata.csi.dev'),
    clusters: z.array(ClusterSchema).min(1, 'at least one cluster is required'),
  })
  .strict()
  .superRefine((c, ctx) => {
    const seen = new Set<string>();
    c.clusters.forEach((cl, i) => {
      if (seen.has(cl.id)) ctx.addIssue({ code: 'custom', path: ['clusters', i, 'id'], message: `duplicate cluster id "${cl.id}"` });
      seen.add(cl.id);
    });
  });

export type Config = z.infer<typeof ConfigSchema>;
export type ClusterConfig = Config['clusters'][number];
export type CephConfig = NonNullable<ClusterConfig['ceph']>;

export class ConfigError extends Error {}

function describe(issues: z.core.$ZodIssue[]): string {
  return issues.map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`).join('; ');
}

export function parseConfig(text: string, source = 'config'): Config {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (e) {
    throw new ConfigError(`${source}: not valid YAML: ${(e as Error).message}`);
  }
  const r = ConfigSchema.safeParse(raw ?? {});
  if (!r.success) throw new ConfigError(`${source}: ${describe(r.error.issues)}`);
  return r.data;
}

export function loadConfig(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseConfig(text, path);
}

export function findCluster(cfg: Config, id: string): ClusterConfig | undefined {
  return cfg.clusters.find((c) => c.id === id);
}

/**
 * Whether the config names an identity for every store of every cluster.
 * ListVolumes, ControllerGetVolume and GetCapacity carry no secrets, so
 * without one the controller cannot answer them.
 */
export function hasDefaultIdentities(cfg: Config): boolean {
  return cfg.clusters.every((c) => (!c.ceph || !!c.ceph.userID) && (!c.s3 || !!c.s3.accessKeyIDFile));
}

/**
 * Whether a call can reach a cluster's Ceph or S3 store: the request's secrets carry that store's
 * credentials, or the config names a default identity for it. A listing across every store asks
 * only those it can reach (Ceph secrets say nothing to S3, and the other way round).
 */
export function canReach(cluster: ClusterConfig, store: 'ceph' | 's3', secrets: Record<string, string> = {}): boolean {
  if (store === 'ceph') return !!cluster.ceph && ('userID' in secrets || !!cluster.ceph.userID);
  return !!cluster.s3 && ('accessKeyID' in secrets || !!cluster.s3.accessKeyIDFile);
}
