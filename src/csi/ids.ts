import { createHash } from 'node:crypto';
import { CEPH_NAME, CLUSTER_ID, NAME_HASH, RBD_NAMESPACE, SNAPSHOT_OBJECT, VOLUME_OBJECT, isBucketName } from './grammar.js';

/**
 * Volume and snapshot ids are self-describing so that any controller replica
 * (or a restarted one) can find the object without local state:
 *
 *   s1:<kind>:<backend>:<clusterID>:<location...>
 *
 * kind is "v" (volume) or "s" (snapshot); location is backend specific, e.g.
 * "<pool>:<image>" for RBD, or "<pool>:<namespace>:<image>" for an RBD image
 * in a RADOS namespace (an id without the namespace part names the pool's
 * default namespace, as every id did before namespaces). "s1" is the id
 * format version. Ids are at most 128 bytes, the CSI limit for strings.
 */

export const ID_VERSION = 's1';
export const MAX_ID_BYTES = 128;

export type Backend = 'rbd' | 'cephfs' | 's3';
export type IdKind = 'v' | 's';

export interface ObjectId {
  kind: IdKind;
  backend: Backend;
  cluster: string;
  location: string[];
}

const BACKENDS = new Set<Backend>(['rbd', 'cephfs', 's3']);

type PartCheck = (part: string) => boolean;
const re = (r: RegExp): PartCheck => (p) => r.test(p);
const cephName = re(CEPH_NAME);
const volume = re(VOLUME_OBJECT);
const snapshot = re(SNAPSHOT_OBJECT);

const rbdNamespace = re(RBD_NAMESPACE);

/** The exact location grammars of each backend's ids, by kind (one of the forms listed): anything else is no id of ours. */
const LOCATIONS: Record<Backend, Record<IdKind, PartCheck[][]>> = {
  rbd: { v: [[cephName, volume], [cephName, rbdNamespace, volume]], s: [[cephName, snapshot], [cephName, rbdNamespace, snapshot]] },
  cephfs: { v: [[cephName, cephName, volume]], s: [[cephName, cephName, volume, snapshot]] },
  s3: { v: [[(p) => p === '_' || isBucketName(p), re(NAME_HASH)]], s: [[(p) => p === '_' || isBucketName(p), re(NAME_HASH)]] },
};

/**
 * Bytes of the longest RBD id (a snapshot's) of a cluster, pool and
 * namespace. The grammars allow more than 128 together (a 32-byte cluster id
 * and a 63-byte pool leave no room), so StorageClass parameters are checked
 * against this at the edge rather than minting an id that cannot be sent.
 */
export function rbdIdBytes(cluster: string, pool: string, namespace?: string): number {
  const location = namespace ? [pool, namespace, `csi-snap-${'0'.repeat(32)}`] : [pool, `csi-snap-${'0'.repeat(32)}`];
  return Buffer.byteLength([ID_VERSION, 's', 'rbd', cluster, ...location].join(':'));
}

/** Mints an id; one that parseId would not take back is a bug in the caller, never sent out. */
export function encodeId(id: ObjectId): string {
  const s = [ID_VERSION, id.kind, id.backend, id.cluster, ...id.location].join(':');
  if (Buffer.byteLength(s) > MAX_ID_BYTES) throw new Error(`id would be ${Buffer.byteLength(s)} bytes, more than ${MAX_ID_BYTES}`);
  const back = parseId(s, id.kind);
  // Taken back as other parts ("a:b" as a cluster reads as a cluster and a namespace) is as wrong as not taken back.
  if (!back || back.cluster !== id.cluster || back.location.join('\0') !== id.location.join('\0')) throw new Error(`id parts ${JSON.stringify([id.cluster, ...id.location])} do not match the ${id.backend} id grammar`);
  return s;
}

/**
 * Returns undefined for anything that is not one of our ids (callers map
 * that to NOT_FOUND): every part must match its backend's exact grammar, so
 * a parsed id is safe as a command argument, a metadata key or a file name.
 */
export function parseId(s: string, kind: IdKind): ObjectId | undefined {
  if (!s || Buffer.byteLength(s) > MAX_ID_BYTES) return undefined;
  const parts = s.split(':');
  if (parts.length < 5 || parts[0] !== ID_VERSION || parts[1] !== kind) return undefined;
  const backend = parts[2] as Backend;
  if (!BACKENDS.has(backend) || !CLUSTER_ID.test(parts[3]!)) return undefined;
  const location = parts.slice(4);
  const fits = (checks: PartCheck[]) => location.length === checks.length && checks.every((ok, i) => ok(location[i]!));
  if (!LOCATIONS[backend][kind].some(fits)) return undefined;
  return { kind, backend, cluster: parts[3]!, location };
}

/**
 * A string from a request as it may appear in an answer or a log line:
 * quoted with control characters escaped, and cut short. A hostile id can be
 * megabytes, and a gRPC status message that size never reaches the client
 * and wedges its connection.
 */
export function shown(s: string, max = 80): string {
  return JSON.stringify(s.length > max ? `${s.slice(0, max)}…` : s);
}

/**
 * A stable, storage-safe name derived from the CO's request name. Using a hash
 * makes CreateVolume idempotent by construction: a retry with the same name
 * lands on the same image, which then records the original name to confirm.
 */
export function nameHash(driverName: string, requestName: string): string {
  return createHash('sha256').update(driverName).update('\0').update(requestName).digest('hex').slice(0, 32);
}
