import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deviceInUse, findMount, parseMountInfo } from '../../src/mount/mountinfo.js';

const SAMPLE = [
  '22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '42 27 0:39 / /var/lib/strata/rbd-fuse/lab.rbd.csi-vol-1 rw,nosuid,nodev,relatime - fuse.rbd-fuse rbd-fuse rw,user_id=0,group_id=0',
  '43 22 7:0 / /tmp/with\\040space rw,relatime - xfs /dev/loop0 rw,attr2',
  '44 22 7:0 / /tmp/target ro,relatime shared:5 - xfs /dev/loop0 rw,attr2',
  '45 22 7:0 / /tmp/target rw,relatime shared:6 - xfs /dev/loop0 rw,attr2',
  '46 22 0:5 /loop3 /tmp/staging/block rw,nosuid shared:7 - devtmpfs udev rw,size=4096k',
].join('\n');

describe('mountinfo', () => {
  const all = parseMountInfo(SAMPLE);
  it('parses fields, optional fields and the separator', () => {
    assert.equal(all.length, 6);
    assert.equal(all[1]!.fsType, 'fuse.rbd-fuse');
    assert.equal(all[1]!.source, 'rbd-fuse');
    assert.equal(all[0]!.source, '/dev/vda');
  });
  it('unescapes octal in paths', () => assert.equal(all[2]!.mountPoint, '/tmp/with space'));
  it('finds the topmost of stacked mounts', async () => {
    const m = await findMount('/tmp/target/', all);
    assert.equal(m?.mountId, 45);
    assert.equal(await findMount('/tmp/nothing', all), undefined);
  });
  it('tells a device in use by its file system or by a raw-block bind of its node', () => {
    assert.equal(deviceInUse('/dev/loop0', all), true, 'xfs on it');
    assert.equal(deviceInUse('/dev/loop3', all), true, 'its node bound onto a file');
    assert.equal(deviceInUse('/dev/loop1', all), false);
    assert.equal(deviceInUse('/dev/loop30', all), false, 'a prefix is not the device');
  });
  it('reads the real table', async () => {
    const root = await findMount('/');
    assert.ok(root, 'the root file system is always mounted');
  });
});
