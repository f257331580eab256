import { invalidArgument } from '../errors.js';

/**
 * The exact forms of everything a request may name, checked at the edge
 * before any of it reaches a command line, a file path or Ceph. Each is
 * Ceph's or S3's own rule or stricter; none can begin with "-" (so none is
 * ever read as a command option), hold "/" (so none walks a path) or hold
 * ":" (so ids split cleanly).
 */

/** Cluster ids of the driver config. */
export const CLUSTER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
/** Pool, file-system and subvolume-group names. */
export const CEPH_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
/**
 * RADOS namespaces of RBD volumes: the pool-name alphabet, at most 32 bytes
 * (Ceph takes longer ones), so that a namespace fits in the 128 bytes of an
 * id beside a cluster id and a pool name (see rbdIdBytes in ids.ts).
 */
export const RBD_NAMESPACE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
/** The hash of a request name that names every object Strata makes. */
export const NAME_HASH = /^[0-9a-f]{32}$/;
export const VOLUME_OBJECT = /^csi-vol-[0-9a-f]{32}$/;
export const SNAPSHOT_OBJECT = /^csi-snap-[0-9a-f]{32}$/;
/** Ceph user names of the request secrets. */
export const CEPH_USER = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** S3 bucket naming rules: 3-63 lowercase letters, digits, "." and "-", alphanumeric at both ends, no "..", not an IP address. */
export function isBucketName(s: string): boolean {
  return /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(s) && !/\.\.|\.-|-\./.test(s) && !/^\d+\.\d+\.\d+\.\d+$/.test(s);
}

/**
 * Node ids: what Kubernetes allows for a node name (a DNS subdomain, at most
 * 253 bytes), upper case letters tolerated. A node id becomes part of Ceph
 * metadata keys and S3 object keys, so anything else is refused.
 */
export const NODE_ID = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

export function isNodeId(s: string): boolean {
  return NODE_ID.test(s);
}

export function requireNodeId(s: string, field = 'node_id'): string {
  if (!isNodeId(s)) throw invalidArgument(`${field} must be a Kubernetes node name (letters, digits, "-" and ".", at most 253 bytes)`);
  return s;
}

/**
 * Node ids as they are stored in metadata keys: hex, so that whatever a key
 * store makes of unusual bytes, the key is plain ASCII and decodes back.
 */
export const encodeNodeKey = (nodeId: string): string => Buffer.from(nodeId, 'utf8').toString('hex');

export function decodeNodeKey(key: string): string | undefined {
  if (!/^([0-9a-f]{2})+$/.test(key)) return undefined;
  const s = Buffer.from(key, 'hex').toString('utf8');
  return isNodeId(s) ? s : undefined;
}

/** The CSI spec's general limit for string fields. */
export const MAX_STRING_BYTES = 128;

export function requireName(s: string | undefined, field = 'name'): string {
  if (!s) throw invalidArgument(`${field} is required`);
  if (Buffer.byteLength(s) > MAX_STRING_BYTES) throw invalidArgument(`${field} is longer than ${MAX_STRING_BYTES} bytes`);
  return s;
}

/**
 * JSON for values stored in Ceph metadata: every character outside printable
 * ASCII escaped, so free text from a request (a volume name) reaches Ceph as
 * plain ASCII whatever it holds. JSON.parse reads it back unchanged.
 */
export function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
