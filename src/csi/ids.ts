import { createHash } from 'node:crypto';

/**
 * Volume and snapshot ids are self-describing so that any controller replica
 * (or a restarted one) can find the object without local state:
 *
 *   s1:<kind>:<backend>:<clusterID>:<location...>
 *
 * kind is "v" (volume) or "s" (snapshot); location is backend specific, e.g.
 * "<pool>:<image>" for RBD. "s1" is the id format version. Ids are at most
 * 128 bytes, the CSI limit for strings.
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
const partPattern = /^[^:\s]+$/;

export function encodeId(id: ObjectId): string {
  for (const p of [id.cluster, ...id.location]) {
    if (!partPattern.test(p)) throw new Error(`id part "${p}" may not be empty or contain ":" or spaces`);
  }
  const s = [ID_VERSION, id.kind, id.backend, id.cluster, ...id.location].join(':');
  if (Buffer.byteLength(s) > MAX_ID_BYTES) throw new Error(`id would be ${Buffer.byteLength(s)} bytes, more than ${MAX_ID_BYTES}`);
  return s;
}

/** Returns undefined for anything that is not one of our ids (callers map that to NOT_FOUND). */
export function parseId(s: string, kind: IdKind): ObjectId | undefined {
  if (!s || Buffer.byteLength(s) > MAX_ID_BYTES) return undefined;
  const parts = s.split(':');
  if (parts.length < 5 || parts[0] !== ID_VERSION || parts[1] !== kind) return undefined;
  const backend = parts[2] as Backend;
  if (!BACKENDS.has(backend)) return undefined;
  if (parts.slice(3).some((p) => !partPattern.test(p))) return undefined;
  return { kind, backend, cluster: parts[3]!, location: parts.slice(4) };
}

/**
 * A stable, storage-safe name derived from the CO's request name. Using a hash
 * makes CreateVolume idempotent by construction: a retry with the same name
 * lands on the same image, which then records the original name to confirm.
 */
export function nameHash(driverName: string, requestName: string): string {
  return createHash('sha256').update(driverName).update('\0').update(requestName).digest('hex').slice(0, 32);
}
