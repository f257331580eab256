import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { KubeLab, KUBELET_DIR } from './lab.js';
import { BUSYBOX_IMAGE } from './images.js';
import type { Obj } from './api.js';
import { run } from '../../src/util/exec.js';

/**
 * The Kubernetes lab itself: it starts from the cached binaries, runs a pod from a locally built
 * image to completion with its output readable through the apiserver (the node proxy to kubelet),
 * and stops leaving no process or mount behind.
 */

describe('Kubernetes lab', { timeout: 600_000 }, () => {
  let lab: KubeLab | undefined;
  let dir = '';
  let containerdSocket = '';

  before(async () => {
    lab = await KubeLab.start({ csi: true, log: (m) => console.log(`[k8s-lab] ${m}`) });
    dir = lab.dir;
    containerdSocket = lab.containerdSocket;
  });
  after(async () => {
    await lab?.stop();
  });

  it('reports the built version and one Ready node', async () => {
    const version = await lab!.api.get('/version');
    assert.equal(version.gitVersion, lab!.built.K8S_VERSION);
    const nodes = (await lab!.api.get('/api/v1/nodes')).items as Obj[];
    assert.deepEqual(nodes.map((n) => n.metadata.name), [lab!.nodeName]);
    const addrs = nodes[0]!.status.addresses as Obj[];
    assert.ok(addrs.some((a) => a.type === 'InternalIP' && a.address === lab!.nodeIP), JSON.stringify(addrs));
  });

  it('runs a busybox pod as a non-root user to completion and serves its log', async () => {
    const api = lab!.api;
    const ns = '/api/v1/namespaces/default/pods';
    const started = Date.now();
    await api.create(ns, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'smoke' },
      spec: {
        restartPolicy: 'Never',
        securityContext: { runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000 },
        volumes: [{ name: 'scratch', emptyDir: {} }],
        containers: [
          {
            name: 'main',
            image: BUSYBOX_IMAGE,
            imagePullPolicy: 'Never',
            command: ['sh', '-c', 'echo hello > /scratch/f && sync && echo "uid=$(id -u) $(cat /scratch/f) $(hostname)"'],
            volumeMounts: [{ name: 'scratch', mountPath: '/scratch' }],
          },
        ],
      },
    });
    const phase = await api.waitFor(
      'pod smoke to finish',
      async () => {
        const p = (await api.get(`${ns}/smoke`)).status?.phase as string | undefined;
        return p === 'Succeeded' || p === 'Failed' ? p : undefined;
      },
      120_000,
    );
    console.log(`[k8s-lab] pod ran to completion in ${(Date.now() - started) / 1000} s`);
    const log = (await api.raw('GET', `${ns}/smoke/log`)).text;
    assert.equal(phase, 'Succeeded', log);
    assert.equal(log.trim(), 'uid=1000 hello smoke');
    await api.delete(`${ns}/smoke`, { gracePeriodSeconds: 0 });
  });

  it('routes the kubernetes Service to the apiserver for pods (kube-proxy)', async () => {
    const api = lab!.api;
    const ns = '/api/v1/namespaces/default/pods';
    // busybox's wget crashes on the apiserver's TLS (EC key): a TCP connect proves the route, and
    // an unserved port of the same IP proves the check can fail.
    await api.create(ns, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'in-cluster' },
      spec: {
        restartPolicy: 'Never',
        containers: [
          {
            name: 'main',
            image: BUSYBOX_IMAGE,
            imagePullPolicy: 'Never',
            command: ['sh', '-c', 'nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null; echo "service=$?"; nc -w 2 $KUBERNETES_SERVICE_HOST 1 </dev/null 2>/dev/null; echo "other=$?"'],
          },
        ],
      },
    });
    const phase = await api.waitFor('pod in-cluster to finish', async () => {
      const p = (await api.get(`${ns}/in-cluster`)).status?.phase as string | undefined;
      return p === 'Succeeded' || p === 'Failed' ? p : undefined;
    }, 120_000);
    const log = (await api.raw('GET', `${ns}/in-cluster/log`)).text;
    assert.equal(phase, 'Succeeded', log);
    assert.equal(log.trim(), 'service=0\nother=1');
    await api.delete(`${ns}/in-cluster`, { gracePeriodSeconds: 0 });
  });

  it('serves the VolumeSnapshot kinds and runs the CSI sidecars from their local images', async () => {
    const api = lab!.api;
    const cls = '/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses';
    await api.create(cls, { apiVersion: 'snapshot.storage.k8s.io/v1', kind: 'VolumeSnapshotClass', metadata: { name: 'smoke' }, driver: 'smoke.csi.dev', deletionPolicy: 'Delete' });
    assert.equal((await api.get(`${cls}/smoke`)).driver, 'smoke.csi.dev');
    await api.delete(`${cls}/smoke`);

    const ns = '/api/v1/namespaces/default/pods';
    const images = lab!.sidecarImages;
    const containers = Object.entries(images).map(([name, image]) => ({ name: name.toLowerCase(), image, imagePullPolicy: 'Never', args: ['--version'] }));
    await api.create(ns, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'sidecars' }, spec: { restartPolicy: 'Never', containers } });
    const pod = await api.waitFor('pod sidecars to finish', async () => {
      const p = await api.get(`${ns}/sidecars`);
      return p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed' ? p : undefined;
    }, 120_000);
    const logs: Record<string, string> = {};
    for (const c of containers) logs[c.name] = (await api.raw('GET', `${ns}/sidecars/log?container=${c.name}`)).text;
    assert.equal(pod.status.phase, 'Succeeded', JSON.stringify(logs));
    const b = lab!.built;
    assert.match(logs.provisioner!, new RegExp(b.PROVISIONER_VERSION.replace(/\./g, '\\.')));
    assert.match(logs.attacher!, new RegExp(b.ATTACHER_VERSION.replace(/\./g, '\\.')));
    await api.delete(`${ns}/sidecars`, { gracePeriodSeconds: 0 });
  });

  it('stops leaving no process, mount or directory of its own', async () => {
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
