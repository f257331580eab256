import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { stageOptions as cephfsOptions, subvolumePathOf } from '../../src/backends/cephfs/node.js';
import { RbdAttacher } from '../../src/backends/rbd/attach.js';
import { stageOptions as rbdOptions } from '../../src/backends/rbd/node.js';
import { locationOf } from '../../src/backends/s3/layout.js';
import { stageOptions as s3Options } from '../../src/backends/s3/node.js';
import { parseId, type ObjectId } from '../../src/csi/ids.js';
import { StageRecords } from '../../src/node/stage-records.js';
import type * as csi from '../../src/csi/types.js';
import { isInside, pathProblem } from '../../src/mount/checks.js';
import { removeMountPoint } from '../../src/mount/mounter.js';

const HASH = '0123456789abcdef0123456789abcdef';
const id = (s: string): ObjectId => {
  const r = parseId(s, 'v');
  assert.ok(r, `${s} parses`);
  return r;
};

describe('node paths: absolute and normalised, or refused', () => {
  for (const p of ['/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/pv-1/mount', '/a', '/a b/c', '/staging/x.y', '/a/..b/c.']) {
    it(`takes ${JSON.stringify(p)}`, () => assert.equal(pathProblem(p), undefined));
  }
  for (const [p, why] of [
    ['', /absolute/],
    ['relative/path', /absolute/],
    ['/', /root/],
    ['/a/../b', /normalised/],
    ['/a/..', /normalised/],
    ['/..', /normalised/],
    ['/a/./b', /normalised/],
    ['/a//b', /normalised/],
    ['//a', /normalised/],
    ['/a/', /normalised/],
    ['/a\0b', /control/],
    ['/a\nb', /control/],
    [`/${'x'.repeat(256)}`, /components/],
    [`/${'abcdefgh/'.repeat(500)}x`, /bytes/],
  ] as const) {
    it(`refuses ${JSON.stringify(p.slice(0, 40))}`, () => assert.match(pathProblem(p) ?? 'accepted', why));
  }
  it('knows what lies inside a directory', () => {
    assert.ok(isInside('/state', '/state/rbd-fuse/x'));
    assert.ok(isInside('/state', '/state/..x'));
    assert.ok(!isInside('/state', '/state'));
    assert.ok(!isInside('/state', '/state/../etc'));
    assert.ok(!isInside('/state', '/stateful/x'));
    assert.ok(!isInside('/state', '/etc'));
  });
});

describe('node removal: only the mount point the node made', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'strata-rm-'));
  it('removes an empty directory and an empty file', async () => {
    mkdirSync(path.join(dir, 'empty-dir'));
    writeFileSync(path.join(dir, 'empty-file'), '');
    assert.equal(await removeMountPoint(path.join(dir, 'empty-dir')), 'removed');
    assert.equal(await removeMountPoint(path.join(dir, 'empty-file')), 'removed');
    assert.ok(!existsSync(path.join(dir, 'empty-dir')) && !existsSync(path.join(dir, 'empty-file')));
    assert.equal(await removeMountPoint(path.join(dir, 'empty-dir')), 'missing', 'a retry finds nothing and is fine');
  });
  it('keeps a file with content, a directory with content, a symlink and what it points to', async () => {
    writeFileSync(path.join(dir, 'file'), 'precious');
    mkdirSync(path.join(dir, 'full'));
    writeFileSync(path.join(dir, 'full', 'x'), 'precious');
    mkdirSync(path.join(dir, 'pointed-to'));
    symlinkSync(path.join(dir, 'pointed-to'), path.join(dir, 'link'));
    for (const n of ['file', 'full', 'link']) assert.equal(await removeMountPoint(path.join(dir, n)), 'kept', n);
    assert.equal(readFileSync(path.join(dir, 'file'), 'utf8'), 'precious');
    assert.equal(readFileSync(path.join(dir, 'full', 'x'), 'utf8'), 'precious');
    assert.ok(existsSync(path.join(dir, 'link')) && existsSync(path.join(dir, 'pointed-to')));
  });
});

describe('node: rbd-fuse directories are named by the id, inside the state directory', () => {
  const a = new RbdAttacher('/state');
  it('hashes cluster, pool and image into one plain name', () => {
    const d = a.fuseDir({ cluster: 'lab', pool: 'rbd', image: `csi-vol-${HASH}` });
    assert.match(d, /^\/state\/rbd-fuse\/[0-9a-f]{32}$/);
    assert.equal(d, a.fuseDir({ cluster: 'lab', pool: 'rbd', image: `csi-vol-${HASH}` }), 'stable, so a restarted node finds it');
  });
  it('keeps images apart whose parts only joined the same way before', () => {
    assert.notEqual(a.fuseDir({ cluster: 'a.b', pool: 'c', image: `csi-vol-${HASH}` }), a.fuseDir({ cluster: 'a', pool: 'b.c', image: `csi-vol-${HASH}` }));
  });
  it('case 2: a location with ../ never leads out of the state directory', () => {
    assert.ok(isInside('/state', a.fuseDir({ cluster: 'x', pool: '..', image: '../../../../tmp/sentinel' })));
    assert.equal(parseId('s1:v:rbd:x:..:../../../../tmp/sentinel', 'v'), undefined, 'and such an id is no id of ours anyway');
  });
});

describe('case 8: the node trusts only what it can check', () => {
  const fsId = id(`s1:v:cephfs:lab:cephfs:csi:csi-vol-${HASH}`);
  const good = `/volumes/csi/csi-vol-${HASH}/6f1c9a8e-2b7d-4c1a-9e3f-0a1b2c3d4e5f`;
  it('CephFS: the subvolume path must be the one of the id', () => {
    assert.equal(subvolumePathOf(fsId, good), good);
    for (const bad of ['/', '/volumes', '/volumes/csi', `/volumes/csi/csi-vol-${HASH}`, `/volumes/csi/csi-vol-${'f'.repeat(32)}/6f1c9a8e-2b7d-4c1a-9e3f-0a1b2c3d4e5f`,
      `/volumes/other/csi-vol-${HASH}/6f1c9a8e-2b7d-4c1a-9e3f-0a1b2c3d4e5f`, `${good}/..`, `${good}/../../..`, `${good}/x`, `/volumes/csi/csi-vol-${HASH}/../../..`]) {
      assert.throws(() => subvolumePathOf(fsId, bad), /not the path of subvolume/, bad);
    }
    assert.throws(() => subvolumePathOf(fsId, undefined), /required/);
  });
  it('CephFS: context options are read with the StorageClass grammar', () => {
    assert.deepEqual(cephfsOptions(fsId, { volume_context: { mounter: 'fuse', fuseMountOptions: 'noatime', subvolumePath: good, clusterID: 'lab' } }), {
      clusterID: 'lab', fsName: 'cephfs', subvolumeGroup: 'csi', pool: undefined, mounter: 'fuse', kernelMountOptions: [], fuseMountOptions: ['noatime'],
    });
    assert.throws(() => cephfsOptions(fsId, { volume_context: { mounter: 'nfs' } }), /volume_context: parameter "mounter"/);
    assert.throws(() => cephfsOptions(fsId, { volume_context: { kernelMountOptions: 'a;id' } }), /volume_context: .*kernelMountOptions/);
  });

  const s3Own = id(`s1:v:s3:lab:_:${HASH}`);
  const s3Shared = id(`s1:v:s3:lab:team-data:${HASH}`);
  const req = (volume_context: Record<string, string>, mount_flags: string[] = []) =>
    ({ volume_context, volume_capability: { mount: { fs_type: '', mount_flags }, access_mode: { mode: 'SINGLE_NODE_WRITER' } } }) as unknown as csi.NodeStageVolumeRequest;
  it('S3: bucket and prefix come from the id; the context may repeat them, never change them', () => {
    const own = locationOf(s3Own)!;
    const shared = locationOf(s3Shared)!;
    assert.deepEqual(s3Options(s3Own, own, req({ bucket: `csi-vol-${HASH}`, prefix: 'fs/', mounter: 'rclone', uid: '1000', mode: '0770' })), {
      mounter: 'rclone', uid: 1000, gid: undefined, mode: 0o770, mountOptions: [],
    });
    assert.equal(s3Options(s3Shared, shared, req({})).mounter, 's3fs', 'nothing in the context: the id alone is enough');
    assert.equal(s3Options(s3Shared, shared, req({ bucket: 'team-data', prefix: `csi-vol-${HASH}/fs/` })).mounter, 's3fs');
    const bad: Record<string, string>[] = [{ prefix: '../../' }, { prefix: `csi-vol-${HASH}/fs/../../` }, { prefix: 'fs/' }, { prefix: '' }, { bucket: 'other-bucket' }, { bucket: 'team-data', prefix: `csi-vol-${'f'.repeat(32)}/fs/` }];
    for (const vc of bad) {
      assert.throws(() => s3Options(s3Shared, shared, req(vc)), /is not the (bucket|prefix) of this volume/, JSON.stringify(vc));
    }
  });
  it('S3: options of the context and mount flags of the capability pass the StorageClass grammar', () => {
    const own = locationOf(s3Own)!;
    assert.deepEqual(s3Options(s3Own, own, req({ mountOptions: 'max_stat_cache_size=1000' }, ['noatime'])).mountOptions, ['noatime', 'max_stat_cache_size=1000']);
    for (const [vc, flags] of [
      [{ mounter: 'goofys' }, []],
      [{ uid: '-1' }, []],
      [{ mode: '1777x' }, []],
      [{ mountOptions: 'passwd_file=/etc/shadow' }, []],
      [{ mountOptions: 'url=http://evil' }, []],
      [{}, ['config=/etc/x']],
      [{}, ['passwd_file=/etc/shadow']],
    ] as const) {
      assert.throws(() => s3Options(s3Own, own, req(vc as Record<string, string>, [...flags])), /volume_context: /, JSON.stringify([vc, flags]));
    }
  });
  it('RBD: attach method and file system are one of the known values', () => {
    const cap = (fs_type: string) => ({ mount: { fs_type, mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }) as unknown as csi.VolumeCapability;
    assert.deepEqual(rbdOptions({ volume_context: { mounter: 'rbd-fuse', fsType: 'xfs' }, volume_capability: cap('') }), { mounter: 'rbd-fuse', fsType: 'xfs' });
    assert.deepEqual(rbdOptions({ volume_context: {}, volume_capability: cap('') }), { mounter: undefined, fsType: 'ext4' });
    assert.equal(rbdOptions({ volume_context: { fsType: 'xfs' }, volume_capability: cap('ext4') }).fsType, 'ext4', 'the capability wins');
    assert.throws(() => rbdOptions({ volume_context: { mounter: 'nbd; id' }, volume_capability: cap('') }), /volume_context.mounter/);
    assert.throws(() => rbdOptions({ volume_context: {}, volume_capability: cap('btrfs') }), /not one of ext4, xfs/);
    assert.throws(() => rbdOptions({ volume_context: { fsType: 'vfat' }, volume_capability: cap('') }), /not one of ext4, xfs/);
  });
  it('refuses with INVALID_ARGUMENT', () => {
    assert.throws(() => subvolumePathOf(fsId, '/'), (e: { code?: number }) => e.code === status.INVALID_ARGUMENT);
    assert.throws(() => s3Options(s3Own, locationOf(s3Own)!, req({ prefix: '../../' })), (e: { code?: number }) => e.code === status.INVALID_ARGUMENT);
  });
});

describe('stage records: only records with clean paths are acted on', () => {
  it('drops a record whose staging path or target is not clean', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-rec-'));
    const r = new StageRecords(dir);
    const req = { volume_id: 'v', staging_target_path: '/k/s', secrets: {}, volume_context: {}, publish_context: {} } as unknown as csi.NodeStageVolumeRequest;
    r.staged(req, true);
    assert.equal(r.all().length, 1);
    const file = path.join(dir, 'staged', readdirSync(path.join(dir, 'staged'))[0]!);
    writeFileSync(file, JSON.stringify({ v: 1, request: { ...req, staging_target_path: '/k/../etc' }, targets: {} }));
    assert.deepEqual(r.all(), []);
    writeFileSync(file, JSON.stringify({ v: 1, request: req, targets: { '/pods/../../etc': { readonly: false, flags: [] } } }));
    assert.deepEqual(r.all(), []);
  });
});
