import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { HeadBucketCommand, ListBucketsCommand } from '@aws-sdk/client-s3';
import { CephLab } from '../lab/ceph-lab.js';
import { codeOf, connect, startDriver, type CsiClients, type DriverProcess } from '../helpers/driver.js';
import { labS3Client } from '../helpers/s3.js';
import type { Volume } from '../../src/csi/gen/csi/v1/Volume.js';
import { BACKENDS, goodCap, hostileRequests, type Backend } from './fuzz-gen.js';
import { PARAMS, checkFiles, deleteListed, detachPremade, failureReport, labSecrets, undoMade, makeSentinels, mgrPid, premade, removeSentinels, runFuzz, type Premade, type Sentinels } from './fuzz-run.js';
import type { VolumeCapability } from '../../src/csi/gen/csi/v1/VolumeCapability.js';
import { nodeUser } from '../../src/backends/cephfs/controller.js';

/**
 * Regression tests for issue 16's controller-side cases, on a real Ceph lab
 * (RBD, CephFS, S3) through the real driver binary: option-like id parts
 * never reach `rbd` (case 1), node ids outside the BMP never reach the mgr
 * (case 4), a burst of hostile requests at one CephFS volume leaves its
 * metadata, data and delete intact (case 6), and node ids with a newline, ":"
 * or "=" are refused before they can damage a volume's records (case 7).
 */

const NODE_ID = 'node-a';
const hex = () => randomBytes(16).toString('hex');
const cap = (b: Backend) => goodCap(b) as unknown as VolumeCapability;

describe('hostile controller input (issue 16)', { timeout: 900_000 }, () => {
  let lab: CephLab;
  let drv: DriverProcess;
  let c: CsiClients;
  let secrets: Record<Backend, Record<string, string>>;
  const vols: Partial<Record<Backend, Volume>> = {};

  const create = async (name: string, b: Backend) =>
    (await c.controller.CreateVolume({ name, capacity_range: { required_bytes: 64 << 20 }, volume_capabilities: [cap(b)], parameters: PARAMS[b], secrets: secrets[b] }))!.volume!;
  const code = async (p: Promise<unknown> | undefined) => {
    try {
      await p;
      return 'OK';
    } catch (e) {
      return codeOf(e);
    }
  };

  before(async () => {
    lab = await CephLab.start({ components: ['rbd', 'cephfs', 's3'] });
    drv = await startDriver({ config: lab.writeDriverConfig(), nodeId: NODE_ID, mode: 'all', logLevel: 'info' });
    c = connect(drv.socket);
    secrets = labSecrets(lab);
    for (const b of BACKENDS) vols[b] = await create(`input-${b}`, b);
  });

  after(async () => {
    c?.close();
    await drv?.stop();
    await lab?.stop();
  });

  let case6: Awaited<ReturnType<typeof runFuzz>> | undefined;

  it('case 1: a volume id whose parts begin with "--" never reaches the rbd command line', async () => {
    const dir = mkdtempSync('/tmp/strata-case1-');
    try {
      const poolBefore = await lab.rbd(['ls', '-l', '-p', 'rbd', '--format', 'json']);
      const trashBefore = await lab.rbd(['trash', 'ls', '-p', 'rbd', '--format', 'json']);
      const opt = (n: number) => [`--log-file=${dir}/pwn${n}`, `--admin-socket=${dir}/pwn${n}`, `--export=${dir}/pwn${n}`, `--keyring=${dir}/pwn${n}`][n % 4]!;
      const volumeIds = [
        `s1:v:rbd:lab:${opt(0)}:csi-vol-${hex()}`,
        `s1:v:rbd:lab:rbd:${opt(1)}`,
        `s1:v:rbd:lab:rbd:${opt(2)}`,
        `s1:v:rbd:${opt(3)}:rbd:csi-vol-${hex()}`,
        `s1:v:rbd:lab:--pool=rbd:--image=${vols.rbd!.volume_id!.split(':').pop()}`,
        `s1:v:rbd:lab:-p:csi-vol-${hex()}`,
        `s1:v:rbd:lab:rbd:--help`,
      ];
      const snapshotIds = [`s1:s:rbd:lab:rbd:${opt(4)}`, `s1:s:rbd:lab:--pool=rbd:csi-snap-${hex()}`, `s1:s:rbd:lab:${opt(5)}:csi-snap-${hex()}`];
      const s = secrets.rbd;
      const got: string[] = [];
      const expect = async (what: string, want: string[], p: Promise<unknown> | undefined) => {
        const answer = await code(p);
        if (!want.includes(answer)) got.push(`${what}: ${answer}, wanted ${want.join('|')}`);
      };
      const staging = path.join(drv.dir, 'case1-staging');
      mkdirSync(staging, { recursive: true });
      for (const id of volumeIds) {
        await expect(`ControllerGetVolume ${id}`, ['NOT_FOUND'], c.controller.ControllerGetVolume({ volume_id: id }));
        await expect(`ControllerExpandVolume ${id}`, ['NOT_FOUND'], c.controller.ControllerExpandVolume({ volume_id: id, capacity_range: { required_bytes: 128 << 20 }, secrets: s }));
        await expect(`ControllerPublishVolume ${id}`, ['NOT_FOUND'], c.controller.ControllerPublishVolume({ volume_id: id, node_id: NODE_ID, volume_capability: cap('rbd'), secrets: s }));
        await expect(`ValidateVolumeCapabilities ${id}`, ['NOT_FOUND'], c.controller.ValidateVolumeCapabilities({ volume_id: id, volume_capabilities: [cap('rbd')], secrets: s }));
        await expect(`CreateSnapshot of ${id}`, ['NOT_FOUND'], c.controller.CreateSnapshot({ source_volume_id: id, name: `case1-${hex()}`, secrets: s }));
        await expect(`CreateVolume from ${id}`, ['NOT_FOUND', 'INVALID_ARGUMENT'], c.controller.CreateVolume({ name: `case1-${hex()}`, volume_capabilities: [cap('rbd')], parameters: PARAMS.rbd, secrets: s, volume_content_source: { volume: { volume_id: id } } }));
        await expect(`NodeStageVolume ${id}`, ['NOT_FOUND'], c.node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap('rbd'), secrets: s, volume_context: { fsType: 'ext4' } }));
        await expect(`ControllerUnpublishVolume ${id}`, ['OK', 'NOT_FOUND'], c.controller.ControllerUnpublishVolume({ volume_id: id, node_id: NODE_ID, secrets: s }));
        await expect(`DeleteVolume ${id}`, ['OK'], c.controller.DeleteVolume({ volume_id: id, secrets: s }));
      }
      for (const id of snapshotIds) {
        await expect(`GetSnapshot ${id}`, ['NOT_FOUND'], c.controller.GetSnapshot({ snapshot_id: id, secrets: s }));
        await expect(`CreateVolume from snapshot ${id}`, ['NOT_FOUND', 'INVALID_ARGUMENT'], c.controller.CreateVolume({ name: `case1-${hex()}`, volume_capabilities: [cap('rbd')], parameters: PARAMS.rbd, secrets: s, volume_content_source: { snapshot: { snapshot_id: id } } }));
        await expect(`DeleteSnapshot ${id}`, ['OK'], c.controller.DeleteSnapshot({ snapshot_id: id, secrets: s }));
        const listed = await c.controller.ListSnapshots({ snapshot_id: id, secrets: s }).catch((e: unknown) => codeOf(e));
        if (typeof listed === 'string' || listed!.entries!.length) got.push(`ListSnapshots ${id}: ${JSON.stringify(listed)}`);
      }
      const badParams: Array<Record<string, string>> = [
        { pool: opt(6) },
        { pool: '-p' },
        { pool: '--pool=rbd' },
        { dataPool: opt(7) },
        { imageFeatures: `layering,${opt(8)}` },
        { mounter: opt(9) },
        { fsType: '--type=ext4' },
        { clusterID: opt(10) },
      ];
      for (const p of badParams) {
        await expect(`CreateVolume with ${JSON.stringify(p)}`, ['INVALID_ARGUMENT'], c.controller.CreateVolume({ name: `case1-${hex()}`, volume_capabilities: [cap('rbd')], parameters: { ...PARAMS.rbd, ...p }, secrets: s }));
        await expect(`GetCapacity with ${JSON.stringify(p)}`, ['INVALID_ARGUMENT'], c.controller.GetCapacity({ volume_capabilities: [cap('rbd')], parameters: { ...PARAMS.rbd, ...p } }));
      }
      assert.deepEqual(got, []);
      assert.deepEqual(readdirSync(dir), [], 'no file appeared at a path an id or parameter chose');
      assert.equal(await lab.rbd(['ls', '-l', '-p', 'rbd', '--format', 'json']), poolBefore, 'the rbd pool holds the same images');
      assert.equal(await lab.rbd(['trash', 'ls', '-p', 'rbd', '--format', 'json']), trashBefore, 'and the same trash');
      assert.ok(await c.controller.ControllerGetVolume({ volume_id: vols.rbd!.volume_id }), 'the real image still answers');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('case 4: a node id with characters outside the BMP in a CephFS ControllerPublish/Unpublish is INVALID_ARGUMENT and ceph-mgr stays up', async () => {
    const v = vols.cephfs!;
    const pid = mgrPid(lab);
    assert.ok(pid, 'the lab has a ceph-mgr');
    const got: string[] = [];
    for (const node of ['\u{1F600}', `node-\u{10FFFF}`, `\u{E0001}node`, `node-a\u{1D11E}`, '\u{20000}']) {
      const pub = await code(c.controller.ControllerPublishVolume({ volume_id: v.volume_id, node_id: node, volume_capability: cap('cephfs'), secrets: secrets.cephfs, volume_context: v.volume_context }));
      const unpub = await code(c.controller.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: node, secrets: secrets.cephfs }));
      if (pub !== 'INVALID_ARGUMENT' || unpub !== 'INVALID_ARGUMENT') got.push(`${JSON.stringify(node)}: publish ${pub}, unpublish ${unpub}`);
    }
    assert.deepEqual(got, []);
    // A mgr crash shows a moment later: give it one.
    await sleep(2000);
    assert.equal(mgrPid(lab), pid, 'ceph-mgr kept its pid');
    assert.match(await lab.ceph(['-s'], 20_000), /mgr: x\(active/, 'ceph -s answers with the mgr active');
    const subvolume = v.volume_id!.split(':').pop()!;
    const info = await lab.cephAllowFail(['fs', 'subvolume', 'info', 'cephfs', subvolume, '--group_name', 'csi']);
    assert.equal(info.exitCode, 0, info.stderr);
    const status = (await c.controller.ControllerGetVolume({ volume_id: v.volume_id }))!.status!;
    assert.deepEqual(status.published_node_ids, []);
  });

  it('parameters naming a pool, data pool or file system the cluster lacks, or a reserved bucket name, are INVALID_ARGUMENT and make nothing', async () => {
    const imagesBefore = await lab.rbd(['ls', '-l', '-p', 'rbd', '--format', 'json']);
    const subvolumesBefore = await lab.ceph(['fs', 'subvolume', 'ls', 'cephfs', '--group_name', 'csi', '--format', 'json']);
    const s3 = labS3Client(lab);
    const buckets = async () => ((await s3.send(new ListBucketsCommand({}))).Buckets ?? []).map((b) => b.Name).sort();
    try {
      const bucketsBefore = await buckets();
      const cases: Array<[Backend, Record<string, string>]> = [
        ['rbd', { pool: 'UPPER' }],
        ['rbd', { dataPool: 'nosuchpool' }],
        ['rbd', { pool: 'nosuchpool', radosNamespace: 'tenant-x' }],
        ['cephfs', { fsName: 'nosuchfs' }],
        ['cephfs', { pool: 'nosuchpool' }],
        ['cephfs', { pool: 'rbd' }],
        ['s3', { bucket: `csi-vol-${'0'.repeat(31)}` }],
        ['s3', { bucket: `csi-snap-${hex()}` }],
      ];
      const got: string[] = [];
      for (const [b, p] of cases) {
        const params = { ...PARAMS[b], ...p };
        const made = await code(c.controller.CreateVolume({ name: `params-${hex()}`, capacity_range: { required_bytes: 64 << 20 }, volume_capabilities: [cap(b)], parameters: params, secrets: secrets[b] }));
        const restored = await code(c.controller.CreateVolume({ name: `params-${hex()}`, volume_capabilities: [cap(b)], parameters: params, secrets: secrets[b], volume_content_source: { volume: { volume_id: vols[b]!.volume_id } } }));
        const room = await code(c.controller.GetCapacity({ volume_capabilities: [cap(b)], parameters: params }));
        for (const [what, got1] of [['CreateVolume', made], ['clone', restored], ['GetCapacity', room]] as const) {
          // A clone into another pool or file system is refused as such before any pool is looked at.
          if (got1 !== 'INVALID_ARGUMENT') got.push(`${b} ${what} with ${JSON.stringify(p)}: ${got1}`);
        }
      }
      assert.deepEqual(got, []);
      assert.equal(await lab.rbd(['ls', '-l', '-p', 'rbd', '--format', 'json']), imagesBefore, 'no image was made');
      assert.equal(await lab.ceph(['fs', 'subvolume', 'ls', 'cephfs', '--group_name', 'csi', '--format', 'json']), subvolumesBefore, 'no subvolume was made');
      assert.deepEqual(await buckets(), bucketsBefore, 'no bucket was made');
    } finally {
      s3.destroy();
    }
  });

  it('case 6: a focused sample of the fuzzer at one CephFS volume leaves its metadata, data and delete intact', async () => {
    let sentinels: Sentinels | undefined;
    let p: Premade | undefined;
    try {
      sentinels = makeSentinels(drv.dir);
      mkdirSync(path.join(drv.dir, 'fuzz'), { recursive: true });
      p = await premade(c, drv, NODE_ID, 'cephfs', secrets.cephfs, 'case6');
      const subvolume = p.id.split(':').pop()!;
      // Each node a volume is published to has a Ceph user of its own (what fencing evicts and removes).
      const user = `client.${nodeUser(subvolume, NODE_ID)}`;
      assert.equal((await lab.cephAllowFail(['auth', 'get', user])).exitCode, 0, `${user} exists while the volume is published`);
      const ctx = { nodeId: NODE_ID, sandbox: drv.dir, sentinels, volumes: { cephfs: p }, secrets, params: PARAMS, secretMarker: `CASE6SECRET${hex()}` };
      const r = await runFuzz(drv.socket, hostileRequests(6, ctx, 1500, { backends: ['cephfs'], raw: false }), { concurrency: 16, deadlineMs: 30_000, secretMarker: ctx.secretMarker, ctx });
      const info = await lab.cephAllowFail(['fs', 'subvolume', 'info', 'cephfs', subvolume, '--group_name', 'csi']);
      assert.equal(info.exitCode, 0, `ceph fs subvolume info after the fuzzing: ${info.stderr}`);
      assert.deepEqual(checkFiles(p), [], 'data intact');
      const status = (await c.controller.ControllerGetVolume({ volume_id: p.id }))!.status!;
      assert.deepEqual(status.published_node_ids, [NODE_ID]);
      // What the sample itself made goes first (its extra publishes hold the staged mount, as a pod's would).
      assert.deepEqual(await undoMade(c, r, secrets), []);
      await detachPremade(c, NODE_ID, p, secrets.cephfs);
      await deleteListed(c, new Set([p.id, p.snapshotId, ...BACKENDS.map((b) => vols[b]!.volume_id!)]), secrets);
      await c.controller.DeleteSnapshot({ snapshot_id: p.snapshotId, secrets: secrets.cephfs });
      await c.controller.DeleteVolume({ volume_id: p.id, secrets: secrets.cephfs });
      p = undefined;
      assert.notEqual((await lab.cephAllowFail(['fs', 'subvolume', 'info', 'cephfs', subvolume, '--group_name', 'csi'])).exitCode, 0, 'the subvolume is gone');
      assert.notEqual((await lab.cephAllowFail(['auth', 'get', user])).exitCode, 0, `${user} is gone`);
      case6 = r;
    } finally {
      if (p) await detachPremade(c, NODE_ID, p, secrets.cephfs).catch(() => {});
      await removeSentinels(sentinels);
    }
  });

  it('case 6: the focused sample is answered with the codes the CSI spec gives', () => {
    assert.ok(case6, 'the sample ran');
    assert.equal(case6.failures.length, 0, `${case6.failures.length} answers of ${case6.sent} break the rules (seed 6):\n${failureReport(case6.failures)}`);
  });

  it('case 7: node ids with a newline, ":" or "=" are INVALID_ARGUMENT in ControllerPublish, and the volume stays readable and deletable', async () => {
    const got: string[] = [];
    for (const b of BACKENDS) {
      const v = vols[b]!;
      for (const node of ['node\nx', 'node-a\n', '\nnode-a', 'node:a', 'node=a', 'a:b=c', 'node-a:', '=']) {
        const pub = await code(c.controller.ControllerPublishVolume({ volume_id: v.volume_id, node_id: node, volume_capability: cap(b), secrets: secrets[b], volume_context: v.volume_context }));
        if (pub !== 'INVALID_ARGUMENT') got.push(`${b} publish to ${JSON.stringify(node)}: ${pub}`);
        const unpub = await code(c.controller.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: node, secrets: secrets[b] }));
        if (unpub !== 'INVALID_ARGUMENT' && unpub !== 'OK') got.push(`${b} unpublish from ${JSON.stringify(node)}: ${unpub}`);
      }
      const read = await c.controller.ControllerGetVolume({ volume_id: v.volume_id }).catch((e: unknown) => `${codeOf(e)} ${(e as Error).message}`);
      if (typeof read === 'string') got.push(`${b} ControllerGetVolume: ${read}`);
      else if (read!.status!.published_node_ids!.length) got.push(`${b} published to ${JSON.stringify(read!.status!.published_node_ids)}`);
      // Its records still work: a real publish and unpublish, then a delete.
      const real = await code(c.controller.ControllerPublishVolume({ volume_id: v.volume_id, node_id: NODE_ID, volume_capability: cap(b), secrets: secrets[b], volume_context: v.volume_context }));
      const unreal = await code(c.controller.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: NODE_ID, secrets: secrets[b] }));
      const del = await code(c.controller.DeleteVolume({ volume_id: v.volume_id, secrets: secrets[b] }));
      if (real !== 'OK' || unreal !== 'OK' || del !== 'OK') got.push(`${b}: publish ${real}, unpublish ${unreal}, delete ${del}`);
    }
    assert.deepEqual(got, []);
    // Gone on the Ceph and S3 side too.
    const image = vols.rbd!.volume_id!.split(':').pop()!;
    assert.notEqual((await lab.cephAllowFail(['osd', 'pool', 'ls'])).exitCode, 1);
    assert.ok(!(await lab.rbd(['ls', '-p', 'rbd'])).includes(image), 'the rbd image is gone');
    const subvolume = vols.cephfs!.volume_id!.split(':').pop()!;
    assert.notEqual((await lab.cephAllowFail(['fs', 'subvolume', 'info', 'cephfs', subvolume, '--group_name', 'csi'])).exitCode, 0, 'the subvolume is gone');
    const s3 = labS3Client(lab);
    try {
      await assert.rejects(s3.send(new HeadBucketCommand({ Bucket: vols.s3!.volume_context!.bucket! })), 'the bucket is gone');
    } finally {
      s3.destroy();
    }
  });
});
