import { invalidArgument } from '../../errors.js';
import { shown } from '../../csi/ids.js';
import { CEPH_NAME } from '../../csi/grammar.js';

/** StorageClass parameters of the CephFS backend, validated with errors that name the key. */

export type CephfsMounter = 'kernel' | 'fuse';

export interface CephfsParams {
  clusterID: string;
  fsName: string;
  subvolumeGroup: string;
  pool?: string;
  mounter?: CephfsMounter;
  kernelMountOptions: string[];
  fuseMountOptions: string[];
}

const KEYS = new Set(['backend', 'clusterID', 'fsName', 'subvolumeGroup', 'pool', 'mounter', 'kernelMountOptions', 'fuseMountOptions']);
const SIDECAR_PREFIX = 'csi.storage.k8s.io/';
// Mount options are passed to mount/ceph-fuse as one -o list: no spaces, no shell syntax.
// No "/": no option may point the client at a path of the node (a log or a keyring), and none starts with "-".
const optionPattern = /^[A-Za-z0-9_][A-Za-z0-9_.:=-]*$/;

function options(key: string, v: string | undefined): string[] {
  const list = (v ?? '').split(',').map((o) => o.trim()).filter(Boolean);
  const bad = list.find((o) => !optionPattern.test(o));
  if (bad) throw invalidArgument(`parameter "${key}": option ${shown(bad)} has characters a mount option cannot have`);
  return list;
}

export function parseCephfsParams(p: Record<string, string>): CephfsParams {
  for (const k of Object.keys(p)) {
    if (!KEYS.has(k) && !k.startsWith(SIDECAR_PREFIX)) throw invalidArgument(`unknown parameter ${shown(k)} for backend cephfs`);
  }
  const need = (k: string) => {
    const v = p[k];
    if (!v) throw invalidArgument(`parameter "${k}" is required for backend cephfs`);
    return v;
  };
  const name = (k: string, v: string) => {
    if (!CEPH_NAME.test(v)) throw invalidArgument(`parameter "${k}" must be a plain name`);
    return v;
  };
  const mounter = p.mounter as CephfsMounter | undefined;
  if (mounter && mounter !== 'kernel' && mounter !== 'fuse') throw invalidArgument('parameter "mounter" must be kernel or fuse');
  return {
    clusterID: need('clusterID'),
    fsName: name('fsName', need('fsName')),
    subvolumeGroup: name('subvolumeGroup', p.subvolumeGroup || 'csi'),
    pool: p.pool ? name('pool', p.pool) : undefined,
    mounter,
    kernelMountOptions: options('kernelMountOptions', p.kernelMountOptions),
    fuseMountOptions: options('fuseMountOptions', p.fuseMountOptions),
  };
}
