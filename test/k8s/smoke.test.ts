import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { run } from '../../src/util/exec.js';
import { KubeLab, KUBELET_DIR } from './lab.js';
import { SNAPSHOT_GROUP, type Obj } from './api.js';
import { busyboxPod, createAndWait, deletePod, podLog, runToCompletion, volumeStats, type Pod } from './pods.js';

/**
 * The Kubernetes lab itself: it starts from the cached binaries, runs pods from locally built
 * images with their output and volume stats readable through the apiserver (the node proxy to
 * kubelet), routes the kubernetes Service for pods, serves the VolumeSnapshot kinds, runs the
 * sidecar images, and stops leaving no process, mount or iptables chain behind.
 */

describe('Kubernetes lab', { timeout: 600_000 }, () => {
  let lab: KubeLab | undefined;
  let dir = '';
  let containerdSocket = '';
  const say = (m: string) => console.log(`[k8s-lab] ${m}`);

  before(async () => {
    lab = await KubeLab.start({ csi: true, log: say });
    dir = lab.dir;
    containerdSocket = lab.containerdSocket;
  });
  after(async () => {
    await lab?.stop();
  });

  it('reports the built version and one Ready node', async () => {
    const version = await lab!.api.version.getCode();
    assert.equal(version.gitVersion, lab!.built.K8S_VERSION);
    const nodes = (await lab!.api.core.listNode()).items;
    assert.deepEqual(nodes.map((n) => n.metadata?.name), [lab!.nodeName]);
    const addrs = nodes[0]!.status?.addresses ?? [];
    assert.ok(addrs.some((a) => a.type === 'InternalIP' && a.address === lab!.nodeIP), JSON.stringify(addrs));
  });

  it('runs a busybox pod as a non-root user to completion and serves its log', async () => {
    const pod = busyboxPod('smoke', 'echo hello > /scratch/f && sync /scratch/f && echo "uid=$(id -u) $(cat /scratch/f) $(hostname)"', {
      securityContext: { runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000 },
      volumes: [{ name: 'scratch', emptyDir: {} }],
    });
    const r = await runToCompletion(lab!.api, pod);
    say(`pod ran to completion in ${r.seconds} s`);
    assert.equal(r.phase, 'Succeeded', r.log);
    assert.equal(r.log.trim(), 'uid=1000 hello smoke');
    await deletePod(lab!.api, pod);
  });

  it("reports a running pod's volume usage in kubelet's stats within seconds", async () => {
    const pod = busyboxPod('stats', 'dd if=/dev/zero of=/scratch/f bs=1M count=3 2>/dev/null && sync /scratch/f && echo written && sleep 600', {
      restartPolicy: 'Always',
      volumes: [{ name: 'scratch', emptyDir: {} }],
    });
    await createAndWait(lab!.api, pod, ['Running']);
    const t = Date.now();
    const stats = await lab!.api.waitFor('3 MiB used in the volume stats', async () => {
      const v = await volumeStats(lab!.api, lab!.nodeName, pod, 'scratch');
      return v && v.usedBytes >= 3 * 2 ** 20 ? v : undefined;
    }, 60_000, 500);
    say(`volume stats showed the write after ${(Date.now() - t) / 1000} s`);
    assert.ok(stats.capacityBytes > stats.usedBytes, JSON.stringify(stats));
    // The stats may count the blocks before the pod's fsync returns.
    await lab!.api.waitFor('the pod to log its write', async () => ((await podLog(lab!.api, pod)).trim() === 'written' ? true : undefined), 30_000, 500);
    await deletePod(lab!.api, pod);
  });

  it('routes the kubernetes Service to the apiserver for pods (kube-proxy)', async () => {
    // busybox's wget crashes on the apiserver's TLS (EC key): a TCP connect proves the route, and
    // an unserved port of the same IP proves the check can fail.
    const pod = busyboxPod(
      'in-cluster',
      'nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null; echo "service=$?"; nc -w 2 $KUBERNETES_SERVICE_HOST 1 </dev/null 2>/dev/null; echo "other=$?"',
    );
    const r = await runToCompletion(lab!.api, pod);
    assert.equal(r.phase, 'Succeeded', r.log);
    assert.equal(r.log.trim(), 'service=0\nother=1');
    await deletePod(lab!.api, pod);
  });

  it('serves the VolumeSnapshot kinds and runs the CSI sidecars from their local images', async () => {
    const api = lab!.api;
    const cls = { ...SNAPSHOT_GROUP, plural: 'volumesnapshotclasses' };
    await api.custom.createClusterCustomObject({ ...cls, body: { apiVersion: 'snapshot.storage.k8s.io/v1', kind: 'VolumeSnapshotClass', metadata: { name: 'smoke' }, driver: 'smoke.csi.dev', deletionPolicy: 'Delete' } });
    assert.equal(((await api.custom.getClusterCustomObject({ ...cls, name: 'smoke' })) as Obj).driver, 'smoke.csi.dev');
    await api.custom.deleteClusterCustomObject({ ...cls, name: 'smoke' });

    const containers = Object.entries(lab!.sidecarImages).map(([name, image]) => ({ name: name.toLowerCase(), image, imagePullPolicy: 'Never', args: ['--version'] }));
    const pod: Pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'sidecars', namespace: 'default' }, spec: { restartPolicy: 'Never', containers } };
    const { pod: done } = await createAndWait(api, pod, ['Succeeded', 'Failed']);
    const logs: Record<string, string> = {};
    for (const c of containers) logs[c.name] = await podLog(api, pod, c.name);
    assert.equal(done.status?.phase, 'Succeeded', JSON.stringify(logs));
    const b = lab!.built;
    assert.ok(logs.provisioner!.includes(b.PROVISIONER_VERSION), logs.provisioner);
    assert.ok(logs.attacher!.includes(b.ATTACHER_VERSION), logs.attacher);
    await deletePod(api, pod);
  });

  it('stops leaving no process, mount, directory or iptables chain of its own', async () => {
    const l = lab!;
    lab = undefined;
    await l.stop();
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
    assert.ok(!mounts.includes(KUBELET_DIR), mounts.split('\n').filter((m) => m.includes(KUBELET_DIR)).join('\n'));
    assert.ok(!mounts.includes(dir));
    assert.equal(existsSync(dir), false);
    const survivors = readdirSync('/proc')
      .filter((e) => /^\d+$/.test(e))
      .map((e) => {
        try {
          return readFileSync(`/proc/${e}/cmdline`, 'utf8').replace(/\0/g, ' ');
        } catch {
          return '';
        }
      })
      .filter((c) => c.includes(dir) || c.includes(containerdSocket));
    assert.deepEqual(survivors, []);
    const links = readdirSync('/var/log/containers').filter((n) => readlinkSync(`/var/log/containers/${n}`).startsWith(dir));
    assert.deepEqual(links, []);
    for (const table of ['filter', 'nat', 'mangle']) {
      const { stdout } = await run('iptables', ['-w', '5', '-t', table, '-S']);
      assert.doesNotMatch(stdout, /KUBE-/, `iptables -t ${table}`);
    }
  });
});
