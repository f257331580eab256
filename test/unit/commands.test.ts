import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RbdAttacher, fuseCommand, mapCommand, unmapCommand, listMappedCommand } from '../../src/backends/rbd/attach.js';
import { cephArgs, type CephConn } from '../../src/ceph/conn.js';
import { identityFromFile } from '../../src/ceph/credentials.js';
import { extFsBytesFromSuperblock, growFsCommand, mkfsCommand } from '../../src/mount/mounter.js';
import { stageMountOptions } from '../../src/backends/rbd/node.js';

/**
 * The kernel paths (krbd, rbd-nbd) cannot run on machines without kernel
 * modules, so their exact commands are checked here; the FUSE path runs for
 * real in the integration tests.
 */

const conn: CephConn = { monitors: ['10.0.0.1:6789', '10.0.0.2:6789'], identity: identityFromFile('csi-node', '/dev/shm/strata-keys-x/abc') };
const ref = { cluster: 'prod', pool: 'rbd', image: 'csi-vol-0123' };

describe('Ceph command lines', () => {
  it('point at the cluster without a ceph.conf and with timeouts', () => {
    const a = cephArgs(conn);
    assert.deepEqual(a.slice(0, 8), ['-c', '/dev/null', '-m', '10.0.0.1:6789,10.0.0.2:6789', '--id', 'csi-node', '--keyfile', '/dev/shm/strata-keys-x/abc']);
    assert.ok(a.includes('--client_mount_timeout'));
    assert.ok(a.includes('--rados_osd_op_timeout'));
  });

  it('never carry a key in argv', () => {
    for (const [, args] of [mapCommand('krbd', ref, conn), mapCommand('rbd-nbd', ref, conn)]) {
      assert.ok(!args.includes('--key'), 'keys go by --keyfile');
    }
  });

  it('map with krbd through rbd device map', () => {
    const [file, args] = mapCommand('krbd', ref, conn);
    assert.equal(file, 'rbd');
    assert.deepEqual(args.slice(-4), ['map', '-t', 'krbd', 'rbd/csi-vol-0123']);
    assert.equal(args[args.length - 5], 'device');
  });

  it('map with rbd-nbd through rbd device map -t nbd', () => {
    const [, args] = mapCommand('rbd-nbd', ref, conn);
    assert.deepEqual(args.slice(-5), ['device', 'map', '-t', 'nbd', 'rbd/csi-vol-0123']);
  });

  it('unmap and list by device type', () => {
    assert.deepEqual(unmapCommand('krbd', '/dev/rbd3'), ['rbd', ['device', 'unmap', '-t', 'krbd', '/dev/rbd3']]);
    assert.deepEqual(unmapCommand('rbd-nbd', '/dev/nbd0'), ['rbd', ['device', 'unmap', '-t', 'nbd', '/dev/nbd0']]);
    assert.deepEqual(listMappedCommand('krbd'), ['rbd', ['device', 'list', '-t', 'krbd', '--format', 'json']]);
  });

  it('name an image in a RADOS namespace as pool/namespace/image, and give rbd-fuse the namespace', () => {
    const nsRef = { ...ref, namespace: 'tenant-a' };
    assert.deepEqual(mapCommand('krbd', nsRef, conn)[1].slice(-4), ['map', '-t', 'krbd', 'rbd/tenant-a/csi-vol-0123']);
    assert.deepEqual(mapCommand('rbd-nbd', nsRef, conn)[1].slice(-4), ['map', '-t', 'nbd', 'rbd/tenant-a/csi-vol-0123']);
    assert.deepEqual(fuseCommand(nsRef, '/m', conn).args, ['-c', '/dev/null', '-p', 'rbd', '-s', 'tenant-a', '-r', 'csi-vol-0123', '/m']);
  });

  it("give each namespace's image its own rbd-fuse directory, and keep the one of the default namespace", () => {
    const a = new RbdAttacher('/var/lib/strata');
    const plain = a.fuseDir(ref);
    assert.equal(plain, a.fuseDir({ ...ref, namespace: undefined }));
    assert.notEqual(a.fuseDir({ ...ref, namespace: 'tenant-a' }), plain);
    assert.notEqual(a.fuseDir({ ...ref, namespace: 'tenant-a' }), a.fuseDir({ ...ref, namespace: 'tenant-b' }));
  });

  it('run rbd-fuse with credentials in CEPH_ARGS, not flags', () => {
    const c = fuseCommand(ref, '/var/lib/strata/rbd-fuse/x', conn);
    assert.equal(c.file, 'rbd-fuse');
    assert.deepEqual(c.args, ['-c', '/dev/null', '-p', 'rbd', '-r', 'csi-vol-0123', '/var/lib/strata/rbd-fuse/x']);
    assert.match(c.env.CEPH_ARGS!, /--id csi-node --keyfile \/dev\/shm\/strata-keys-x\/abc/);
  });
});

describe('file-system command lines', () => {
  it('make ext4 and xfs without discard and forcing no prompt', () => {
    assert.deepEqual(mkfsCommand('ext4', '/dev/rbd0'), ['mkfs.ext4', ['-q', '-F', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1', '-m', '0', '/dev/rbd0']]);
    assert.deepEqual(mkfsCommand('xfs', '/dev/rbd0'), ['mkfs.xfs', ['-q', '-K', '/dev/rbd0']]);
    assert.throws(() => mkfsCommand('btrfs', '/dev/rbd0'));
  });
  it('grow xfs by mount point and ext4 by device', () => {
    assert.deepEqual(growFsCommand('xfs', '/dev/rbd0', '/mnt/x'), ['xfs_growfs', ['/mnt/x']]);
    assert.deepEqual(growFsCommand('ext4', '/dev/rbd0', '/mnt/x'), ['resize2fs', ['/dev/rbd0']]);
  });
});

describe('staging mount options', () => {
  it('mounts xfs with nouuid so a restore can sit beside its source', () => {
    assert.deepEqual(stageMountOptions('xfs', false, ['noatime']), ['noatime', 'nouuid']);
    assert.deepEqual(stageMountOptions('xfs', false, ['nouuid']), ['nouuid']);
  });
  it('never replays a journal on a read-only staging', () => {
    assert.deepEqual(stageMountOptions('xfs', true, []), ['nouuid', 'ro', 'norecovery']);
    assert.deepEqual(stageMountOptions('ext4', true, []), ['ro', 'noload']);
    assert.deepEqual(stageMountOptions('ext4', false, ['discard']), ['discard']);
  });
});

describe('ext superblock size', () => {
  const sb = (blocks: number, logBlock: number, hi = 0) => {
    const b = Buffer.alloc(1024);
    b.writeUInt32LE(blocks, 0x04);
    b.writeUInt32LE(logBlock, 0x18);
    b.writeUInt16LE(0xef53, 0x38);
    if (hi) {
      b.writeUInt32LE(0x80, 0x60);
      b.writeUInt32LE(hi, 0x150);
    }
    return b;
  };
  it('multiplies the block count by the block size', () => {
    assert.equal(extFsBytesFromSuperblock(sb(1000, 2)), 1000 * 4096);
    assert.equal(extFsBytesFromSuperblock(sb(5, 0)), 5 * 1024);
  });
  it('adds the high word only for 64-bit file systems', () => {
    assert.equal(extFsBytesFromSuperblock(sb(1, 2, 1)), (2 ** 32 + 1) * 4096);
  });
  it('recognises what is not ext', () => {
    assert.equal(extFsBytesFromSuperblock(Buffer.alloc(1024)), undefined);
    assert.equal(extFsBytesFromSuperblock(Buffer.alloc(10)), undefined);
  });
});
