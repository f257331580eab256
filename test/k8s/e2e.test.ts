import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CephLab, LAB_RGW_ADMIN, LAB_S3, RGW_PORT } from '../lab/ceph-lab.js';
import { run } from '../../src/util/exec.js';
import { hostAddress, KubeLab, KUBELET_DIR, POD_SUBNET } from './lab.js';
import { leftovers } from '../helpers/leftovers.js';
import { readMountInfo } from '../../src/mount/mountinfo.js';
import { K8S_CACHE, K8S_DIR } from './paths.js';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import type { V1PersistentVolumeClaim, V1Pod, V1TypedObjectReference } from '@kubernetes/client-node';
import { ignoreNotFound, MERGE_PATCH, SNAPSHOT_GROUP, type Obj } from './api.js';
import { busyboxPod, createAndWait, deletePodAndWait, podLog, readPod, runToCompletion, volumeStats } from './pods.js';
import { labS3Client, listObjects } from '../helpers/s3.js';

/**
 * Issue 15's scenarios for each backend (rbd through rbd-fuse with xfs, cephfs through ceph-fuse,
 * s3 through s3fs in a bucket per volume, and s3 through rclone in a shared bucket, the examples'
 * two S3 layouts) with Strata installed by its chart, as users install it:
 * 1. PVC bound and a non-root pod with an fsGroup writes and fsyncs; 2. a snapshot restored into
 * a PVC that a second pod reads; 3. the PVC grown by editing it, seen by the running pod and in
 * kubelet's volume stats; 6. a ReadWriteOncePod PVC admits one pod at a time; 4. the node plugin
 * pod deleted under pods using FUSE volumes, healed for a pod with HostToContainer propagation;
 * 5. Ceph (for the controller) and S3 unreachable for 3 minutes; 7. everything deleted, nothing left.
 * rclone is an S3 StorageClass of its own mounter: scenario 5 provisions through the controller
 * alone, where the mounter plays no part, so it runs for s3fs's class only.
 *
 * The node plugin has VOLUME_MOUNT_GROUP: kubelet leaves the pods' fsGroup to it and walks no
 * volume itself. The S3 classes set no uid or gid, so the group the pods write with is the one
 * kubelet passed; an S3 object keeps its Last-Modified across a pod start (no chown by kubelet).
 *
 * The Ceph lab binds the node's own address (STRATA_LAB_ADDR is not used here): the controller
 * runs in the pod network, which reaches the node's address and not its loopback.
 */

const NS = 'strata';
const REPO = path.resolve(K8S_DIR, '../..');
const APP = 'default';
const SNAPS = { ...SNAPSHOT_GROUP, namespace: APP, plural: 'volumesnapshots' };
const GiB = 2 ** 30;
const times: Record<string, number> = {};

type Backend = 'rbd' | 'cephfs' | 's3' | 'rclone';
const BACKENDS: Backend[] = ['rbd', 'cephfs', 's3', 'rclone'];
const isS3 = (b: Backend) => b === 's3' || b === 'rclone';
const SHARED_BUCKET = 'team-data';

describe('every backend through the chart on the Kubernetes lab', { timeout: 1_800_000 }, () => {
  let ceph: CephLab | undefined;
  let lab: KubeLab | undefined;
  const say = (m: string) => console.log(`[e2e] ${m}`);
  const api = () => lab!.api;
  const core = () => lab!.api.core;
  const readPvc = (name: string) => core().readNamespacedPersistentVolumeClaim({ name, namespace: APP });
  const deletePvc = (name: string) => ignoreNotFound(core().deleteNamespacedPersistentVolumeClaim({ name, namespace: APP }));
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
      'echo "group $(stat -c %g /data)" && head -c 1048576 /dev/urandom > /data/f && sync /data/f && md5sum /data/f | cut -d" " -f1 && while true; do echo "size $(df -k /data | tail -1 | awk "{print \\$2}")"; sleep 1; done',
      { volumes: [{ name: 'data', persistentVolumeClaim: { claimName: `data-${b}` } }], securityContext: sc, restartPolicy: 'Always' },
    );
  const checksums: Partial<Record<Backend, string>> = {};
  let helmBin = '';
  const allRunning = (ps: V1Pod[]) =>
    ps.length === 1 && ps[0]!.status?.phase === 'Running' && ps[0]!.status.containerStatuses?.length === ps[0]!.spec?.containers.length &&
    !!ps[0]!.status.containerStatuses?.every((c) => c.state?.running);
  const registered = async () => (await api().storage.readCSINode({ name: lab!.nodeName })).spec?.drivers?.find((d) => d.name === 'strata.csi.dev');
  const strataPods = async (component: 'controller' | 'node') =>
    (await core().listNamespacedPod({ namespace: NS, labelSelector: `app.kubernetes.io/component=${component}` })).items.filter((p) => !p.metadata?.deletionTimestamp);

  before(async () => {
    const image = path.join(K8S_CACHE, 'images', 'strata.tar');
    execFileSync('bash', [path.join(K8S_DIR, 'strata-image.sh'), image], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 1_200_000 });
    helmBin = path.join(execFileSync('go', ['env', 'GOPATH']).toString().trim(), 'bin', 'helm');
    if (!existsSync(helmBin)) execFileSync('bash', [path.join(REPO, 'test/install-helm.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
    ceph = await CephLab.start({ components: ['rbd', 'cephfs', 's3'], osdStore: 'memstore', address: hostAddress() });
    lab = await KubeLab.start({ csi: true, log: say });
    await lab.importImage(image);
    await core().createNamespace({ body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } } });
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
    for (const [name, stringData] of Object.entries(secrets)) await core().createNamespacedSecret({ namespace: NS, body: { apiVersion: 'v1', kind: 'Secret', metadata: { name }, stringData } });
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
        // No uid or gid: the group comes from the pod's fsGroup (VOLUME_MOUNT_GROUP).
        { name: 'strata-s3', parameters: { backend: 's3', clusterID: 'lab', mounter: 's3fs' }, secret: { name: 'strata-s3' } },
        // As the examples' strata-s3-shared: a prefix per volume in one shared bucket.
        { name: 'strata-rclone', parameters: { backend: 's3', clusterID: 'lab', bucket: SHARED_BUCKET, mounter: 'rclone' }, secret: { name: 'strata-s3' } },
      ],
      snapshotClasses: BACKENDS.map((b) => ({ name: `strata-${b}`, secret: { name: isS3(b) ? 'strata-s3' : 'strata-ceph' } })),
    };
    writeFileSync(lab.p('values.json'), JSON.stringify(values));
    execFileSync(helmBin, ['install', 'strata', path.join(REPO, 'deploy/helm/strata'), '--kubeconfig', lab.kubeconfig, '-n', NS, '-f', lab.p('values.json')], { timeout: 300_000 });
    await timed('chart installed: every container of the controller and the node plugin running', () =>
      api().waitFor('every Strata container running', async () => (allRunning(await strataPods('controller')) && allRunning(await strataPods('node')) ? true : undefined), 180_000, 500),
    );
    assert.equal((await api().storage.readCSIDriver({ name: 'strata.csi.dev' })).spec.attachRequired, true);
    // An attach before the node plugin registered fails once (CSINode lacks the driver).
    const d = await api().waitFor('strata.csi.dev in CSINode', registered, 120_000);
    assert.equal(d.nodeID, lab.nodeName, 'the node plugin registered with kubelet (node-driver-registrar) under the node name');
  });

  after(async () => {
    console.log(`[e2e] times (s): ${JSON.stringify(times)}`);
    await lab?.stop();
    await ceph?.stop();
  });

  const pvc = (b: Backend, name: string, size: string, dataSource?: V1TypedObjectReference, accessMode = 'ReadWriteOnce'): V1PersistentVolumeClaim => ({
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name },
    spec: { accessModes: [accessMode], storageClassName: `strata-${b}`, resources: { requests: { storage: size } }, ...(dataSource ? { dataSource } : {}) },
  });
  const createPvc = (body: V1PersistentVolumeClaim) => core().createNamespacedPersistentVolumeClaim({ namespace: APP, body });
  const bound = (name: string) => async () => ((await readPvc(name)).status?.phase === 'Bound' ? true : undefined);
  /** The S3 object of a file in a volume: what a chown through the FUSE mount would rewrite. */
  const s3Object = async (claim: string, file: string) => {
    const pv = await core().readPersistentVolume({ name: (await readPvc(claim)).spec!.volumeName! });
    const { bucket, prefix } = pv.spec!.csi!.volumeAttributes!;
    const h = await labS3Client(ceph!).send(new HeadObjectCommand({ Bucket: bucket, Key: `${prefix}${file}` }));
    return { lastModified: h.LastModified?.toISOString(), etag: h.ETag, metadata: h.Metadata };
  };

  for (const b of BACKENDS) {
    it(`${b} 1. a PVC binds, and a non-root pod with an fsGroup writes and fsyncs a file`, async () => {
      await timed(`${b} PVC bound`, async () => {
        await createPvc(pvc(b, `data-${b}`, '1Gi'));
        await api().waitFor(`PVC data-${b} bound`, bound(`data-${b}`), 120_000);
      });
      await timed(`${b} pod running`, () => createAndWait(api(), writer(b), ['Running'], 180_000));
      checksums[b] = await api().waitFor('the checksum in the log', async () => /^[0-9a-f]{32}$/m.exec(await podLog(api(), writer(b)))?.[0], 30_000);
      // The volume's root has the pod's fsGroup: Strata applied it (kubelet delegates it), and the
      // non-root pod could write only through it (a new xfs, subvolume or bucket root is root's).
      assert.match(await podLog(api(), writer(b)), /^group 1000$/m);
    });

    it(`${b} 2. a VolumeSnapshot becomes readyToUse; a PVC restored from it is read by a second pod with the same bytes`, async () => {
      await timed(`${b} snapshot ready`, async () => {
        await api().custom.createNamespacedCustomObject({ ...SNAPS, body: { apiVersion: 'snapshot.storage.k8s.io/v1', kind: 'VolumeSnapshot', metadata: { name: `snap-${b}` }, spec: { volumeSnapshotClassName: `strata-${b}`, source: { persistentVolumeClaimName: `data-${b}` } } } });
        await api().waitFor('snapshot ready', async () => (((await api().custom.getNamespacedCustomObject({ ...SNAPS, name: `snap-${b}` })) as Obj).status?.readyToUse ? true : undefined), 120_000);
      });
      await timed(`${b} restore bound`, async () => {
        await createPvc(pvc(b, `restored-${b}`, '1Gi', { name: `snap-${b}`, kind: 'VolumeSnapshot', apiGroup: 'snapshot.storage.k8s.io' }));
        await api().waitFor(`PVC restored-${b} bound`, bound(`restored-${b}`), 120_000);
      });
      const reader = busyboxPod(`reader-${b}`, 'md5sum /data/f | cut -d" " -f1', { volumes: [{ name: 'data', persistentVolumeClaim: { claimName: `restored-${b}` } }], securityContext: sc });
      const object = isS3(b) ? await s3Object(`restored-${b}`, 'f') : undefined;
      const r = await timed(`${b} restored pod read`, () => runToCompletion(api(), reader, 180_000));
      assert.equal(r.phase, 'Succeeded', r.log);
      assert.equal(r.log.trim(), checksums[b]);
      // A chown through s3fs rewrites the object (a copy onto itself with new metadata): kubelet
      // walking the volume for the fsGroup would have changed it.
      if (object) assert.deepEqual(await s3Object(`restored-${b}`, 'f'), object, `${b}: the pod start left the object as it was`);
      await deletePodAndWait(api(), reader);
    });

    it(`${b} 3. the PVC grown by editing it: the running pod sees the new size without a restart, and so do the volume stats`, async () => {
      const sizes = async () => [...(await podLog(api(), writer(b))).matchAll(/^size (\d+)$/gm)].map((m) => Number(m[1]) * 1024);
      const before = (await sizes()).at(-1) ?? 0;
      say(`${b}: the pod sees ${before} bytes before the resize`);
      // s3fs and rclone report a size of their own in df, not the volume's (seen: 16 EiB for
      // s3fs, 0 for rclone), so for S3 only the stats below can tell the resize.
      if (!isS3(b)) assert.ok(before > 0 && before <= 1.5 * GiB, `size before the resize: ${before}`);
      await core().patchNamespacedPersistentVolumeClaim({ name: `data-${b}`, namespace: APP, body: { spec: { resources: { requests: { storage: '2Gi' } } } } }, MERGE_PATCH);
      if (!isS3(b)) {
        await timed(`${b} resize seen in the pod`, () =>
          api().waitFor('the pod to see more than 1.5 GiB', async () => (((await sizes()).at(-1) ?? 0) > 1.5 * GiB ? true : undefined), 300_000, 1000),
        );
      }
      await timed(`${b} resize seen in volume stats`, () =>
        api().waitFor('stats to show more than 1.5 GiB', async () => {
          const v = await volumeStats(api(), lab!.nodeName, writer(b), 'data');
          return v && v.capacityBytes > 1.5 * GiB ? true : undefined;
        }, 120_000, 1000),
      );
      const pod = await readPod(api(), writer(b));
      assert.equal(pod.status?.containerStatuses?.[0]?.restartCount, 0);
      assert.equal((await readPvc(`data-${b}`)).status?.capacity?.storage, '2Gi');
    });
  }

  it('6. a ReadWriteOncePod PVC admits a single pod at a time', async () => {
    await Promise.all(
      BACKENDS.map(async (b) => {
        const vol = [{ name: 'data', persistentVolumeClaim: { claimName: `once-${b}` } }];
        const first = busyboxPod(`once-first-${b}`, 'echo "from the first pod" > /data/once && sync /data/once && sleep 3600', { volumes: vol, securityContext: sc, restartPolicy: 'Always' });
        const second = busyboxPod(`once-second-${b}`, 'cat /data/once', { volumes: vol, securityContext: sc });
        await createPvc(pvc(b, `once-${b}`, '1Gi', undefined, 'ReadWriteOncePod'));
        await createAndWait(api(), first, ['Running'], 180_000);
        await core().createNamespacedPod({ namespace: APP, body: second });
        // The scheduler holds the second pod back while the first uses the volume.
        const why = await api().waitFor(`${b}: the second pod held back`, async () => {
          const p = await readPod(api(), second);
          const c = p.status?.conditions?.find((x) => x.type === 'PodScheduled');
          return c?.status === 'False' ? `${c.reason}: ${c.message}` : undefined;
        }, 60_000, 500);
        say(`${b}: second pod of a ReadWriteOncePod PVC: ${why}`);
        assert.match(why, /ReadWriteOncePod/);
        await sleep(5000);
        assert.equal((await readPod(api(), second)).status?.phase, 'Pending', 'still held back 5 s later');
        const t = Date.now();
        await deletePodAndWait(api(), first);
        const done = await api().waitFor(`${b}: the second pod to run`, async () => {
          const phase = (await readPod(api(), second)).status?.phase ?? '';
          return ['Succeeded', 'Failed'].includes(phase) ? phase : undefined;
        }, 180_000, 500);
        times[`${b} RWOP second pod done after the first went`] = (Date.now() - t) / 1000;
        assert.equal(done, 'Succeeded');
        assert.equal((await podLog(api(), second)).trim(), 'from the first pod');
        await deletePodAndWait(api(), second);
        await deletePvc(`once-${b}`);
      }),
    );
  });

  it('4. the node plugin pod deleted under FUSE volumes: its new pod heals them, and a pod with HostToContainer reads and writes again without a restart', async () => {
    // rbd-fuse too: its staging mount is xfs on a loop device over the FUSE file, which the new
    // pod stages again on top of the dead one (the pod's target, a peer of it, gets it as well).
    const healed: Backend[] = BACKENDS;
    // rbd fsyncs each write: a file system over a dead rbd-fuse takes writes into its page cache
    // and answers reads from it, and fails only when they reach the device.
    const probe = (b: Backend) =>
      busyboxPod(`probe-${b}`, `i=0; while true; do i=$((i+1)); if echo $i > /data/probe${b === 'rbd' ? ' && sync /data/probe' : ''} && [ "$(cat /data/probe)" = "$i" ]; then echo "ok $i"; else echo "fail $i"; fi; sleep 1; done`, {
        volumes: [{ name: 'data', persistentVolumeClaim: { claimName: `restored-${b}` } }],
        securityContext: sc,
        restartPolicy: 'Always',
        mountPropagation: 'HostToContainer',
      });
    const lines = async (b: Backend) => (await podLog(api(), probe(b))).split('\n').filter((l) => /^(ok|fail) \d+$/.test(l));
    for (const b of healed) await createAndWait(api(), probe(b), ['Running'], 180_000);
    for (const b of healed) await api().waitFor(`${b}: the probe pod writing`, async () => ((await lines(b)).at(-1)?.startsWith('ok') ? true : undefined), 60_000, 500);
    const [old] = await strataPods('node');
    assert.ok(old, 'the node plugin pod');
    const t = Date.now();
    await core().deleteNamespacedPod({ name: old.metadata!.name!, namespace: NS });
    for (const b of healed) await api().waitFor(`${b}: the probe pod to see its mount die`, async () => ((await lines(b)).at(-1)?.startsWith('fail') ? true : undefined), 120_000, 500);
    times['node plugin pod deleted: mounts dead after'] = (Date.now() - t) / 1000;
    await api().waitFor('a new node plugin pod running', async () => {
      const ps = await strataPods('node');
      return ps.length === 1 && ps[0]!.metadata?.name !== old.metadata?.name && ps[0]!.status?.phase === 'Running' ? true : undefined;
    }, 180_000, 500);
    times['node plugin pod deleted: new pod running after'] = (Date.now() - t) / 1000;
    await Promise.all(
      healed.map(async (b) => {
        await api().waitFor(`${b}: the probe pod writing and reading again`, async () => {
          const ls = await lines(b);
          const lastFail = ls.map((l) => l.startsWith('fail')).lastIndexOf(true);
          return lastFail >= 0 && ls.slice(lastFail + 1).filter((l) => l.startsWith('ok')).length >= 2 ? true : undefined;
        }, 180_000, 1000);
        times[`${b} healed in the running pod after the node plugin pod was deleted`] = (Date.now() - t) / 1000;
        const pod = await readPod(api(), probe(b));
        assert.equal(pod.status?.containerStatuses?.[0]?.restartCount, 0, `${b}: the probe pod was not restarted`);
      }),
    );
    for (const b of healed) await deletePodAndWait(api(), probe(b));
  });

  it('5. Ceph (for the controller) and the S3 endpoint (for all) unreachable for 3 minutes: no Strata pod restarted, calls fail clearly, then recover', async () => {
    const restarts = async () =>
      Object.fromEntries([...(await strataPods('controller')), ...(await strataPods('node'))].flatMap((p) => (p.status?.containerStatuses ?? []).map((c) => [`${p.metadata?.name}/${c.name}`, c.restartCount])));
    const before = await restarts();
    // One outage for every backend. The controller's pod (in the pod network) loses the monitor
    // and every Ceph daemon (with the monitor alone, a client already connected to the mgr still
    // creates subvolumes: seen), everyone loses the S3 endpoint; the Ceph daemons keep talking to
    // each other, and the apiserver (6443) stays reachable.
    const rules = [
      ['-s', POD_SUBNET, '-d', ceph!.address, '-p', 'tcp', '-m', 'multiport', '--dports', '3300,6789,6800:7300', '-j', 'DROP'],
      ['-d', ceph!.address, '-p', 'tcp', '--dport', String(RGW_PORT), '-j', 'DROP'],
    ];
    const t = Date.now();
    for (const r of rules) await run('iptables', ['-w', '5', '-I', 'INPUT', ...r], { timeoutMs: 30_000 });
    const messages: Record<string, string> = {};
    const outageBackends: Backend[] = ['rbd', 'cephfs', 's3'];
    let outage = true;
    try {
      for (const b of outageBackends) await createPvc(pvc(b, `outage-${b}`, '1Gi'));
      const failures = async () => {
        const events = (await core().listNamespacedEvent({ namespace: APP, fieldSelector: 'reason=ProvisioningFailed' })).items;
        for (const b of outageBackends) {
          const e = events.filter((x) => x.involvedObject?.name === `outage-${b}`).at(-1);
          if (e?.message) messages[b] = e.message;
        }
        return outageBackends.every((b) => messages[b]) ? true : undefined;
      };
      await api().waitFor('every outage PVC to have a provisioning failure', failures, 175_000, 2000).catch(async (e: Error) => {
        // What the PVCs and the controller said instead.
        const events = (await core().listNamespacedEvent({ namespace: APP })).items.filter((x) => String(x.involvedObject?.name).startsWith('outage-'));
        say(`outage events: ${JSON.stringify(events.map((x) => [x.involvedObject.name, x.reason, x.count, x.message]))}`);
        const [c] = await strataPods('controller');
        for (const container of ['strata', 'csi-provisioner']) say(`${container} log: ${(await podLog(api(), { metadata: { name: c!.metadata!.name!, namespace: NS } }, container)).split('\n').slice(-30).join('\n')}`);
        throw e;
      });
      for (const b of outageBackends) {
        say(`${b} during the outage: ${messages[b]}`);
        assert.match(messages[b]!, /code = (Unavailable|DeadlineExceeded)/, `${b}: a clear error`);
        assert.equal((await readPvc(`outage-${b}`)).status?.phase, 'Pending');
      }
      while (Date.now() - t < 180_000) {
        assert.deepEqual(await restarts(), before, 'no Strata container restarted during the outage');
        await sleep(10_000);
      }
      for (const r of rules) await run('iptables', ['-w', '5', '-D', 'INPUT', ...r], { timeoutMs: 30_000 });
      outage = false;
      times['outage'] = (Date.now() - t) / 1000;
      const back = Date.now();
      await Promise.all(outageBackends.map((b) => api().waitFor(`PVC outage-${b} bound after the outage`, bound(`outage-${b}`), 300_000, 1000)));
      times['every outage PVC bound after the outage ended'] = (Date.now() - back) / 1000;
      assert.deepEqual(await restarts(), before, 'no Strata container restarted');
    } finally {
      if (outage) for (const r of rules) await run('iptables', ['-w', '5', '-D', 'INPUT', ...r], { timeoutMs: 30_000 });
      for (const b of outageBackends) await deletePvc(`outage-${b}`);
    }
  });

  it('7. everything deleted: no PV, VolumeAttachment, VolumeSnapshotContent, rbd image, subvolume, bucket, mount or FUSE process is left', async () => {
    for (const b of BACKENDS) {
      await deletePodAndWait(api(), writer(b));
      await ignoreNotFound(api().custom.deleteNamespacedCustomObject({ ...SNAPS, name: `snap-${b}` }));
      for (const name of [`data-${b}`, `restored-${b}`]) await deletePvc(name);
    }
    await timed('all gone', () =>
      api().waitFor('PVs, attachments, snapshot contents and images gone', async () => {
        const pvs = (await core().listPersistentVolume()).items;
        const vas = (await api().storage.listVolumeAttachment()).items;
        const vscs = ((await api().custom.listClusterCustomObject({ ...SNAPSHOT_GROUP, plural: 'volumesnapshotcontents' })) as Obj).items as Obj[];
        const images = (await ceph!.rbd(['ls', 'rbd'])).trim();
        const subvolumes = JSON.parse(await ceph!.ceph(['fs', 'subvolume', 'ls', 'cephfs', '--group_name', 'csi', '-f', 'json'])) as unknown[];
        // The shared bucket stays (it is the class's, not a volume's), empty.
        const buckets = (JSON.parse((await run('radosgw-admin', ['-c', ceph!.conf, 'bucket', 'list'], { timeoutMs: 30_000 })).stdout) as string[]).filter((n) => n !== SHARED_BUCKET);
        const shared = await listObjects(labS3Client(ceph!), SHARED_BUCKET, '');
        return pvs.length + vas.length + vscs.length + subvolumes.length + buckets.length + shared.length === 0 && images === '' ? true : undefined;
      }, 180_000, 1000),
    );
    say(`rbd trash after the deletes: ${JSON.stringify((await ceph!.rbd(['trash', 'ls', 'rbd'])).trim())}`);
    // On the node: no staging or state mount, no pod target, no FUSE daemon.
    const left = [
      ...(await leftovers(`${KUBELET_DIR}/plugins/`)),
      ...(await readMountInfo()).filter((m) => m.mountPoint.startsWith(KUBELET_DIR) && m.mountPoint.includes('/volumes/kubernetes.io~csi/')).map((m) => `mount ${m.mountPoint}`),
    ];
    assert.deepEqual(left, [], 'nothing of a volume left on the node');
  });

  it('helm uninstall removes the pods, and kubelet forgets the driver', async () => {
    execFileSync(helmBin, ['uninstall', 'strata', '--kubeconfig', lab!.kubeconfig, '-n', NS, '--wait', '--timeout', '120s'], { timeout: 180_000 });
    await api().waitFor('Strata pods gone', async () => ((await strataPods('controller')).length + (await strataPods('node')).length === 0 ? true : undefined), 120_000, 500);
    await api().waitFor('strata.csi.dev gone from CSINode', async () => ((await registered()) ? undefined : true), 60_000);
  });
});
