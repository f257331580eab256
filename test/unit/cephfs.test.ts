import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fuseMountCommand, kernelMountCommand, type CephfsMountSpec } from '../../src/backends/cephfs/node.js';
import { parseCephfsParams } from '../../src/backends/cephfs/params.js';
import { decidePublish, type Attachment } from '../../src/backends/attachments.js';
import { identityFromFile } from '../../src/ceph/credentials.js';

const spec: CephfsMountSpec = {
  monitors: ['10.0.0.1:6789', '10.0.0.2:6789'],
  identity: identityFromFile('strata-csi-vol-ab', '/dev/shm/k/1'),
  fsName: 'fs1',
  path: '/volumes/csi/csi-vol-ab/uuid',
  target: '/staging',
  readonly: false,
  options: [],
};

describe('cephfs mount commands', () => {
  it('builds the kernel mount with a secret file, never the key', () => {
    assert.deepEqual(kernelMountCommand({ ...spec, readonly: true, options: ['noatime'] }), [
      'mount',
      ['-t', 'ceph', '10.0.0.1:6789,10.0.0.2:6789:/volumes/csi/csi-vol-ab/uuid', '/staging', '-o', 'name=strata-csi-vol-ab,secretfile=/dev/shm/k/1,mds_namespace=fs1,ro,noatime'],
    ]);
  });
  it('builds ceph-fuse rooted at the subvolume path with a key file', () => {
    const [file, args] = fuseMountCommand(spec);
    assert.equal(file, 'ceph-fuse');
    assert.deepEqual(args.slice(0, 8), ['-c', '/dev/null', '-m', '10.0.0.1:6789,10.0.0.2:6789', '--id', 'strata-csi-vol-ab', '--keyfile', '/dev/shm/k/1']);
    assert.equal(args[args.indexOf('-r') + 1], spec.path);
    assert.equal(args[args.indexOf('--client_fs') + 1], 'fs1', 'the file system of the id, not the cluster default');
    assert.equal(args.at(-1), '/staging');
    assert.ok(!args.includes('-o'), 'no options when none are asked');
    assert.deepEqual(fuseMountCommand({ ...spec, readonly: true }).at(1)!.slice(-3), ['-o', 'ro', '/staging']);
  });
});

describe('cephfs parameters', () => {
  it('defaults the subvolume group and splits mount options', () => {
    const p = parseCephfsParams({ backend: 'cephfs', clusterID: 'c', fsName: 'fs1', fuseMountOptions: 'noatime, debug' });
    assert.equal(p.subvolumeGroup, 'csi');
    assert.deepEqual(p.fuseMountOptions, ['noatime', 'debug']);
  });
  it('names the bad key', () => {
    assert.throws(() => parseCephfsParams({ backend: 'cephfs', clusterID: 'c' }), /"fsName" is required/);
    assert.throws(() => parseCephfsParams({ backend: 'cephfs', clusterID: 'c', fsName: 'a', mounter: 'nfs' }), /"mounter"/);
    assert.throws(() => parseCephfsParams({ backend: 'cephfs', clusterID: 'c', fsName: 'a', kernelMountOptions: 'a;rm -rf' }), /kernelMountOptions/);
    assert.throws(() => parseCephfsParams({ backend: 'cephfs', clusterID: 'c', fsName: 'a', pol: 'x' }), /unknown parameter "pol"/);
  });
});

describe('publish rules', () => {
  const rw: Attachment = { mode: 'SINGLE_NODE_WRITER', readonly: false };
  const many: Attachment = { mode: 'MULTI_NODE_MULTI_WRITER', readonly: false };
  it('is idempotent for the same node and options, and refuses other options', () => {
    assert.equal(decidePublish(new Map([['a', rw]]), 'a', 'SINGLE_NODE_WRITER', false), 'exists');
    assert.throws(() => decidePublish(new Map([['a', rw]]), 'a', 'SINGLE_NODE_WRITER', true), /different options/);
  });
  it('keeps single-node volumes on one node and lets multi-node ones spread', () => {
    assert.throws(() => decidePublish(new Map([['a', rw]]), 'b', 'MULTI_NODE_MULTI_WRITER', false), /single-node access mode to node a/);
    assert.throws(() => decidePublish(new Map([['a', many]]), 'b', 'SINGLE_NODE_WRITER', false), /attached to node a/);
    assert.equal(decidePublish(new Map([['a', many]]), 'b', 'MULTI_NODE_MULTI_WRITER', false), 'add');
    assert.equal(decidePublish(new Map(), 'b', 'SINGLE_NODE_WRITER', false), 'add');
  });
});
