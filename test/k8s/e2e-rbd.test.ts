import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { CephLab } from '../lab/ceph-lab.js';
import { KubeLab } from './lab.js';
import { K8S_CACHE, K8S_DIR } from './paths.js';
import type { Obj } from './api.js';
import { busyboxPod, createAndWait, deletePodAndWait, podLog, runToCompletion, volumeStats } from './pods.js';

/**
 * Issue 15's scenarios 1-3 and 7 for rbd (rbd-fuse, xfs) with Strata installed by its chart:
 * PVC bound and a non-root pod with an fsGroup writes and fsyncs; a snapshot restored into a PVC
 * that a second pod reads; the PVC grown by editing it, seen by the running pod and in kubelet's
 * volume stats; everything deleted with nothing left. Starts a Ceph lab: run under the lab lock.
 *
 * Lab workaround: the Ceph lab listens on 127.0.0.1, which a pod network cannot reach, so the
 * controller Deployment is patched onto the host network after `helm install` (the node plugin
 * is there already). Once the Ceph lab can bind the node's address this patch goes.
 */

const NS = 'strata';
const REPO = path.resolve(K8S_DIR, '../..');
const APP = '/api/v1/namespaces/default';
const SNAPS = '/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots';
const GiB = 2 ** 30;
const times: Record<string, number> = {};

describe('rbd (rbd-fuse) through the chart on the Kubernetes lab', { timeout: 900_000 }, () => {
  let ceph: CephLab | undefined;
  let lab: KubeLab | undefined;
  const say = (m: string) => console.log(`[e2e-rbd] ${m}`);
  const api = () => lab!.api;
  const timed = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    const t = Date.now();
    const v = await f();
    times[name] = (Date.now() - t) / 1000;
    say(`${name}: ${times[name]} s`);
    return v;
  };
  const sc = { runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000 };
  // Prints the file's checksum, then the mount's size every second: the log shows a resize
  // reaching the running container without a restart.
  const writer = busyboxPod(
    'writer',
    'head -c 1048576 /dev/urandom > /data/f && sync /data/f && md5sum /data/f | cut -d" " -f1 && while true; do echo "size $(df -k /data | tail -1 | awk "{print \\$2}")"; sleep 1; done',
    { volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'data' } }], securityContext: sc, restartPolicy: 'Always' },
  );
  let checksum = '';

  before(async () => {
    const image = path.join(K8S_CACHE, 'images', 'strata.tar');
    execFileSync('bash', [path.join(K8S_DIR, 'strata-image.sh'), image], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 1_200_000 });
    const helmBin = path.join(execFileSync('go', ['env', 'GOPATH']).toString().trim(), 'bin', 'helm');
    if (!existsSync(helmBin)) execFileSync('bash', [path.join(REPO, 'test/install-helm.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
    ceph = await CephLab.start({ components: ['rbd'], osdStore: 'memstore' });
    lab = await KubeLab.start({ csi: true, log: say });
    await lab.importImage(image);
    await api().create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
    await api().create(`/api/v1/namespaces/${NS}/secrets`, { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'strata-keys' }, stringData: { 'lab.key': ceph.adminKey } });
    await api().create(`/api/v1/namespaces/${NS}/secrets`, { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'strata-ceph' }, stringData: { userID: 'admin', userKey: ceph.adminKey } });
    const values = {
      image: { repository: 'strata.local/strata', tag: 'lab', pullPolicy: 'Never' },
      sidecars: { ...lab.sidecarImages, pullPolicy: 'Never' },
      controller: { replicas: 1 },
      config: { clusters: [{ id: 'lab', ceph: { monitors: ceph.monitors, userID: 'admin', userKeyFile: '/etc/strata/keys/lab.key' } }] },
      storageClasses: [{ name: 'strata-rbd', parameters: { backend: 'rbd', clusterID: 'lab', pool: 'rbd', fsType: 'xfs', mounter: 'rbd-fuse' }, secret: { name: 'strata-ceph' } }],
      snapshotClasses: [{ name: 'strata-rbd', secret: { name: 'strata-ceph' } }],
    };
    writeFileSync(lab.p('values.json'), JSON.stringify(values));
    execFileSync(helmBin, ['install', 'strata', path.join(REPO, 'deploy/helm/strata'), '--kubeconfig', lab.kubeconfig, '-n', NS, '-f', lab.p('values.json')], { timeout: 300_000 });
    await api().patch(`/apis/apps/v1/namespaces/${NS}/deployments/strata-controller`, { spec: { template: { spec: { hostNetwork: true, dnsPolicy: 'ClusterFirstWithHostNet' } } } });
    await api().waitFor('one controller pod, on the host network, running', async () => {
      const ps = (await api().get(`/api/v1/namespaces/${NS}/pods?labelSelector=app.kubernetes.io/component%3Dcontroller`)).items as Obj[];
      return ps.length === 1 && ps[0]!.spec.hostNetwork && ps[0]!.status?.phase === 'Running' && !ps[0]!.metadata.deletionTimestamp ? true : undefined;
    }, 180_000, 500);
    // An attach before the node plugin registered fails once (CSINode lacks the driver).
    await api().waitFor('strata.csi.dev in CSINode', async () => {
      const n = await api().get(`/apis/storage.k8s.io/v1/csinodes/${lab!.nodeName}`);
      return ((n.spec?.drivers ?? []) as Obj[]).some((d) => d.name === 'strata.csi.dev') ? true : undefined;
    }, 120_000);
  });

  after(async () => {
    console.log(`[e2e-rbd] times (s): ${JSON.stringify(times)}`);
    await lab?.stop();
    await ceph?.stop();
  });

  const pvc = (name: string, size: string, dataSource?: Obj): Obj => ({
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name },
    spec: { accessModes: ['ReadWriteOnce'], storageClassName: 'strata-rbd', resources: { requests: { storage: size } }, ...(dataSource ? { dataSource } : {}) },
  });
  const bound = (name: string) => async () => ((await api().get(`${APP}/persistentvolumeclaims/${name}`)).status?.phase === 'Bound' ? true : undefined);

  it('1. a PVC binds, and a non-root pod with an fsGroup writes and fsyncs a file', async () => {
    await timed('PVC bound', async () => {
      await api().create(`${APP}/persistentvolumeclaims`, pvc('data', '1Gi'));
      await api().waitFor('PVC data bound', bound('data'), 120_000);
    });
    await timed('pod running', () => createAndWait(api(), writer, ['Running'], 180_000));
    checksum = await api().waitFor('the checksum in the log', async () => /^[0-9a-f]{32}$/m.exec(await podLog(api(), writer))?.[0], 30_000);
  });

  it('2. a VolumeSnapshot becomes readyToUse; a PVC restored from it is read by a second pod with the same bytes', async () => {
    await timed('snapshot ready', async () => {
      await api().create(SNAPS, { apiVersion: 'snapshot.storage.k8s.io/v1', kind: 'VolumeSnapshot', metadata: { name: 'snap' }, spec: { volumeSnapshotClassName: 'strata-rbd', source: { persistentVolumeClaimName: 'data' } } });
      await api().waitFor('snapshot ready', async () => ((await api().get(`${SNAPS}/snap`)).status?.readyToUse ? true : undefined), 120_000);
    });
    await timed('restore bound', async () => {
      await api().create(`${APP}/persistentvolumeclaims`, pvc('restored', '1Gi', { name: 'snap', kind: 'VolumeSnapshot', apiGroup: 'snapshot.storage.k8s.io' }));
      await api().waitFor('PVC restored bound', bound('restored'), 120_000);
    });
    const reader = busyboxPod('reader', 'md5sum /data/f | cut -d" " -f1', { volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'restored' } }], securityContext: sc });
    const r = await timed('restored pod read', () => runToCompletion(api(), reader, 180_000));
    assert.equal(r.phase, 'Succeeded', r.log);
    assert.equal(r.log.trim(), checksum);
    await deletePodAndWait(api(), reader);
  });

  it('3. the PVC grown by editing it: the running pod sees the new size without a restart, and so do the volume stats', async () => {
    await api().patch(`${APP}/persistentvolumeclaims/data`, { spec: { resources: { requests: { storage: '2Gi' } } } });
    await timed('resize seen in the pod', () =>
      api().waitFor('the pod to see more than 1.5 GiB', async () => {
        const sizes = [...(await podLog(api(), writer)).matchAll(/^size (\d+)$/gm)].map((m) => Number(m[1]) * 1024);
        return sizes.length && sizes[sizes.length - 1]! > 1.5 * GiB ? true : undefined;
      }, 300_000, 1000),
    );
    await timed('resize seen in volume stats', () =>
      api().waitFor('stats to show more than 1.5 GiB', async () => {
        const v = await volumeStats(api(), lab!.nodeName, writer, 'data');
        return v && v.capacityBytes > 1.5 * GiB ? true : undefined;
      }, 120_000, 1000),
    );
    const pod = await api().get(`${APP}/pods/writer`);
    assert.equal(pod.status.containerStatuses[0].restartCount, 0);
    assert.equal((await api().get(`${APP}/persistentvolumeclaims/data`)).status.capacity.storage, '2Gi');
  });

  it('7. everything deleted: no PV, VolumeAttachment, VolumeSnapshotContent or rbd image is left', async () => {
    await deletePodAndWait(api(), writer);
    await api().delete(`${SNAPS}/snap`);
    for (const name of ['data', 'restored']) await api().delete(`${APP}/persistentvolumeclaims/${name}`);
    await timed('all gone', () =>
      api().waitFor('PVs, attachments, snapshot contents and images gone', async () => {
        const pvs = (await api().get('/api/v1/persistentvolumes')).items as Obj[];
        const vas = (await api().get('/apis/storage.k8s.io/v1/volumeattachments')).items as Obj[];
        const vscs = (await api().get('/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents')).items as Obj[];
        const images = (await ceph!.rbd(['ls', 'rbd'])).trim();
        return pvs.length + vas.length + vscs.length === 0 && images === '' ? true : undefined;
      }, 180_000, 1000),
    );
    say(`rbd trash after the deletes: ${JSON.stringify((await ceph!.rbd(['trash', 'ls', 'rbd'])).trim())}`);
  });
});
