import { invalidArgument } from '../../errors.js';
import { MAX_ID_BYTES, rbdIdBytes, shown } from '../../csi/ids.js';
import { CEPH_NAME, CLUSTER_ID, RBD_NAMESPACE } from '../../csi/grammar.js';

/** StorageClass parameters of the RBD backend, validated with errors that name the key. */

export type RbdMounter = 'krbd' | 'rbd-nbd' | 'rbd-fuse';
export type FsType = 'ext4' | 'xfs';

export interface RbdParams {
  clusterID: string;
  pool: string;
  /** A RADOS namespace of the pool; undefined for the pool's default namespace. */
  radosNamespace?: string;
  dataPool?: string;
  imageFeatures: string[];
  mounter?: RbdMounter;
  fsType: FsType;
}

export const DEFAULT_FEATURES = ['layering', 'exclusive-lock', 'object-map', 'fast-diff', 'deep-flatten'];
const KNOWN_FEATURES = new Set([...DEFAULT_FEATURES, 'journaling']);
export const MOUNTERS: RbdMounter[] = ['krbd', 'rbd-nbd', 'rbd-fuse'];
export const FS_TYPES: FsType[] = ['ext4', 'xfs'];
const KEYS = new Set(['backend', 'clusterID', 'pool', 'radosNamespace', 'dataPool', 'imageFeatures', 'mounter', 'fsType']);
// Keys the Kubernetes sidecars add (PVC name/namespace with --extra-create-metadata, fstype).
const SIDECAR_PREFIX = 'csi.storage.k8s.io/';

export function parseRbdParams(p: Record<string, string>): RbdParams {
  for (const k of Object.keys(p)) {
    if (!KEYS.has(k) && !k.startsWith(SIDECAR_PREFIX)) throw invalidArgument(`unknown parameter ${shown(k)} for backend rbd`);
  }
  const need = (k: string) => {
    const v = p[k];
    if (!v) throw invalidArgument(`parameter "${k}" is required for backend rbd`);
    return v;
  };
  const pool = need('pool');
  if (!CEPH_NAME.test(pool)) throw invalidArgument('parameter "pool" must be a plain pool name');
  const radosNamespace = p.radosNamespace || undefined;
  if (radosNamespace && !RBD_NAMESPACE.test(radosNamespace)) {
    throw invalidArgument('parameter "radosNamespace" must be 1-32 letters, digits, "_", "." or "-", beginning with a letter or digit');
  }
  const clusterID = need('clusterID');
  // A cluster id of another form is no configured cluster: the lookup answers that later.
  const idBytes = rbdIdBytes(clusterID, pool, radosNamespace);
  if (CLUSTER_ID.test(clusterID) && idBytes > MAX_ID_BYTES) {
    throw invalidArgument(`parameters "clusterID", "pool" and "radosNamespace" are too long together: the snapshot ids would be ${idBytes} bytes, more than ${MAX_ID_BYTES}`);
  }
  const dataPool = p.dataPool || undefined;
  if (dataPool && !CEPH_NAME.test(dataPool)) throw invalidArgument('parameter "dataPool" must be a plain pool name');
  const imageFeatures = p.imageFeatures ? p.imageFeatures.split(',').map((f) => f.trim()).filter(Boolean) : DEFAULT_FEATURES;
  const bad = imageFeatures.find((f) => !KNOWN_FEATURES.has(f));
  if (bad) throw invalidArgument(`parameter "imageFeatures": unknown feature ${shown(bad)}`);
  if (!imageFeatures.includes('layering')) throw invalidArgument('parameter "imageFeatures" must include layering (snapshots and clones need it)');
  const mounter = p.mounter ? (p.mounter as RbdMounter) : undefined;
  if (mounter && !MOUNTERS.includes(mounter)) throw invalidArgument(`parameter "mounter" must be one of ${MOUNTERS.join(', ')}`);
  const fsType = (p.fsType || p['csi.storage.k8s.io/fstype'] || 'ext4') as FsType;
  if (!FS_TYPES.includes(fsType)) throw invalidArgument(`parameter "fsType" must be one of ${FS_TYPES.join(', ')}`);
  return { clusterID, pool, radosNamespace, dataPool, imageFeatures, mounter, fsType };
}
