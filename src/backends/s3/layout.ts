import { encodeId, type ObjectId } from '../../csi/ids.js';
import { decodeNodeKey, encodeNodeKey } from '../../csi/grammar.js';

/**
 * Where a volume or snapshot lives in S3. Each one has a root: a bucket of
 * its own (root "") or a prefix "<name>/" in a shared bucket. Under the root,
 * the file system's objects sit below "fs/" (that is what gets mounted) and
 * Strata's records below ".strata/", out of the mount's sight.
 *
 * Ids: s1:<v|s>:s3:<cluster>:<shared bucket or "_">:<hash>. The object's name
 * is derived from the kind and the hash, so the id stays short.
 */

export const OWN_BUCKET = '_';

export interface Location {
  kind: 'v' | 's';
  cluster: string;
  hash: string;
  /** The shared bucket, or undefined when the object has a bucket of its own. */
  shared?: string;
}

export const objectName = (l: Pick<Location, 'kind' | 'hash'>) => `${l.kind === 'v' ? 'csi-vol' : 'csi-snap'}-${l.hash}`;
export const bucketOf = (l: Location) => l.shared ?? objectName(l);
export const rootOf = (l: Location) => (l.shared ? `${objectName(l)}/` : '');
export const dataPrefix = (l: Location) => `${rootOf(l)}fs/`;
export const recordKey = (l: Location) => `${rootOf(l)}.strata/record.json`;
export const attachPrefix = (l: Location) => `${rootOf(l)}.strata/attach/`;
/** Markers on a volume for snapshots still being copied from it. */
export const copyingPrefix = (l: Location) => `${rootOf(l)}.strata/snapshotting/`;

export function locationOf(id: ObjectId): Location | undefined {
  const [bucket, hash, ...rest] = id.location;
  if (!bucket || !hash || rest.length || !/^[0-9a-f]{32}$/.test(hash)) return undefined;
  return { kind: id.kind, cluster: id.cluster, hash, shared: bucket === OWN_BUCKET ? undefined : bucket };
}

export function idOf(l: Location): string {
  return encodeId({ kind: l.kind, backend: 's3', cluster: l.cluster, location: [l.shared ?? OWN_BUCKET, l.hash] });
}

/** Node ids become object keys hex-encoded, as in Ceph metadata keys. */
export const attachKey = (l: Location, nodeId: string) => attachPrefix(l) + encodeNodeKey(nodeId);
export const nodeOfAttachKey = (l: Location, key: string) => decodeNodeKey(key.slice(attachPrefix(l).length));
