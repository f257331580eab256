import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import pino from 'pino';
import { locationOf } from '../../src/backends/s3/layout.js';
import { stageOptions as s3Options } from '../../src/backends/s3/node.js';
import { mountGroupOf, requireCapability } from '../../src/csi/capabilities.js';
import { parseId } from '../../src/csi/ids.js';
import type * as csi from '../../src/csi/types.js';
import { applyMountGroup } from '../../src/mount/ownership.js';

/** volume_mount_group (VOLUME_MOUNT_GROUP): its grammar, S3's mount options, and the ownership walk. */

const cap = (group: string) => ({ mount: { fs_type: '', mount_flags: [], volume_mount_group: group }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }) as never;

describe('volume_mount_group', () => {
  it('is a plain decimal gid', () => {
    assert.equal(mountGroupOf(cap('')), undefined);
    assert.equal(mountGroupOf(cap('0')), 0);
    assert.equal(mountGroupOf(cap('1000')), 1000);
    assert.equal(mountGroupOf(cap('4294967294')), 4294967294);
  });
  it('refuses anything else with INVALID_ARGUMENT, at the capability check', () => {
    for (const g of ['-1', '+5', '007', '1e3', '0x10', ' 1000', '1000 ', 'wheel', '4294967295', '99999999999', '1000,uid=0', '--gid=0']) {
      assert.throws(() => requireCapability(cap(g)), (e: { code?: number; message: string }) => e.code === status.INVALID_ARGUMENT && /volume_mount_group/.test(e.message), JSON.stringify(g));
    }
  });
});

describe('S3: the pod group as mount options', () => {
  const id = parseId(`s1:v:s3:lab:_:${'0123456789abcdef'.repeat(2)}`, 'v')!;
  const l = locationOf(id)!;
  const req = (vc: Record<string, string>, group: string) => ({ volume_context: vc, volume_capability: cap(group) }) as unknown as csi.NodeStageVolumeRequest;
  it('gives the mount the group, with group write', () => {
    const o = s3Options(id, l, req({}, '2000'));
    assert.equal(o.gid, 2000);
    assert.equal(o.mode, 0o775);
    assert.equal(o.uid, undefined);
  });
  it("leaves the StorageClass's gid and mode as they are", () => {
    const o = s3Options(id, l, req({ gid: '1000', mode: '0770' }, '2000'));
    assert.equal(o.gid, 1000);
    assert.equal(o.mode, 0o770);
  });
  it('sets nothing without a group', () => {
    const o = s3Options(id, l, req({}, ''));
    assert.equal(o.gid, undefined);
    assert.equal(o.mode, undefined);
  });
});

describe('the ownership walk (as kubelet does it)', () => {
  const log = pino({ level: 'silent' });
  it('gives every entry the group, group rw, and directories g+xs; a symlink is not followed', async () => {
    const base = mkdtempSync(path.join(tmpdir(), 'strata-group-'));
    const root = path.join(base, 'vol');
    try {
      mkdirSync(path.join(root, 'd/e'), { recursive: true, mode: 0o700 });
      writeFileSync(path.join(root, 'd/e/f'), 'x', { mode: 0o600 });
      writeFileSync(path.join(root, 'g'), 'x', { mode: 0o644 });
      writeFileSync(path.join(base, 'outside'), 'x', { mode: 0o600 });
      symlinkSync('../outside', path.join(root, 'link'));
      const outsideGid = lstatSync(path.join(base, 'outside')).gid;
      assert.deepEqual(await applyMountGroup(root, 4321, log), { entries: 6, changed: 6 });
      const st = (p: string) => lstatSync(path.join(root, p));
      for (const p of ['', 'd', 'd/e', 'd/e/f', 'g', 'link']) assert.equal(st(p).gid, 4321, p || 'root');
      assert.equal(st('d').mode & 0o7777, 0o2770);
      assert.equal(st('d/e/f').mode & 0o7777, 0o660);
      assert.equal(st('g').mode & 0o7777, 0o664);
      assert.equal(st('').mode & 0o2000, 0o2000);
      // What a link in the volume points at, outside it, is left alone.
      assert.equal(lstatSync(path.join(base, 'outside')).mode & 0o7777, 0o600);
      assert.equal(lstatSync(path.join(base, 'outside')).gid, outsideGid);

      // Again (kubelet's retry, the next pod): nothing is chowned or chmodded, so no ctime moves.
      const ctimes = ['', 'd', 'd/e/f', 'g', 'link'].map((p) => st(p).ctimeMs);
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await applyMountGroup(root, 4321, log), { entries: 6, changed: 0 });
      assert.deepEqual(['', 'd', 'd/e/f', 'g', 'link'].map((p) => st(p).ctimeMs), ctimes);
      // One entry put back is the one the next walk changes.
      writeFileSync(path.join(root, 'd/new'), 'x', { mode: 0o600 });
      assert.deepEqual(await applyMountGroup(root, 4321, log), { entries: 7, changed: 1 });
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
