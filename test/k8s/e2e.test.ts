import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { CephLab, LAB_RGW_ADMIN, LAB_S3 } from '../lab/ceph-lab.js';
import { run } from '../../src/util/exec.js';
import { KubeLab } from './lab.js';
import { K8S_CACHE, K8S_DIR } from './paths.js';
import type { Obj } from './api.js';
import { busyboxPod, createAndWait, deletePodAndWait, podLog, runToCompletion, volumeStats } from './pods.js';

/**
 * Issue 15's scenarios 1-3 and 7 for each backend (rbd through rbd-fuse with xfs, cephfs through
 * ceph-fuse, s3 through s3fs) with Strata installed by its chart:
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

type Backend = 'rbd' | 'cephfs' | 's3';
const BACKENDS: Backend[] = ['rbd', 'cephfs', 's3'];

describe('every backend through the chart on the Kubernetes lab', { timeout: 1_800_000 }, () => {
  let ceph: CephLab | undefined;
  let lab: KubeLab | undefined;
  const say = (m: string) => console.log(`[e2e] ${m}`);
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
  const writer = (b: Backend) =>
    busyboxPod(
      `writer-${b}`,
      'head -c 1048576 /dev/urandom > /data/f && sync /data/f && md5sum /data/f | cut -d" " -f1 && while true; do echo "size $(df -k /data | tail -1 | awk "{print \\$2}")"; sleep 1; done',
      { volumes: [{ name: 'data', persistentVolumeClaim: { claimName: `data-${b}` } }], securityContext: sc, restartPolicy: 'Always' },
    );
  const checksums: Partial<Record<Backend, string>> = {};

  before(async () => {
    const image = path.join(K8S_CACHE, 'images', 'strata.tar');
    execFileSync('bash', [path.join(K8S_DIR, 'strata-image.sh'), image], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 1_200_000 });
    const helmBin = path.join(execFileSync('go', ['env', 'GOPATH']).toString().trim(), 'bin', 'helm');
    if (!existsSync(helmBin)) execFileSync('bash', [path.join(REPO, 'test/install-helm.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
    ceph = await CephLab.start({ components: ['rbd', 'cephfs', 's3'], osdStore: 'memstore' });
    lab = await KubeLab.start({ csi: true, log: say });
    await lab.importImage(image);
    await api().create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
    const secrets: Record<string, Record<string, string>> = {
      'strata-keys': {
        'lab.key': ceph.adminKey,
        'lab.access-key-id': LAB_S3.accessKeyID,
        'lab.secret-access-key': LAB_S3.secretAccessKey,
        'lab.rgw-admin-access-key-id': LAB_RGW_ADMIN.accessKeyID,
        'lab.rgw-admin-secret-access-key': LAB_RGW_ADMIN.secretAccessKey,
      },
      'strata-ceph': { userID: 'admin', userKey: ceph.adminKey },
      'strata-s3': { accessKeyID: LAB_S3.accessKeyID, secretAccessKey: LAB_S3.secretAccessKey },
    };
    for (const [name, stringData] of Object.entries(secrets)) await api().create(`/api/v1/namespaces/${NS}/secrets`, { apiVersion: 'v1', kind: 'Secret', metadata: { name }, stringData });
    const values = {
      image: { repository: 'strata.local/strata', tag: 'lab', pullPolicy: 'Never' },
      sidecars: { ...lab.sidecarImages, pullPolicy: 'Never' },
      controller: { replicas: 1 },
      config: {
        clusters: [
          {
            id: 'lab',
            ceph: { monitors: ceph.monitors, userID: 'admin', userKeyFile: '/etc/strata/keys/lab.key' },
            s3: {
              endpoint: ceph.s3Endpoint,
              region: 'us-east-1',
              accessKeyIDFile: '/etc/strata/keys/lab.access-key-id',
              secretAccessKeyFile: '/etc/strata/keys/lab.secret-access-key',
              rgwAdmin: { accessKeyIDFile: '/etc/strata/keys/lab.rgw-admin-access-key-id', secretAccessKeyFile: '/etc/strata/keys/lab.rgw-admin-secret-access-key' },
            },
          },
        ],
      },
      storageClasses: [
        { name: 'strata-rbd', parameters: { backend: 'rbd', clusterID: 'lab', pool: 'rbd', fsType: 'xfs', mounter: 'rbd-fuse' }, secret: { name: 'strata-ceph' } },
        { name: 'strata-cephfs', parameters: { backend: 'cephfs', clusterID: 'lab', fsName: 'cephfs', subvolumeGroup: 'csi' }, secret: { name: 'strata-ceph' } },
        { name: 'strata-s3', parameters: { backend: 's3', clusterID: 'lab', mounter: 's3fs', uid: '1000', gid: '1000', mode: '0775' }, secret: { name: 'strata-s3' } },
      ],
      snapshotClasses: BACKENDS.map((b) => ({ name: `strata-${b}`, secret: { name: b === 's3' ? 'strata-s3' : 'strata-ceph' } })),
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
    console.log(`[e2e] times (s): ${JSON.stringify(times)}`);
    await lab?.stop();
    await ceph?.stop();
  });

  const pvc = (b: Backend, name: string, size: string, dataSource?: Obj): Obj => ({
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name },
    spec: { accessModes: ['ReadWriteOnce'], storageClassName: `strata-${b}`, resources: { requests: { storage: size } }, ...(dataSource ? { dataSource } : {}) },
  });
  const bound = (name: string) => async () => ((await api().get(`${APP}/persistentvolumeclaims/${name}`)).status?.phase === 'Bound' ? true : undefined);

  for (const b of BACKENDS) {
    it(`${b} 1. a PVC binds, and a non-root pod with an fsGroup writes and fsyncs a file`, async () => {
      await timed(`${b} PVC bound`, async () => {
        await api().create(`${APP}/persistentvolumeclaims`, pvc(b, `data-${b}`, '1Gi'));
        await api().waitFor(`PVC data-${b} bound`, bound(`data-${b}`), 120_000);
      });
      await timed(`${b} pod running`, () => createAndWait(api(), writer(b), ['Running'], 180_000));
      checksums[b] = await api().waitFor('the checksum in the log', async () => /^[0-9a-f]{32}$/m.exec(await podLog(api(), writer(b)))?.[0], 30_000);
    });

    it(`${b} 2. a VolumeSnapshot becomes readyToUse; a PVC restored from it is read by a second pod with the same bytes`, async () => {
      await timed(`${b} snapshot ready`, async () => {
        await api().create(SNAPS, { apiVersion: 'snapshot.storage.k8s.io/v1', kind: 'VolumeSnapshot', metadata: { name: `snap-${b}` }, spec: { volumeSnapshotClassName: `strata-${b}`, source: { persistentVolumeClaimName: `data-${b}` } } });
        await api().waitFor('snapshot ready', async () => ((await api().get(`${SNAPS}/snap-${b}`)).status?.readyToUse ? true : undefined), 120_000);
      });
      await timed(`${b} restore bound`, async () => {
        await api().create(`${APP}/persistentvolumeclaims`, pvc(b, `restored-${b}`, '1Gi', { name: `snap-${b}`, kind: 'VolumeSnapshot', apiGroup: 'snapshot.storage.k8s.io' }));
        await api().waitFor(`PVC restored-${b} bound`, bound(`restored-${b}`), 120_000);
      });
      const reader = busyboxPod(`reader-${b}`, 'md5sum /data/f | cut -d" " -f1', { volumes: [{ name: 'data', persistentVolumeClaim: { claimName: `restored-${b}` } }], securityContext: sc });
      const r = await timed(`${b} restored pod read`, () => runToCompletion(api(), reader, 180_000));
      assert.equal(r.phase, 'Succeeded', r.log);
      assert.equal(r.log.trim(), checksums[b]);
      await deletePodAndWait(api(), reader);
    });

    it(`${b} 3. the PVC grown by editing it: the running pod sees the new size without a restart, and so do the volume stats`, async () => {
      const sizes = async () => [...(await podLog(api(), writer(b))).matchAll(/^size (\d+)$/gm)].map((m) => Number(m[1]) * 1024);
      const before = (await sizes()).at(-1) ?? 0;
      say(`${b}: the pod sees ${before} bytes before the resize`);
      // s3fs reports a size of its own, not the volume's (seen: over 1.5 GiB before the resize),
      // so for S3 only the stats below can tell the resize.
      if (b !== 's3') assert.ok(before > 0 && before <= 1.5 * GiB, `size before the resize: ${before}`);
      await api().patch(`${APP}/persistentvolumeclaims/data-${b}`, { spec: { resources: { requests: { storage: '2Gi' } } } });
      await timed(`${b} resize seen in the pod`, () =>
        api().waitFor('the pod to see more than 1.5 GiB', async () => (((await sizes()).at(-1) ?? 0) > 1.5 * GiB ? true : undefined), 300_000, 1000),
      );
      await timed(`${b} resize seen in volume stats`, () =>
        api().waitFor('stats to show more than 1.5 GiB', async () => {
          const v = await volumeStats(api(), lab!.nodeName, writer(b), 'data');
          return v && v.capacityBytes > 1.5 * GiB ? true : undefined;
        }, 120_000, 1000),
      );
      const pod = await api().get(`${APP}/pods/writer-${b}`);
      assert.equal(pod.status.containerStatuses[0].restartCount, 0);
      assert.equal((await api().get(`${APP}/persistentvolumeclaims/data-${b}`)).status.capacity.storage, '2Gi');
    });
  }

  it('7. everything deleted: no PV, VolumeAttachment, VolumeSnapshotContent, rbd image, subvolume or bucket is left', async () => {
    for (const b of BACKENDS) {
      await deletePodAndWait(api(), writer(b));
      await api().delete(`${SNAPS}/snap-${b}`);
      for (const name of [`data-${b}`, `restored-${b}`]) await api().delete(`${APP}/persistentvolumeclaims/${name}`);
    }
    await timed('all gone', () =>
      api().waitFor('PVs, attachments, snapshot contents and images gone', async () => {
        const pvs = (await api().get('/api/v1/persistentvolumes')).items as Obj[];
        const vas = (await api().get('/apis/storage.k8s.io/v1/volumeattachments')).items as Obj[];
        const vscs = (await api().get('/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents')).items as Obj[];
        const images = (await ceph!.rbd(['ls', 'rbd'])).trim();
        const subvolumes = JSON.parse(await ceph!.ceph(['fs', 'subvolume', 'ls', 'cephfs', '--group_name', 'csi', '-f', 'json'])) as unknown[];
        const buckets = JSON.parse((await run('radosgw-admin', ['-c', ceph!.conf, 'bucket', 'list'], { timeoutMs: 30_000 })).stdout) as unknown[];
        return pvs.length + vas.length + vscs.length + subvolumes.length + buckets.length === 0 && images === '' ? true : undefined;
      }, 180_000, 1000),
    );
    say(`rbd trash after the deletes: ${JSON.stringify((await ceph!.rbd(['trash', 'ls', 'rbd'])).trim())}`);
  });
});
