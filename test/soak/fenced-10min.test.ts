import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { runAllowFail } from '../../src/util/exec.js';
import type { Volume } from '../../src/csi/gen/csi/v1/Volume.js';
import type { CephLab } from '../lab/ceph-lab.js';
import { leftovers } from '../helpers/leftovers.js';
import { MiB, attach, detach, mountCap, type Attached, type MountMode } from '../helpers/volumes.js';
import { blocklist, cephUserExists, clientRecordOf, fusePids, imageMeta, imageOf, s3KeyValid, watchers, writeWithin } from '../fence/helpers.js';
import { useTwoNodes } from '../fence/two-nodes.js';

/**
 * A node that stays fenced for 10 minutes (FENCE_MINUTES to change it), for
 * rbd, cephfs and s3 at once on one lab: far past the 30 s watch timeout, the
 * MDS session timeouts and the 5-minute windows of Ceph's own clients. Node
 * A stages a single-writer volume of each backend, and a multi-node volume
 * of CephFS and of S3 (rclone, a prefix of a shared bucket) that node B
 * stages too; A writes, then every FUSE daemon of A is frozen (SIGSTOP) as a
 * partitioned node's. Each volume is fenced (ControllerUnpublish for A) and
 * B writes; B writes again every minute while A stays frozen and fenced.
 * Then A thaws: none of its writes is acknowledged (CephFS's hang until A's
 * plugin lets the volume go, then fail), its restarted plugin releases every
 * volume without healing one back, and a fresh mount on B shows exactly A's
 * write from before the failure and B's last one.
 *
 * It runs in the test command beside the Kubernetes tests (test/run-all.sh),
 * so its failover times are printed, not asserted: the short fence tests,
 * which run alone, assert them.
 */

const MINUTES = Number(process.env.FENCE_MINUTES ?? 10);
/** A's second refused write comes this long after the thaw (a minute in the full run). */
const THAW_MS = Math.min(60_000, MINUTES * 6_000);

interface Case {
  /** Also the directory of its mounts. */
  name: string;
  mode: MountMode;
  fsType: string;
  params: Record<string, string>;
  /** Ceph backends get the admin user as their StorageClass's secrets; S3 nodes get their own key in the publish context. */
  ceph: boolean;
  /** Whether A is still cut off: checked every minute, and again after A's plugin restarts. */
  fenced(lab: CephLab, v: Live): Promise<boolean>;
}

interface Live {
  vol: Volume;
  onA: Attached & { context: Record<string, string> };
  onB?: Attached;
  /** rbd: node A's client instances, recorded at its stage. */
  clientsOfA: string[];
}

const RWO: MountMode = 'SINGLE_NODE_WRITER';
const RWX: MountMode = 'MULTI_NODE_MULTI_WRITER';
const CEPHFS = { backend: 'cephfs', clusterID: 'lab', fsName: 'cephfs', mounter: 'fuse' };
const cephfsFenced = async (lab: CephLab, v: Live) => !(await cephUserExists(lab, v.onA.context.userID!));
const s3Fenced = (lab: CephLab, v: Live) => s3KeyValid(lab, v.onA.context).then((valid) => !valid);

const CASES: Case[] = [
  {
    name: 'rbd',
    mode: RWO,
    fsType: 'ext4',
    params: { backend: 'rbd', clusterID: 'lab', pool: 'rbd' },
    ceph: true,
    // Still blocklisted, and the image's only watcher is the client node B recorded.
    fenced: async (lab, v) => {
      const image = imageOf(v.vol.volume_id!);
      const listed = await blocklist(lab);
      const onB = clientRecordOf(await imageMeta(lab, image), 'node-b')?.addrs ?? [];
      return v.clientsOfA.every((c) => listed.has(c)) && JSON.stringify(await watchers(lab, image)) === JSON.stringify([...onB].sort());
    },
  },
  { name: 'cephfs', mode: RWO, fsType: '', params: CEPHFS, ceph: true, fenced: cephfsFenced },
  { name: 'cephfs-shared', mode: RWX, fsType: '', params: CEPHFS, ceph: true, fenced: cephfsFenced },
  { name: 's3', mode: RWO, fsType: '', params: { backend: 's3', clusterID: 'lab' }, ceph: false, fenced: s3Fenced },
  { name: 's3-shared', mode: RWX, fsType: '', params: { backend: 's3', clusterID: 'lab', bucket: 'soak-team', mounter: 'rclone' }, ceph: false, fenced: s3Fenced },
];

/** Whether a process is stopped (state T in /proc/<pid>/stat). */
const stopped = (pid: number): boolean => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).startsWith('T');
};

describe(`a node fenced for ${MINUTES} minutes stays fenced: rbd, cephfs and s3 at once`, { timeout: (MINUTES + 10) * 60_000 }, () => {
  // The nodes hold no key of their own: Ceph volumes get the StorageClass's secret, S3 volumes a key per node.
  const n = useTwoNodes(['rbd', 'cephfs', 's3'], { defaultIdentity: false, rgwAdmin: false });

  it('A, frozen and fenced, writes nothing after thawing; B writes every minute; A restarted lets every volume go', async (t) => {
    const { lab, a, b, cc, cb } = n;
    const secretsOf = (c: Case) => (c.ceph ? n.secrets : {});
    const capOf = (c: Case) => mountCap(c.fsType, c.mode);
    const onNode = (node: typeof a, c: Case, what = '') => path.join(node.dir, 'soak', c.name + what);
    const say = (m: string) => t.diagnostic(m);

    const live = new Map<Case, Live>();
    for (const c of CASES) {
      const vol = (await cc.controller.CreateVolume({ name: `soak-${c.name}`, capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [capOf(c)], parameters: c.params, secrets: secretsOf(c) }))!.volume!;
      const onA = await attach(n.ca, vol, 'node-a', onNode(a, c), capOf(c), secretsOf(c));
      const onB = c.mode === RWX ? await attach(cb, vol, 'node-b', onNode(b, c), capOf(c), secretsOf(c)) : undefined;
      const w = await writeWithin(path.join(onA.target, 'a.txt'), 'a, before the failure');
      assert.ok(w.ok, `${c.name}: node-a writes: ${w.detail}`);
      const clientsOfA = c.name === 'rbd' ? clientRecordOf(await imageMeta(lab, imageOf(vol.volume_id!)), 'node-a')!.addrs : [];
      live.set(c, { vol, onA, onB, clientsOfA });
    }

    // Node A partitioned: every FUSE daemon it runs stops (one per volume).
    const frozen = fusePids(a.dir);
    assert.equal(frozen.length, CASES.length, `node-a's FUSE daemons: ${frozen.join(', ')}`);
    for (const pid of frozen) process.kill(pid, 'SIGSTOP');
    const end = Date.now() + MINUTES * 60_000;
    try {
      for (const c of CASES) {
        const v = live.get(c)!;
        const t0 = Date.now();
        await cc.controller.ControllerUnpublishVolume({ volume_id: v.vol.volume_id!, node_id: 'node-a', secrets: secretsOf(c) });
        const unpublishMs = Date.now() - t0;
        v.onB ??= await attach(cb, v.vol, 'node-b', onNode(b, c), capOf(c), secretsOf(c));
        const w = await writeWithin(path.join(v.onB.target, 'b.txt'), 'b, minute 0');
        const failoverMs = Date.now() - t0;
        assert.ok(w.ok, `${c.name}: node-b's first write: ${w.detail}`);
        assert.ok(await c.fenced(lab, v), `${c.name}: node-a fenced`);
        const how = c.mode === RWX ? 'node-b had it staged already' : 'ControllerPublish, NodeStage and NodePublish on node-b';
        console.log(`soak failover ${c.name}: ControllerUnpublish of node-a ${unpublishMs} ms, first fsynced write on node-b ${failoverMs} ms (${how})`);
      }
      for (let minute = 1; Date.now() < end; minute++) {
        await sleep(Math.min(60_000, end - Date.now()));
        for (const c of CASES) {
          const v = live.get(c)!;
          const w = await writeWithin(path.join(v.onB!.target, 'b.txt'), `b, minute ${minute}`);
          assert.ok(w.ok, `${c.name}, minute ${minute}: node-b writes: ${w.detail}`);
          assert.ok(await c.fenced(lab, v), `${c.name}, minute ${minute}: node-a still fenced`);
        }
        assert.deepEqual(frozen.filter((p) => !stopped(p)), [], `minute ${minute}: node-a's daemons still frozen`);
        say(`minute ${minute}: node-b wrote to ${CASES.length} volumes; node-a frozen and fenced`);
      }
    } finally {
      for (const pid of frozen) process.kill(pid, 'SIGCONT');
    }

    // Thawed after the whole time, A writes a new file and overwrites its old one, then again a
    // while later: nothing is acknowledged. A write its mount never answers (a thawed ceph-fuse
    // whose user is gone cannot log in again to learn it is blocklisted) is not acknowledged
    // either; it must fail once A's plugin lets the volume go.
    const attempts = async (files: string[]) =>
      (await Promise.all(CASES.flatMap((c) => files.map(async (f) => ({ c, f, ...(await writeWithin(path.join(live.get(c)!.onA.target, f), 'a, after the fence')) }))))).map((w) => {
        say(`${w.c.name}: thawed node-a's write of ${w.f}: ${w.detail}`);
        assert.equal(w.ok, false, `${w.c.name}: thawed node-a's write of ${w.f} was acknowledged`);
        return w;
      });
    const thawed = await attempts(['late.txt', 'a.txt']);
    await sleep(THAW_MS);
    thawed.push(...(await attempts(['later.txt'])));
    for (const c of CASES) {
      const w = await writeWithin(path.join(live.get(c)!.onB!.target, 'b.txt'), 'b, last');
      assert.ok(w.ok, `${c.name}: node-b's last write: ${w.detail}`);
    }

    await n.restartA(path.join(a.dir, 'soak'), () => fusePids(a.dir).length === 0);
    for (const w of thawed.filter((w) => /^no answer/.test(w.detail))) {
      const end = await Promise.race([w.settled, sleep(60_000).then(() => ({ ok: true, detail: 'still running a minute after the release' }))]);
      say(`${w.c.name}: thawed node-a's write of ${w.f}, unanswered until node-a's plugin released the volume: ${end.detail}`);
      assert.equal(end.ok, false, `${w.c.name}: thawed node-a's write of ${w.f} ended acknowledged: ${end.detail}`);
    }

    // What the cluster holds, through a fresh mount on B: A's pre-failure write and B's last, nothing else.
    for (const c of CASES) {
      const v = live.get(c)!;
      assert.ok(await c.fenced(lab, v), `${c.name}: node-a's restarted plugin did not take the volume back`);
      await detach(cb, v.vol.volume_id!, 'node-b', v.onB!, secretsOf(c));
      const check = await attach(cb, v.vol, 'node-b', onNode(b, c, '-check'), capOf(c), secretsOf(c));
      const files = Object.fromEntries(
        readdirSync(check.target)
          .filter((f) => f !== 'lost+found')
          .map((f) => [f, readFileSync(path.join(check.target, f), 'utf8')]),
      );
      assert.deepEqual(files, { 'a.txt': 'a, before the failure', 'b.txt': 'b, last' }, `${c.name}: the volume holds exactly this`);
      await detach(cb, v.vol.volume_id!, 'node-b', check, secretsOf(c));
      await cc.controller.DeleteVolume({ volume_id: v.vol.volume_id!, secrets: secretsOf(c) });
    }
    assert.deepEqual(await leftovers(a.dir), []);
    assert.deepEqual(await leftovers(b.dir), []);
    const cephUsers = (JSON.parse(await lab.ceph(['auth', 'ls', '--format', 'json'])) as { auth_dump: Array<{ entity: string }> }).auth_dump.map((u) => u.entity);
    assert.deepEqual(cephUsers.filter((e) => e.startsWith('client.strata-')), [], 'no CephFS node user left');
    const rgwUsers = JSON.parse((await runAllowFail('radosgw-admin', ['-c', lab.conf, 'user', 'list'])).stdout) as string[];
    assert.deepEqual(rgwUsers.filter((u) => u.startsWith('strata-csi-')), [], 'no S3 volume or node user left');
  });
});
