import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_FEATURES, parseRbdParams } from '../../src/backends/rbd/params.js';

describe('RBD StorageClass parameters', () => {
  it('applies defaults', () => {
    const p = parseRbdParams({ backend: 'rbd', clusterID: 'lab', pool: 'rbd' });
    assert.deepEqual(p.imageFeatures, DEFAULT_FEATURES);
    assert.equal(p.fsType, 'ext4');
    assert.equal(p.mounter, undefined);
  });
  it('takes the sidecar fstype and extra metadata keys', () => {
    const p = parseRbdParams({ clusterID: 'lab', pool: 'rbd', 'csi.storage.k8s.io/fstype': 'xfs', 'csi.storage.k8s.io/pvc/name': 'data' });
    assert.equal(p.fsType, 'xfs');
  });
  it('takes a RADOS namespace, and none means the default namespace', () => {
    assert.equal(parseRbdParams({ clusterID: 'lab', pool: 'rbd' }).radosNamespace, undefined);
    assert.equal(parseRbdParams({ clusterID: 'lab', pool: 'rbd', radosNamespace: '' }).radosNamespace, undefined);
    assert.equal(parseRbdParams({ clusterID: 'lab', pool: 'rbd', radosNamespace: 'tenant-a.1_b' }).radosNamespace, 'tenant-a.1_b');
    // The longest that fits: 32 + 11 + 32 bytes leave the snapshot id at exactly 128.
    assert.equal(parseRbdParams({ clusterID: 'c'.repeat(32), pool: 'p'.repeat(11), radosNamespace: 'n'.repeat(32) }).radosNamespace, 'n'.repeat(32));
  });
  for (const [params, msg] of [
    [{ clusterID: 'lab', pool: 'rbd', radosNamespace: '-x' }, /"radosNamespace"/],
    [{ clusterID: 'lab', pool: 'rbd', radosNamespace: 'a/b' }, /"radosNamespace"/],
    [{ clusterID: 'lab', pool: 'rbd', radosNamespace: 'a:b' }, /"radosNamespace"/],
    [{ clusterID: 'lab', pool: 'rbd', radosNamespace: 'n'.repeat(33) }, /"radosNamespace"/],
    [{ clusterID: 'c'.repeat(32), pool: 'p'.repeat(12), radosNamespace: 'n'.repeat(32) }, /too long together: the snapshot ids would be 129 bytes/],
    [{ clusterID: 'c'.repeat(32), pool: 'p'.repeat(63) }, /too long together/],
    [{ clusterID: 'lab' }, /"pool" is required/],
    [{ clusterID: 'lab', pool: 'rbd', mounter: 'nfs' }, /"mounter"/],
    [{ clusterID: 'lab', pool: 'rbd', fsType: 'btrfs' }, /"fsType"/],
    [{ clusterID: 'lab', pool: 'rbd', imageFeatures: 'exclusive-lock' }, /layering/],
    [{ clusterID: 'lab', pool: 'rbd', imageFeatures: 'layering,bogus' }, /bogus/],
    [{ clusterID: 'lab', pool: 'rbd', poool: 'x' }, /unknown parameter "poool"/],
    [{ clusterID: 'lab', pool: 'rbd/evil' }, /"pool"/],
  ] as const) {
    it(`rejects ${JSON.stringify(params)}`, () => assert.throws(() => parseRbdParams(params as Record<string, string>), msg));
  }
});
