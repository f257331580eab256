import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import { CephLab, LAB_S3 } from '../lab/ceph-lab.js';
import { connect, startDriver, type CsiClients, type DriverProcess } from '../helpers/driver.js';
import { leftovers } from '../helpers/leftovers.js';
import { getObject, labS3Client } from '../helpers/s3.js';
import type { Volume } from '../../src/csi/gen/csi/v1/Volume.js';
import { attach, blockCap, detach, MiB, mountCap, type Attached } from '../helpers/volumes.js';
import { readMountInfo } from '../../src/mount/mountinfo.js';

/**
 * Mounts that heal: the node plugin and every FUSE daemon it started are
 * killed (what a restart of its container does), and a new plugin on the
 * same state directory remounts each volume and rebinds its pod targets,
 * without kubelet calling anything. Also: a FUSE daemon that dies under a
 * running plugin is remounted by the next NodeStage/NodePublish.
 */

const RWX = mountCap('', 'MULTI_NODE_MULTI_WRITER');
const s3Secrets = { accessKeyID: LAB_S3.accessKeyID, secretAccessKey: LAB_S3.secretAccessKey };

const VOLUMES: Array<{ name: string; params: Record<string, string>; secrets: Record<string, string> }> = [
  { name: 'heal-cephfs', params: { backend: 'cephfs', clusterID: 'lab', fsName: 'cephfs', mounter: 'fuse' }, secrets: {} },
  { name: 'heal-s3fs', params: { backend: 's3', clusterID: 'lab', mounter: 's3fs' }, secrets: s3Secrets },
  { name: 'heal-rclone', params: { backend: 's3', clusterID: 'lab', mounter: 'rclone', bucket: 'heal-shared' }, secrets: s3Secrets },
];

/** FUSE daemons serving mounts under `dir` (of one volume when `under` is given). */
function fuseDaemons(dir: string, under = dir): number[] {
  const pids: number[] = [];
  for (const ent of readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    try {
      const argv = readFileSync(`/proc/${ent}/cmdline`, 'utf8').split('\0');
      if (/(ceph-fuse|s3fs|rclone)$/.test(argv[0] ?? '') && argv.some((a) => a.startsWith(dir) && a.startsWith(under))) pids.push(Number(ent));
    } catch {
      /* exited */
    }
  }
  return pids;
}

/** Kills them, as the container runtime would on a restart. */
function killFuseDaemons(dir: string, under = dir): number {
  const pids = fuseDaemons(dir, under);
  for (const pid of pids) process.kill(pid, 'SIGKILL');
  return pids.length;
}

const errno = (p: string): string => {
  try {
    statSync(p);
    return 'ok';
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? 'error';
  }
};

/**
 * A pod's container with the volume at /data under mountPropagation HostToContainer: a mount
 * namespace of its own with a private root, the target bound in and made a slave, as the
 * container runtime does. It sees mounts made on the target afterwards, not a target unmounted
 * and mounted anew.
 */
function containerView(target: string, root: string): ChildProcess {
  const data = path.join(root, 'data');
  const script = `set -e; mkdir -p ${root}; mount -t tmpfs none ${root}; mount --make-private ${root}; mkdir ${data}; mount --rbind ${target} ${data}; mount --make-rslave ${data}; echo ready; exec sleep 600`;
  return spawn('unshare', ['-m', '--propagation', 'unchanged', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'inherit'] });
}

/** Runs a shell line inside the container's mount namespace: its exit code and output. */
function inContainer(c: ChildProcess, line: string): { code: number | null; out: string } {
  const r = spawnSync('nsenter', ['-t', String(c.pid), '-m', 'sh', '-c', line], { timeout: 20_000, encoding: 'utf8' });
  return { code: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

async function until(what: string, ok: () => boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

describe('mounts that heal', { timeout: 600_000 }, () => {
  let lab: CephLab;
  let ctrl: DriverProcess;
  let node: DriverProcess;
  let cc: CsiClients;
  let cn: CsiClients;
  let s3: S3Client;
  const vols: Volume[] = [];
  const attached: Attached[] = [];
  // kubelet's directory is a shared mount (the node plugin's Bidirectional mount of it):
  // targets made below it propagate into pods' containers.
  let kubeletDir = '';

  before(async () => {
    lab = await CephLab.start({ components: ['cephfs', 's3'] });
    const config = lab.writeDriverConfig();
    ctrl = await startDriver({ config, mode: 'controller' });
    // No periodic pass: healing here must come from the start-up pass or from kubelet's calls.
    node = await startDriver({ config, mode: 'node', nodeId: 'node-h', args: ['--heal-interval', '0'] });
    cc = connect(ctrl.socket);
    cn = { ...connect(node.socket), controller: cc.controller };
    s3 = labS3Client(lab);
    kubeletDir = path.join(node.dir, 'kubelet');
    mkdirSync(kubeletDir);
    spawnSync('mount', ['--bind', kubeletDir, kubeletDir]);
    assert.equal(spawnSync('mount', ['--make-rshared', kubeletDir]).status, 0);
    for (const v of VOLUMES) {
      const vol = (await cc.controller.CreateVolume({ name: v.name, capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [RWX], parameters: v.params, secrets: v.secrets }))!.volume!;
      vols.push(vol);
      attached.push(await attach(cn, vol, 'node-h', path.join(kubeletDir, v.name), RWX, v.secrets));
    }
  });

  after(async () => {
    if (kubeletDir) spawnSync('umount', ['-l', kubeletDir]);
    s3?.destroy();
    cc?.close();
    cn?.close();
    await node?.stop();
    await ctrl?.stop();
    await lab?.stop();
  });

  it('a restarted node plugin remounts every FUSE volume, and running pods with HostToContainer see it', async (ctx) => {
    VOLUMES.forEach((v, i) => writeFileSync(path.join(attached[i]!.target, 'before.txt'), `written before the restart to ${v.name}`));
    const pods = VOLUMES.map((v) => containerView(attached[VOLUMES.indexOf(v)]!.target, path.join(node.dir, `pod-${v.name}`)));
    try {
      await Promise.all(pods.map((c) => new Promise<void>((res, rej) => (c.stdout!.once('data', () => res()), c.once('exit', (code) => rej(new Error(`container view exited ${code}`)))))));
      for (const [i, c] of pods.entries()) assert.equal(inContainer(c, `cat ${path.join(node.dir, `pod-${VOLUMES[i]!.name}`, 'data', 'before.txt')}`).out, `written before the restart to ${VOLUMES[i]!.name}`);
      await restartAndHeal(ctx, pods);
    } finally {
      for (const c of pods) c.kill('SIGKILL');
    }
  });

  async function restartAndHeal(ctx: { diagnostic: (m: string) => void }, pods: ChildProcess[]): Promise<void> {
    const records = readdirSync(path.join(node.stateDir, 'staged'));
    assert.equal(records.length, VOLUMES.length, 'one stage record per FUSE volume');
    for (const r of records) assert.equal(statSync(path.join(node.stateDir, 'staged', r)).mode & 0o777, 0o600, 'records hold secrets: owner only');

    // The container restart: plugin and FUSE daemons die together.
    node.child.kill('SIGKILL');
    await until('the plugin to exit', () => node.child.exitCode !== null || node.child.signalCode !== null);
    assert.equal(killFuseDaemons(node.dir), VOLUMES.length);
    await until('the mounts to go dead', () => attached.every((a) => errno(a.target) === 'ENOTCONN'));
    for (const [i, c] of pods.entries()) assert.match(inContainer(c, `ls ${path.join(node.dir, `pod-${VOLUMES[i]!.name}`, 'data')}`).out, /not connected/, 'the container sees the dead mount');

    cn.close();
    const t0 = Date.now();
    node = await startDriver({ config: lab.writeDriverConfig(), mode: 'node', nodeId: 'node-h', dir: node.dir, args: ['--heal-interval', '0'] });
    cn = { ...connect(node.socket), controller: cc.controller };
    await until('every target to answer again', () => attached.every((a) => errno(a.target) === 'ok'));
    const healMs = Date.now() - t0;
    assert.ok(healMs < 60_000, `healed in ${healMs} ms`);

    for (const [i, v] of VOLUMES.entries()) {
      // CephFS: the MDS hands the file to the new client only once the dead one's session times out (60 s by default).
      const t = Date.now();
      assert.equal(readFileSync(path.join(attached[i]!.target, 'before.txt'), 'utf8'), `written before the restart to ${v.name}`);
      ctx.diagnostic(`${v.name}: healed after ${healMs} ms; first read of a file the dead daemon wrote took ${Date.now() - t} ms`);
    }
    // Writes through the healed target reach the store (checked with the SDK for S3).
    writeFileSync(path.join(attached[1]!.target, 'after.txt'), 'after');
    const c1 = vols[1]!.volume_context!;
    assert.equal((await getObject(s3, c1.bucket!, `${c1.prefix}after.txt`)).toString(), 'after');
    for (const [i, v] of vols.entries()) {
      const stats = (await cn.node.NodeGetVolumeStats({ volume_id: v.volume_id!, volume_path: attached[i]!.target }))!;
      assert.equal(stats.volume_condition!.abnormal, false, `${VOLUMES[i]!.name}: ${stats.volume_condition!.message}`);
    }
    const log = readFileSync(node.logFile, 'utf8');
    assert.equal((log.match(/"msg":"volume healed"/g) ?? []).length, VOLUMES.length, 'the start-up pass healed each volume once');
    assert.ok(!log.includes(LAB_S3.secretAccessKey), 'no secret in the log');
    // The pods' containers read what was written before and write again, with no restart.
    for (const [i, c] of pods.entries()) {
      const data = path.join(node.dir, `pod-${VOLUMES[i]!.name}`, 'data');
      const r = inContainer(c, `cat ${data}/before.txt && echo from-the-pod > ${data}/pod.txt && cat ${data}/pod.txt`);
      assert.deepEqual(r, { code: 0, out: `written before the restart to ${VOLUMES[i]!.name}from-the-pod` }, `${VOLUMES[i]!.name}: the running container sees the healed mount`);
      assert.equal(readFileSync(path.join(attached[i]!.target, 'pod.txt'), 'utf8'), 'from-the-pod\n');
    }
  }

  it('a stuck FUSE daemon is left alone and does not hold up healing the others', async () => {
    // s3fs stopped (alive, never answering: a network partition looks the same); ceph-fuse dead.
    const [stuck] = fuseDaemons(node.dir, path.join(kubeletDir, 'heal-s3fs'));
    assert.ok(stuck, 'the s3fs daemon');
    assert.equal(killFuseDaemons(node.dir, path.join(kubeletDir, 'heal-cephfs')), 1);
    process.kill(stuck, 'SIGSTOP');
    try {
      // Never stat the stuck mount from here: this process would hang on it.
      await until('the CephFS mount to go dead', () => errno(attached[0]!.target) === 'ENOTCONN');
      node.child.kill('SIGKILL');
      await until('the plugin to exit', () => node.child.exitCode !== null || node.child.signalCode !== null);
      cn.close();
      node = await startDriver({ config: lab.writeDriverConfig(), mode: 'node', nodeId: 'node-h', dir: node.dir, args: ['--heal-interval', '0'] });
      cn = { ...connect(node.socket), controller: cc.controller };
      await until('the CephFS target to answer again', () => errno(attached[0]!.target) === 'ok');
      await until('the pass to give up on the stuck mount', () => readFileSync(node.logFile, 'utf8').includes('staging mount does not answer'));
      assert.equal(errno(attached[2]!.target), 'ok', 'the rclone volume was never touched');
    } finally {
      process.kill(stuck, 'SIGCONT');
    }
    assert.equal(errno(attached[1]!.target), 'ok', 'the s3fs mount answers once its daemon runs again');
    assert.equal(readFileSync(path.join(attached[1]!.target, 'before.txt'), 'utf8'), 'written before the restart to heal-s3fs');
  });

  it('a FUSE daemon that dies under a running plugin is remounted by the next NodeStage and NodePublish', async () => {
    assert.equal(killFuseDaemons(node.dir), VOLUMES.length);
    await until('the mounts to go dead', () => attached.every((a) => errno(a.target) === 'ENOTCONN'));
    for (const [i, v] of vols.entries()) {
      const stats = (await cn.node.NodeGetVolumeStats({ volume_id: v.volume_id!, volume_path: attached[i]!.target }))!;
      assert.equal(stats.volume_condition!.abnormal, true, 'a dead mount is reported, not an error');
      assert.match(stats.volume_condition!.message!, /ENOTCONN/);
    }
    // Kubelet's retry after a failed pod start: the same NodeStage and NodePublish again.
    for (const [i, v] of vols.entries()) {
      const cap = RWX;
      const pub = await cc.controller.ControllerPublishVolume({ volume_id: v.volume_id!, node_id: 'node-h', volume_capability: cap, secrets: VOLUMES[i]!.secrets, volume_context: v.volume_context });
      await cn.node.NodeStageVolume({ volume_id: v.volume_id!, staging_target_path: attached[i]!.staging, volume_capability: cap, secrets: VOLUMES[i]!.secrets, volume_context: v.volume_context, publish_context: pub!.publish_context });
      assert.equal(errno(attached[i]!.staging), 'ok', 'the staging mount answers');
      await cn.node.NodePublishVolume({ volume_id: v.volume_id!, staging_target_path: attached[i]!.staging, target_path: attached[i]!.target, volume_capability: cap, volume_context: v.volume_context });
      assert.equal(readFileSync(path.join(attached[i]!.target, 'before.txt'), 'utf8'), `written before the restart to ${VOLUMES[i]!.name}`);
    }
    const mounts = await readMountInfo();
    for (const a of attached) assert.equal(mounts.filter((m) => m.mountPoint === a.staging).length, 1, 'no dead staging mount stacked under the new one');
  });

  it('unstaging a healed volume leaves nothing behind, records included', async () => {
    for (const [i, v] of vols.entries()) {
      await detach(cn, v.volume_id!, 'node-h', attached[i]!, VOLUMES[i]!.secrets);
      await cc.controller.DeleteVolume({ volume_id: v.volume_id!, secrets: VOLUMES[i]!.secrets });
    }
    assert.equal(spawnSync('umount', [kubeletDir]).status, 0, 'nothing mounted below the kubelet directory');
    kubeletDir = '';
    assert.deepEqual(await leftovers(node.dir), []);
    const dir = path.join(node.stateDir, 'staged');
    assert.deepEqual(existsSync(dir) ? readdirSync(dir) : [], []);
  });
});

/** The loop devices bound now, by name, with the file each reads. */
function loopDevices(): Map<string, string> {
  const out = new Map<string, string>();
  for (const loop of readdirSync('/sys/block').filter((d) => d.startsWith('loop'))) {
    try {
      out.set(loop, readFileSync(`/sys/block/${loop}/loop/backing_file`, 'utf8').trim());
    } catch {
      /* not bound */
    }
  }
  return out;
}

/** rbd-fuse daemons serving images under `dir`. */
function rbdFuseDaemons(dir: string): number[] {
  const pids: number[] = [];
  for (const ent of readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    try {
      const argv = readFileSync(`/proc/${ent}/cmdline`, 'utf8').split('\0');
      if (/rbd-fuse$/.test(argv[0] ?? '') && argv.some((a) => a.startsWith(dir))) pids.push(Number(ent));
    } catch {
      /* exited */
    }
  }
  return pids;
}

/**
 * RBD through rbd-fuse: the staged file system sits on a loop device over the
 * rbd-fuse file, a kernel mount that outlives the plugin but fails every I/O
 * once rbd-fuse is gone. The restarted plugin stages it again on top of the
 * dead stack and binds it over the pods' targets; unstaging takes down the
 * whole stack, both loop devices included.
 */
describe('rbd-fuse volumes that heal', { timeout: 600_000 }, () => {
  let lab: CephLab;
  let ctrl: DriverProcess;
  let node: DriverProcess;
  let cc: CsiClients;
  let cn: CsiClients;
  let secrets: Record<string, string> = {};
  let kubeletDir = '';
  const RBD = [
    { name: 'heal-rbd-xfs', fsType: 'xfs', bytes: 320 * MiB },
    { name: 'heal-rbd-ext4', fsType: 'ext4', bytes: 64 * MiB },
  ];
  const vols: Volume[] = [];
  const attached: Attached[] = [];
  const cap = (fsType: string) => mountCap(fsType, 'SINGLE_NODE_WRITER');
  // And a raw block volume, whose staged device node is bound where the file system would be mounted.
  let blockVol: Volume;
  let blockAt: Attached;
  const HEALS = RBD.length + 1;
  /** 4 KiB at block `n` of a device, past every cache. */
  const readBlock = (dev: string, n: number): string => {
    const r = spawnSync('dd', [`if=${dev}`, 'bs=4096', 'count=1', `skip=${n}`, 'iflag=direct', 'status=none'], { encoding: 'latin1' });
    return r.status === 0 ? r.stdout.replace(/\0+$/, '') : `error ${r.status}: ${r.stderr}`;
  };
  const writeBlock = (dev: string, n: number, text: string): number | null =>
    spawnSync('dd', [`of=${dev}`, 'bs=4096', 'count=1', `seek=${n}`, 'oflag=direct', 'conv=fsync,notrunc', 'status=none'], { input: Buffer.concat([Buffer.from(text), Buffer.alloc(4096 - text.length)]) }).status;
  let second = '';
  /** The loop devices the dead file systems sat on, which unstaging must release. */
  const deadLoops: string[] = [];

  before(async () => {
    lab = await CephLab.start({ components: ['rbd'] });
    const config = lab.writeDriverConfig();
    ctrl = await startDriver({ config, mode: 'controller' });
    node = await startDriver({ config, mode: 'node', nodeId: 'node-r', args: ['--heal-interval', '0'] });
    cc = connect(ctrl.socket);
    cn = { ...connect(node.socket), controller: cc.controller };
    secrets = { userID: 'admin', userKey: lab.adminKey };
    kubeletDir = path.join(node.dir, 'kubelet');
    second = path.join(kubeletDir, 'heal-rbd-xfs', 'target2');
    mkdirSync(kubeletDir);
    spawnSync('mount', ['--bind', kubeletDir, kubeletDir]);
    assert.equal(spawnSync('mount', ['--make-rshared', kubeletDir]).status, 0);
    for (const v of RBD) {
      const params = { backend: 'rbd', clusterID: 'lab', pool: 'rbd', mounter: 'rbd-fuse', fsType: v.fsType };
      const vol = (await cc.controller.CreateVolume({ name: v.name, capacity_range: { required_bytes: v.bytes }, volume_capabilities: [cap(v.fsType)], parameters: params, secrets }))!.volume!;
      vols.push(vol);
      attached.push(await attach(cn, vol, 'node-r', path.join(kubeletDir, v.name), cap(v.fsType), secrets));
    }
    blockVol = (await cc.controller.CreateVolume({ name: 'heal-rbd-block', capacity_range: { required_bytes: 16 * MiB }, volume_capabilities: [blockCap()], parameters: { backend: 'rbd', clusterID: 'lab', pool: 'rbd', mounter: 'rbd-fuse' }, secrets }))!.volume!;
    blockAt = await attach(cn, blockVol, 'node-r', path.join(kubeletDir, 'heal-rbd-block'), blockCap(), secrets);
    // A second pod of the xfs volume on this node.
    mkdirSync(second, { recursive: true });
    await cn.node.NodePublishVolume({ volume_id: vols[0]!.volume_id!, staging_target_path: attached[0]!.staging, target_path: second, volume_capability: cap('xfs'), volume_context: vols[0]!.volume_context });
  });

  after(async () => {
    if (kubeletDir) spawnSync('umount', ['-l', kubeletDir]);
    cc?.close();
    cn?.close();
    await node?.stop();
    await ctrl?.stop();
    await lab?.stop();
  });

  /** This node's client record on the image and the image's watchers. */
  async function clients(i: number): Promise<{ recorded: string[]; watchers: string[] }> {
    const name = vols[i]!.volume_context!.imageName ?? '';
    const meta = JSON.parse(await lab.rbd(['image-meta', 'list', `rbd/${name}`, '--format', 'json'])) as Record<string, string>;
    const rec = Object.entries(meta).find(([k]) => k.startsWith('strata.client.'))?.[1];
    const status = JSON.parse(await lab.rbd(['status', `rbd/${name}`, '--format', 'json'])) as { watchers: Array<{ address: string }> };
    return { recorded: rec ? (JSON.parse(rec) as { addrs: string[] }).addrs : [], watchers: status.watchers.map((w) => w.address) };
  }

  it('a restarted node plugin stages rbd-fuse volumes again on top of the dead ones, and running pods read and write them', async (ctx) => {
    RBD.forEach((v, i) => writeFileSync(path.join(attached[i]!.target, 'before.txt'), `written before the restart to ${v.name}`));
    spawnSync('sync', ['-f', attached[0]!.target]);
    spawnSync('sync', ['-f', attached[1]!.target]);
    const before = await Promise.all(RBD.map((_, i) => clients(i)));
    for (const c of before) assert.equal(c.recorded.length, 1, 'the stage recorded its client');
    assert.equal(writeBlock(blockAt.target, 0, 'block written before the restart'), 0);
    const mounts = await readMountInfo();
    deadLoops.push(`/dev${mounts.filter((m) => m.mountPoint === path.join(blockAt.staging, 'dev')).at(-1)!.root}`);
    for (const a of attached) deadLoops.push(mounts.filter((m) => m.mountPoint === path.resolve(a.staging)).at(-1)!.source);
    assert.ok(deadLoops.every((d) => d.startsWith('/dev/loop')), deadLoops.join(' '));

    // The xfs volume's second pod is the last one.
    const pods = [...RBD.map((v, i) => containerView(attached[i]!.target, path.join(node.dir, `pod-${v.name}`))), containerView(second, path.join(node.dir, 'pod-second'))];
    const data = (i: number) => path.join(node.dir, i < RBD.length ? `pod-${RBD[i]!.name}` : 'pod-second', 'data');
    const vol = (i: number) => RBD[i % RBD.length]!;
    try {
      await Promise.all(pods.map((c) => new Promise<void>((res, rej) => (c.stdout!.once('data', () => res()), c.once('exit', (code) => rej(new Error(`container view exited ${code}`)))))));
      for (const [i, c] of pods.entries()) assert.equal(inContainer(c, `cat ${data(i)}/before.txt`).out, `written before the restart to ${vol(i).name}`);

      // The container restart: the plugin and its rbd-fuse daemons die together.
      node.child.kill('SIGKILL');
      await until('the plugin to exit', () => node.child.exitCode !== null || node.child.signalCode !== null);
      const daemons = rbdFuseDaemons(node.dir);
      assert.equal(daemons.length, HEALS);
      for (const pid of daemons) process.kill(pid, 'SIGKILL');
      for (const [i, c] of pods.entries()) {
        const r = inContainer(c, `echo lost > ${data(i)}/lost.txt && sync -f ${data(i)}/lost.txt && ls ${data(i)}`);
        assert.notEqual(r.code, 0, `${vol(i).name}: the container's writes fail while rbd-fuse is gone (${r.out})`);
      }
      // Writes: reads may still come from the page cache of the dead rbd-fuse file.
      assert.notEqual(writeBlock(blockAt.target, 2, 'lost'), 0, 'the raw block device fails writes while rbd-fuse is gone');

      cn.close();
      const t0 = Date.now();
      node = await startDriver({ config: lab.writeDriverConfig(), mode: 'node', nodeId: 'node-r', dir: node.dir, args: ['--heal-interval', '0'] });
      cn = { ...connect(node.socket), controller: cc.controller };
      // Not a read: a dead file system still answers from its page cache.
      const healed = () => (readFileSync(node.logFile, 'utf8').match(/"msg":"volume healed"/g) ?? []).length;
      await until('every volume healed', () => healed() >= HEALS);
      ctx.diagnostic(`rbd-fuse volumes healed in ${Date.now() - t0} ms after the plugin started`);
      const log = readFileSync(node.logFile, 'utf8');
      assert.equal(healed(), HEALS, 'the start-up pass healed each volume once');
      assert.equal(readBlock(blockAt.target, 0), 'block written before the restart', 'the pod\'s raw block device reads again');
      assert.equal(writeBlock(blockAt.target, 1, 'block written after the heal'), 0);
      assert.ok(!log.includes(lab.adminKey), 'no secret in the log');

      for (const [i, c] of pods.entries()) {
        const t = Date.now();
        const file = i < RBD.length ? 'pod.txt' : 'second.txt';
        const r = inContainer(c, `cat ${data(i)}/before.txt && echo from-the-pod > ${data(i)}/${file} && sync -f ${data(i)}/${file} && cat ${data(i)}/${file}`);
        assert.deepEqual(r, { code: 0, out: `written before the restart to ${vol(i).name}from-the-pod` }, `${vol(i).name}: the running container reads and writes the healed volume`);
        ctx.diagnostic(`${vol(i).name}: first write and fsync from the pod took ${Date.now() - t} ms`);
      }
      // The record names the new client (a fence must take it), and the dead one holds nothing.
      for (const [i, b] of before.entries()) {
        const now = await clients(i);
        assert.equal(now.watchers.length, 1, `${RBD[i]!.name}: one watcher, the new rbd-fuse`);
        assert.deepEqual(now.recorded, now.watchers, `${RBD[i]!.name}: the record names the new client`);
        assert.notDeepEqual(now.recorded, b.recorded);
      }
      for (const [i, v] of vols.entries()) {
        const stats = (await cn.node.NodeGetVolumeStats({ volume_id: v.volume_id!, volume_path: attached[i]!.target }))!;
        assert.equal(stats.volume_condition!.abnormal, false, `${RBD[i]!.name}: ${stats.volume_condition!.message}`);
      }
      // Kubelet's publish again (a retry): a healthy healed stack is left as it is.
      for (const [i, v] of vols.entries()) {
        await cn.node.NodePublishVolume({ volume_id: v.volume_id!, staging_target_path: attached[i]!.staging, target_path: attached[i]!.target, volume_capability: cap(RBD[i]!.fsType), volume_context: v.volume_context });
      }
      assert.equal((readFileSync(node.logFile, 'utf8').match(/staging it again on top/g) ?? []).length, HEALS);
      const layers = await readMountInfo();
      for (const a of [...attached, { staging: attached[0]!.staging, target: second }]) {
        assert.equal(layers.filter((m) => m.mountPoint === path.resolve(a.staging)).length, 2, 'the new file system over the dead one at the staging path');
        assert.equal(layers.filter((m) => m.mountPoint === path.resolve(a.target)).length, 2, 'the new bind over the dead one at the target');
      }
    } finally {
      for (const c of pods) c.kill('SIGKILL');
    }
  });

  it('unpublishing one pod of a healed volume takes the healed layer from the others too, and the next heal stages it again', async () => {
    // Kubelet's directory is a shared mount: the staging path and every target are peers, and unmounting
    // the layer stacked on one of them unmounts it from all (the kernel propagates it). Seen here; a heal
    // pass (or kubelet's next call) finds the dead stack again and stages the volume once more.
    await cn.node.NodeUnpublishVolume({ volume_id: vols[0]!.volume_id!, target_path: second });
    assert.equal(errno(path.join(attached[0]!.target, 'second.txt')), 'EIO', 'the other pod lost the healed layer');
    await cn.node.NodePublishVolume({ volume_id: vols[0]!.volume_id!, staging_target_path: attached[0]!.staging, target_path: attached[0]!.target, volume_capability: cap('xfs'), volume_context: vols[0]!.volume_context });
    assert.equal(readFileSync(path.join(attached[0]!.target, 'second.txt'), 'utf8'), 'from-the-pod\n');
    writeFileSync(path.join(attached[0]!.target, 'after.txt'), 'after');
    assert.equal(readFileSync(path.join(attached[0]!.staging, 'after.txt'), 'utf8'), 'after');
  });

  it('an rbd-fuse that dies under a running plugin is staged again by the next NodeStage', async () => {
    // The ext4 volume's rbd-fuse only: the one its loop device reads through.
    const loop = (await readMountInfo()).filter((m) => m.mountPoint === path.resolve(attached[1]!.staging)).at(-1)!.source;
    const dir = path.dirname(loopDevices().get(path.basename(loop))!);
    assert.ok(dir.startsWith(path.join(node.stateDir, 'rbd-fuse')), dir);
    assert.equal(rbdFuseDaemons(dir).length, 1);
    deadLoops.push(loop);
    for (const pid of rbdFuseDaemons(dir)) process.kill(pid, 'SIGKILL');
    await until('rbd-fuse gone', () => rbdFuseDaemons(dir).length === 0);
    const write = () => spawnSync('sh', ['-c', `echo again > ${attached[1]!.target}/again.txt && sync -f ${attached[1]!.target}/again.txt`]).status;
    assert.notEqual(write(), 0, 'writes fail while rbd-fuse is gone');
    const v = vols[1]!;
    const pub = await cc.controller.ControllerPublishVolume({ volume_id: v.volume_id!, node_id: 'node-r', volume_capability: cap('ext4'), secrets, volume_context: v.volume_context });
    await cn.node.NodeStageVolume({ volume_id: v.volume_id!, staging_target_path: attached[1]!.staging, volume_capability: cap('ext4'), secrets, volume_context: v.volume_context, publish_context: pub!.publish_context });
    assert.equal(write(), 0, 'the target writes again');
    assert.equal(readFileSync(path.join(attached[1]!.target, 'pod.txt'), 'utf8'), 'from-the-pod\n');
    assert.equal((await readMountInfo()).filter((m) => m.mountPoint === path.resolve(attached[1]!.staging)).length, 3, 'a third layer over the two dead ones');
  });

  it('unstaging a healed rbd-fuse volume takes down the whole stack and both loop devices; what the pod wrote is in the image', async () => {
    for (const [i, v] of vols.entries()) await detach(cn, v.volume_id!, 'node-r', attached[i]!, secrets);
    await detach(cn, blockVol.volume_id!, 'node-r', blockAt, secrets);
    const loops = loopDevices();
    for (const d of deadLoops) {
      const f = loops.get(path.basename(d));
      assert.ok(f === undefined || !f.includes('csi-vol'), `${d} is released (${f})`);
    }
    assert.deepEqual([...loopDevices()].filter(([, f]) => f.startsWith(node.dir)), []);
    // Staged afresh elsewhere: the pod's write after the heal is in the image.
    for (const [i, v] of vols.entries()) {
      const a = await attach(cn, v, 'node-r', path.join(node.dir, `again-${RBD[i]!.name}`), cap(RBD[i]!.fsType), secrets);
      assert.equal(readFileSync(path.join(a.target, 'pod.txt'), 'utf8'), 'from-the-pod\n');
      if (i === 0) assert.equal(readFileSync(path.join(a.target, 'after.txt'), 'utf8'), 'after');
      if (i === 1) assert.equal(readFileSync(path.join(a.target, 'again.txt'), 'utf8'), 'again\n');
      assert.equal(readFileSync(path.join(a.target, 'before.txt'), 'utf8'), `written before the restart to ${RBD[i]!.name}`);
      await detach(cn, v.volume_id!, 'node-r', a, secrets);
      await cc.controller.DeleteVolume({ volume_id: v.volume_id!, secrets });
    }
    const b = await attach(cn, blockVol, 'node-r', path.join(node.dir, 'again-block'), blockCap(), secrets);
    assert.equal(readBlock(b.target, 0), 'block written before the restart');
    assert.equal(readBlock(b.target, 1), 'block written after the heal');
    await detach(cn, blockVol.volume_id!, 'node-r', b, secrets);
    await cc.controller.DeleteVolume({ volume_id: blockVol.volume_id!, secrets });
    assert.equal(spawnSync('umount', [kubeletDir]).status, 0, 'nothing mounted below the kubelet directory');
    kubeletDir = '';
    assert.deepEqual(await leftovers(node.dir), []);
    const dir = path.join(node.stateDir, 'staged');
    assert.deepEqual(existsSync(dir) ? readdirSync(dir) : [], []);
  });
});
