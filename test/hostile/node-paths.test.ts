import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import { CephLab, LAB_S3 } from '../lab/ceph-lab.js';
import { codeOf, connect, startDriver, type CsiClients, type DriverProcess } from '../helpers/driver.js';
import { leftovers } from '../helpers/leftovers.js';
import { getObject, labS3Client } from '../helpers/s3.js';
import { attach, MiB, mountCap } from '../helpers/volumes.js';
import { findMount, readMountInfo } from '../../src/mount/mountinfo.js';
import type { Volume } from '../../src/csi/gen/csi/v1/Volume.js';
import type { VolumeCapability } from '../../src/csi/gen/csi/v1/VolumeCapability.js';

/**
 * Issue 16, node side: the node touches only what it made (cases 2 and 3)
 * and trusts only what it can check (case 8), against the real binary and a
 * real lab. Sentinels stand where the old code reached: a directory with a
 * mount on it outside the state directory, files at a target path.
 */

const RWX = mountCap('', 'MULTI_NODE_MULTI_WRITER');
const s3Secrets = { accessKeyID: LAB_S3.accessKeyID, secretAccessKey: LAB_S3.secretAccessKey };
const hex = () => randomBytes(16).toString('hex');

async function refused(call: Promise<unknown>, code: string, what: string): Promise<void> {
  await assert.rejects(call, (e) => {
    assert.equal(codeOf(e), code, `${what}: ${(e as Error).message}`);
    return true;
  });
}

describe('issue 16, node: the node touches only what it made and trusts only what it can check', { timeout: 600_000 }, () => {
  let lab: CephLab;
  let drv: DriverProcess;
  let c: CsiClients;
  let s3: S3Client;
  let sentinel: string;

  before(async () => {
    lab = await CephLab.start({ components: ['rbd', 'cephfs', 's3'] });
    drv = await startDriver({ config: lab.writeDriverConfig(), mode: 'all', nodeId: 'node-p', args: ['--heal-interval', '0'] });
    c = connect(drv.socket);
    s3 = labS3Client(lab);
    // Outside the state directory: an empty directory with a mount holding a file, what rbd-fuse's directory looks like.
    sentinel = path.join(drv.dir, 'sentinel');
    mkdirSync(sentinel);
    spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', sentinel], { timeout: 10_000 });
    writeFileSync(path.join(sentinel, 'keep'), 'keep');
  });

  after(async () => {
    s3?.destroy();
    c?.close();
    await drv?.stop();
    await lab?.stop();
  });

  const sentinelIntact = async (what: string) => {
    assert.ok(await findMount(sentinel), `${what}: the sentinel mount outside the state directory is still mounted`);
    assert.equal(readFileSync(path.join(sentinel, 'keep'), 'utf8'), 'keep', what);
  };

  it('case 2: NodeUnstage with an id holding ../ touches nothing outside the state directory', async () => {
    const rel = path.relative(path.join(drv.stateDir, 'rbd-fuse'), sentinel);
    // The id the old code turned into <state>/rbd-fuse/<cluster>.<pool>.<image>, landing on the sentinel.
    const image = `${'../'.repeat(2)}${rel}`;
    assert.equal(path.join(drv.stateDir, 'rbd-fuse', `lab.rbd.${image}`), sentinel, 'the hostile id aims at the sentinel');
    const staging = path.join(drv.dir, 'case2-staging');
    mkdirSync(staging);
    const ids = [
      `s1:v:rbd:lab:rbd:${image}`,
      `s1:v:rbd:lab:..:../../${rel}`,
      `s1:v:cephfs:lab:cephfs:..:../${rel}`,
      `s1:v:s3:lab:..:../${rel}`,
      `s1:v:rbd:../../${rel}:rbd:csi-vol-${hex()}`,
    ];
    for (const id of ids) {
      await refused(c.node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging }), 'NOT_FOUND', id);
      await refused(c.node.NodeUnpublishVolume({ volume_id: id, target_path: sentinel }), 'NOT_FOUND', id);
      await sentinelIntact(id);
    }
    // A path with ../ is refused before anything: the request names exactly what it touches.
    for (const p of [`${staging}/../sentinel`, 'relative/path', `${drv.dir}//sentinel`, `${sentinel}/`, `${sentinel}/.`]) {
      await refused(c.node.NodeUnstageVolume({ volume_id: `s1:v:rbd:lab:rbd:csi-vol-${hex()}`, staging_target_path: p }), 'INVALID_ARGUMENT', p);
      await refused(c.node.NodeUnpublishVolume({ volume_id: `s1:v:rbd:lab:rbd:csi-vol-${hex()}`, target_path: p }), 'INVALID_ARGUMENT', p);
      await refused(c.node.NodeStageVolume({ volume_id: `s1:v:rbd:lab:rbd:csi-vol-${hex()}`, staging_target_path: p, volume_capability: RWX }), 'INVALID_ARGUMENT', p);
    }
    await sentinelIntact('bad paths');
    assert.ok(existsSync(staging), 'the staging directory named with an id of no volume stays');
    // A well-formed id of no volume: the node unstages nothing there and the rbd-fuse directory it would use is inside the state dir.
    await c.node.NodeUnstageVolume({ volume_id: `s1:v:rbd:lab:rbd:csi-vol-${hex()}`, staging_target_path: staging });
    await sentinelIntact('well-formed id');
  });

  it('case 3: NodeUnpublish with an unknown volume id never deletes the file at target_path', async () => {
    const dir = path.join(drv.dir, 'case3');
    mkdirSync(dir);
    const file = path.join(dir, 'file');
    const empty = path.join(dir, 'empty');
    writeFileSync(file, 'not the driver\'s');
    writeFileSync(empty, '');
    for (const id of ['made-up', 's1:v:rbd:lab:rbd:not-ours', `s1:v:nfs:lab:x:${hex()}`, `s1:s:rbd:lab:rbd:csi-snap-${hex()}`]) {
      for (const t of [file, empty, dir]) await refused(c.node.NodeUnpublishVolume({ volume_id: id, target_path: t }), 'NOT_FOUND', `${id} at ${t}`);
    }
    assert.equal(readFileSync(file, 'utf8'), 'not the driver\'s');
    assert.ok(existsSync(empty), 'not even an empty file is removed for an id that is not ours');
  });

  it('case 3: at a known volume\'s target, NodeUnpublish removes only the mount point it made', async () => {
    const vol = (await c.controller.CreateVolume({ name: 'np-s3', capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [RWX], parameters: { backend: 's3', clusterID: 'lab' }, secrets: s3Secrets }))!.volume!;
    const a = await attach(c, vol, 'node-p', path.join(drv.dir, 'case3-known'), RWX, s3Secrets);
    writeFileSync(path.join(a.target, 'data'), 'in the volume');
    await c.node.NodeUnpublishVolume({ volume_id: vol.volume_id!, target_path: a.target });
    assert.ok(!existsSync(a.target), 'the directory publish made is gone once unmounted');

    // Content the node did not make is never removed, whatever the id.
    writeFileSync(a.target, 'a file with content');
    await c.node.NodeUnpublishVolume({ volume_id: vol.volume_id!, target_path: a.target });
    assert.equal(readFileSync(a.target, 'utf8'), 'a file with content');
    await refused(
      c.node.NodePublishVolume({ volume_id: vol.volume_id!, staging_target_path: a.staging, target_path: a.target, volume_capability: RWX, volume_context: vol.volume_context }),
      'FAILED_PRECONDITION',
      'a mount publish onto a regular file',
    );
    assert.equal(readFileSync(a.target, 'utf8'), 'a file with content');
    const full = path.join(drv.dir, 'case3-full');
    mkdirSync(full);
    writeFileSync(path.join(full, 'x'), 'precious');
    await c.node.NodeUnpublishVolume({ volume_id: vol.volume_id!, target_path: full });
    assert.equal(readFileSync(path.join(full, 'x'), 'utf8'), 'precious');

    await c.node.NodeUnstageVolume({ volume_id: vol.volume_id!, staging_target_path: a.staging });
    await c.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-p', secrets: s3Secrets });
    await c.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets: s3Secrets });
  });

  it('case 8: NodePublish binds only a staging path where this node staged that volume', async () => {
    const make = async (name: string) =>
      (await c.controller.CreateVolume({ name, capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [RWX], parameters: { backend: 's3', clusterID: 'lab' }, secrets: s3Secrets }))!.volume!;
    const [a, b] = [await make('np-own-a'), await make('np-own-b')];
    const at = await attach(c, a, 'node-p', path.join(drv.dir, 'own-a'), RWX, s3Secrets);
    const target = path.join(drv.dir, 'own-b-target');
    const publishB = (staging: string) => c.node.NodePublishVolume({ volume_id: b.volume_id!, staging_target_path: staging, target_path: target, volume_capability: RWX, volume_context: b.volume_context });
    await refused(publishB(at.staging), 'FAILED_PRECONDITION', "b published from a's staging path");
    await refused(publishB(sentinel), 'FAILED_PRECONDITION', 'b published from a mount the node did not make');
    await refused(c.node.NodeUnstageVolume({ volume_id: b.volume_id!, staging_target_path: at.staging }), 'FAILED_PRECONDITION', "b unstaged at a's staging path");
    assert.ok(await findMount(at.staging), "a's stage is untouched");
    assert.equal(await findMount(target), undefined, 'nothing was bound');
    await sentinelIntact('after publishing from it');
    await c.node.NodeUnpublishVolume({ volume_id: a.volume_id!, target_path: at.target });
    await c.node.NodeUnstageVolume({ volume_id: a.volume_id!, staging_target_path: at.staging });
    await c.controller.ControllerUnpublishVolume({ volume_id: a.volume_id!, node_id: 'node-p', secrets: s3Secrets });
    for (const v of [a, b]) await c.controller.DeleteVolume({ volume_id: v.volume_id!, secrets: s3Secrets });
  });

  it('case 8: a made-up CephFS id with subvolumePath "/" never mounts the file-system root', async () => {
    const id = `s1:v:cephfs:lab:cephfs:csi:csi-vol-${hex()}`;
    const staging = path.join(drv.dir, 'case8-cephfs');
    mkdirSync(staging);
    const adminSecrets = { userID: 'admin', userKey: lab.adminKey };
    for (const subvolumePath of ['/', '/volumes', '/volumes/csi', `/volumes/csi/csi-vol-${hex()}/6f1c9a8e-2b7d-4c1a-9e3f-0a1b2c3d4e5f`, `/volumes/csi/${id.split(':').at(-1)}/x/../../..`]) {
      // In the publish context, where ControllerPublish puts it, or in the volume context, as volumes of earlier versions have it.
      for (const [volume_context, publish_context] of [[{ subvolumePath, mounter: 'fuse' }, {}], [{ mounter: 'fuse' }, { subvolumePath }]]) {
        await refused(
          c.node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: RWX, secrets: adminSecrets, volume_context, publish_context }),
          'INVALID_ARGUMENT',
          subvolumePath,
        );
        assert.equal(await findMount(staging), undefined, `${subvolumePath}: nothing mounted`);
      }
    }
    // The path of the id's own subvolume, which does not exist: NOT_FOUND, and still nothing mounted.
    const own = `/volumes/csi/${id.split(':').at(-1)}/6f1c9a8e-2b7d-4c1a-9e3f-0a1b2c3d4e5f`;
    await refused(
      c.node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: RWX, secrets: adminSecrets, volume_context: { subvolumePath: own, mounter: 'fuse' }, publish_context: {} }),
      'NOT_FOUND',
      own,
    );
    assert.equal(await findMount(staging), undefined);
    assert.deepEqual(readdirSync(staging), []);
  });

  it('case 8: an S3 prefix of ../../ is refused, and the mount is always the id\'s prefix', async () => {
    const vol: Volume = (await c.controller.CreateVolume({ name: 'np-s3-shared', capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [RWX], parameters: { backend: 's3', clusterID: 'lab', bucket: 'np-shared' }, secrets: s3Secrets }))!.volume!;
    const vc = vol.volume_context!;
    const staging = path.join(drv.dir, 'case8-s3');
    mkdirSync(staging);
    const pub = await c.controller.ControllerPublishVolume({ volume_id: vol.volume_id!, node_id: 'node-p', volume_capability: RWX, secrets: s3Secrets, volume_context: vc });
    const stage = (volume_context: Record<string, string>, cap: VolumeCapability = RWX) =>
      c.node.NodeStageVolume({ volume_id: vol.volume_id!, staging_target_path: staging, volume_capability: cap, secrets: s3Secrets, volume_context, publish_context: pub!.publish_context });
    const hostile: Record<string, string>[] = [{ prefix: '../../' }, { prefix: `${vc.prefix}../../` }, { prefix: '' }, { bucket: 'other-bucket' }, { mountOptions: 'passwd_file=/etc/shadow' }, { mounter: 'sh' }, { uid: '0;id' }];
    for (const bad of hostile) {
      await refused(stage({ ...vc, ...bad }), 'INVALID_ARGUMENT', JSON.stringify(bad));
      assert.equal(await findMount(staging), undefined, `${JSON.stringify(bad)}: nothing mounted`);
    }
    await refused(stage(vc, { mount: { fs_type: '', mount_flags: ['allow_other,passwd_file=/x'] }, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } }), 'INVALID_ARGUMENT', 'a mount flag with a comma');
    await refused(
      c.node.NodeStageVolume({ volume_id: `s1:v:s3:lab:np-shared:${hex()}`, staging_target_path: staging, volume_capability: RWX, secrets: s3Secrets, volume_context: {}, publish_context: {} }),
      'NOT_FOUND',
      'a made-up id in the shared bucket',
    );
    assert.equal(await findMount(staging), undefined);

    // Without bucket or prefix in the context the node still mounts the id's prefix: a file written lands there.
    await stage({ mounter: 's3fs' });
    writeFileSync(path.join(staging, 'where.txt'), 'here');
    await c.node.NodeUnstageVolume({ volume_id: vol.volume_id!, staging_target_path: staging });
    assert.equal((await getObject(s3, 'np-shared', `${vc.prefix}where.txt`)).toString(), 'here');
    assert.equal(vc.prefix, `csi-vol-${vol.volume_id!.split(':').at(-1)}/fs/`);
    await c.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-p', secrets: s3Secrets });
    await c.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets: s3Secrets });
  });

  it('case 8: access mode 99 is refused by NodeStage and NodePublish', async () => {
    const id = `s1:v:s3:lab:_:${hex()}`;
    const cap = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 99 } } as unknown as VolumeCapability;
    const staging = path.join(drv.dir, 'case8-mode');
    await refused(c.node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap, secrets: s3Secrets, volume_context: {}, publish_context: {} }), 'INVALID_ARGUMENT', 'NodeStage');
    await refused(c.node.NodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: `${staging}-t`, volume_capability: cap, volume_context: {} }), 'INVALID_ARGUMENT', 'NodePublish');
    assert.ok(!existsSync(staging) && !existsSync(`${staging}-t`), 'nothing made on disk');
  });

  it('leaves nothing behind but the sentinel', async () => {
    await sentinelIntact('end');
    spawnSync('umount', [sentinel], { timeout: 10_000 });
    assert.deepEqual(await leftovers(drv.dir), []);
    assert.deepEqual((await readMountInfo()).filter((m) => m.mountPoint.startsWith(drv.stateDir)), []);
  });
});
