import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { hostname, networkInterfaces, tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadAllYaml, type V1CustomResourceDefinition, type V1Pod } from '@kubernetes/client-node';
import { run, runAllowFail } from '../../src/util/exec.js';
import { ignoreNotFound, KubeApi } from './api.js';
import { binaryImage, buildImage, busyboxImage, pauseImage, PAUSE_IMAGE } from './images.js';
import { ensureBuilt, K8S_CACHE, readBuiltPaths, type BuiltPaths } from './paths.js';
import { hasExited } from '../../src/mount/fuse-process.js';

/**
 * A throwaway single-node Kubernetes built from the binaries test/k8s/build.sh caches: etcd,
 * kube-apiserver, kube-controller-manager, kube-scheduler, containerd with the bridge CNI, and
 * kubelet, all host processes. Choices and pitfalls come from ../shared/k8s-lab/FACTS.md: kubelet
 * on cgroup v1 with cgroupfs, containerd's restrict_oom_score_adj (root lacks CAP_SYS_RESOURCE),
 * /var/lib/kubelet made rshared for mount propagation, the node's real address for the
 * apiserver's kubelet connections (the hostname resolves to 127.0.0.1), local images only.
 *
 * The ports are fixed and kubelet owns /var/lib/kubelet: one lab per machine at a time.
 */

export const KUBELET_DIR = '/var/lib/kubelet';
const ETCD_PORT = 12379;
const ETCD_PEER_PORT = 12380;
export const APISERVER_PORT = 6443;
const KUBELET_PORT = 10250;
const SERVICE_CIDR = '10.0.0.0/24';
const SERVICE_IP = '10.0.0.1';
export const POD_SUBNET = '10.88.0.0/16';
const BRIDGE = 'strata0';
const CNI_BIN = '/usr/lib/cni';
const STATE_FILE = '/run/strata-k8s-lab.json';

export interface KubeLabOptions {
  log?: (msg: string) => void;
  /**
   * What a CSI driver's chart needs (`build.sh sidecars`): the VolumeSnapshot CRDs, the
   * snapshot-controller, and images of the CSI sidecars and the two stand-ins (see sidecarImages).
   */
  csi?: boolean;
}

interface Proc {
  name: string;
  pid: number;
}

/** What stop() needs, kept in STATE_FILE so that a later run can stop a lab left running. */
interface LabState {
  dir: string;
  owner: number;
  procs: Proc[];
  netnsBefore: string[];
  kubeletBound: boolean;
}

export class KubeLab {
  readonly dir: string;
  readonly nodeName: string;
  readonly nodeIP: string;
  readonly built: BuiltPaths;
  /** The admin kubeconfig (system:masters), for a client library or kubectl by hand. */
  readonly kubeconfig: string;
  readonly api: KubeApi;
  readonly containerdSocket: string;
  /** Seconds each start-up phase took, for the report. */
  readonly timings: Record<string, number> = {};
  private readonly procs: Proc[] = [];
  private readonly say: (msg: string) => void;
  private readonly opts: KubeLabOptions;
  private netnsBefore = new Set<string>();
  private kubeletBound = false;

  private constructor(opts: KubeLabOptions, built: BuiltPaths, stale?: LabState) {
    this.opts = opts;
    this.say = opts.log ?? (() => {});
    this.built = built;
    this.dir = stale?.dir ?? mkdtempSync(path.join(tmpdir(), 'strata-k8s-'));
    if (stale) {
      this.procs.push(...stale.procs);
      this.netnsBefore = new Set(stale.netnsBefore);
      this.kubeletBound = stale.kubeletBound;
    }
    this.nodeName = nodeNameOf(hostname());
    this.nodeIP = hostAddress();
    this.kubeconfig = this.p('kubeconfig', 'admin.json');
    this.containerdSocket = this.p('containerd', 'containerd.sock');
    this.api = new KubeApi(this.kubeconfig);
  }

  static async start(opts: KubeLabOptions = {}): Promise<KubeLab> {
    await KubeLab.stopStale(opts.log);
    await refuseIfRunning();
    const built = ensureBuilt(opts.csi ? ['apt', 'standins', 'k8s', 'sidecars'] : ['apt', 'standins', 'k8s']);
    const lab = new KubeLab(opts, built);
    try {
      await lab.boot();
      return lab;
    } catch (e) {
      const tail = lab.logTail();
      await lab.stop();
      throw new Error(`Kubernetes lab failed to start: ${(e as Error).message}\n${tail}`);
    }
  }

  /**
   * Stops a lab whose test process died without stopping it (kill -9, a crash): its state file
   * names it, and its owner is gone. A lab whose owner lives is left alone.
   */
  static async stopStale(log?: (msg: string) => void): Promise<boolean> {
    if (!existsSync(STATE_FILE)) return false;
    const st = JSON.parse(readFileSync(STATE_FILE, 'utf8')) as LabState;
    if (st.owner !== process.pid && alive(st.owner)) return false;
    log?.(`stopping a stale Kubernetes lab (${st.dir}, owner ${st.owner} gone)`);
    await new KubeLab({ log }, readBuiltPaths(), st).stop();
    return true;
  }

  private saveState(): void {
    const st: LabState = { dir: this.dir, owner: process.pid, procs: this.procs, netnsBefore: [...this.netnsBefore], kubeletBound: this.kubeletBound };
    writeFileSync(STATE_FILE, JSON.stringify(st));
  }

  p(...parts: string[]): string {
    return path.join(this.dir, ...parts);
  }

  /** Runs ctr against the lab's containerd, in the CRI namespace. */
  async ctr(args: string[], timeoutMs = 120_000): Promise<string> {
    return (await run('ctr', ['--address', this.containerdSocket, '-n', 'k8s.io', ...args], { timeoutMs })).stdout;
  }

  /** Imports a docker-archive image tar into the CRI's image store. */
  async importImage(tar: string): Promise<void> {
    await this.ctr(['images', 'import', tar], 600_000);
  }

  private async boot(): Promise<void> {
    const t0 = Date.now();
    const phase = (name: string, since: number) => {
      this.timings[name] = (Date.now() - since) / 1000;
      this.say(`${name}: ${this.timings[name]} s`);
    };
    for (const d of ['pki', 'kubeconfig', 'log', 'etcd', 'containerd', 'cni/net.d', 'cni/ipam', 'images', 'pod-logs']) mkdirSync(this.p(d), { recursive: true });
    this.netnsBefore = new Set(listNetns());
    this.saveState();

    let t = Date.now();
    await this.writePki();
    this.writeKubeconfigs();
    phase('certificates', t);

    t = Date.now();
    this.startEtcd();
    this.startContainerd();
    await this.waitFor('etcd', async () => (await fetch(`http://127.0.0.1:${ETCD_PORT}/health`)).ok);
    this.startApiserver();
    const images = Promise.all([buildImage(this.p('images'), pauseImage(this.built.PAUSE)), buildImage(this.p('images'), busyboxImage())]);
    await this.waitFor('containerd', async () => existsSync(this.containerdSocket) && (await runAllowFail('ctr', ['--address', this.containerdSocket, 'version'], { timeoutMs: 5000 })).exitCode === 0);
    for (const tar of await images) await this.importImage(tar);
    phase('containerd and images', t);
    await this.waitFor('kube-apiserver', () => this.api.ready(), 120_000);
    phase('kube-apiserver ready', t);

    t = Date.now();
    this.startControllerManager();
    this.startScheduler();
    this.startKubeProxy();
    await this.startKubelet();
    await this.api.waitFor(
      `node ${this.nodeName} Ready`,
      async () => {
        const node = await this.api.core.readNode({ name: this.nodeName });
        return node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? true : undefined;
      },
      120_000,
    );
    // Pods are refused until the controller-manager has made the namespace's default account.
    await this.api.waitFor('default service account', () => this.api.core.readNamespacedServiceAccount({ name: 'default', namespace: 'default' }), 60_000);
    phase('node ready', t);

    if (this.opts.csi) {
      t = Date.now();
      await this.installSnapshotSupport();
      for (const [ref, bin] of this.sidecarBinaries()) await this.importImage(await buildImage(path.join(K8S_CACHE, 'images'), binaryImage(ref, bin), { reuse: true }));
      phase('snapshot CRDs, snapshot-controller, sidecar images', t);
    }
    this.timings.total = (Date.now() - t0) / 1000;
    this.say(`Kubernetes lab up in ${this.timings.total} s (node ${this.nodeName}, ${this.nodeIP}, ${this.dir})`);
  }

  // --- certificates and kubeconfigs -------------------------------------------------------

  private async writePki(): Promise<void> {
    const pki = this.p('pki');
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    await run('openssl', ['req', '-x509', ...ec, '-keyout', `${pki}/ca.key`, '-out', `${pki}/ca.crt`, '-days', '7', '-subj', '/CN=strata-lab-ca']);
    const leaf = async (name: string, subj: string, ext: string[]) => {
      await run('openssl', ['req', '-new', ...ec, '-keyout', `${pki}/${name}.key`, '-out', `${pki}/${name}.csr`, '-subj', subj]);
      writeFileSync(`${pki}/${name}.ext`, ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', ...ext].join('\n') + '\n');
      await run('openssl', [
        'x509', '-req', '-in', `${pki}/${name}.csr`, '-CA', `${pki}/ca.crt`, '-CAkey', `${pki}/ca.key`,
        '-set_serial', `0x${randomBytes(16).toString('hex')}`, '-days', '7', '-extfile', `${pki}/${name}.ext`, '-out', `${pki}/${name}.crt`,
      ]);
    };
    const client = ['extendedKeyUsage=clientAuth'];
    const sans = [
      'DNS:kubernetes', 'DNS:kubernetes.default', 'DNS:kubernetes.default.svc', 'DNS:kubernetes.default.svc.cluster.local', 'DNS:localhost',
      `DNS:${this.nodeName}`, 'IP:127.0.0.1', `IP:${this.nodeIP}`, `IP:${SERVICE_IP}`,
    ];
    await leaf('apiserver', '/CN=kube-apiserver', ['extendedKeyUsage=serverAuth', `subjectAltName=${sans.join(',')}`]);
    await leaf('admin', '/O=system:masters/CN=strata-lab-admin', client);
    await leaf('apiserver-kubelet-client', '/O=system:masters/CN=kube-apiserver-kubelet-client', client);
    await leaf('controller-manager', '/CN=system:kube-controller-manager', client);
    await leaf('scheduler', '/CN=system:kube-scheduler', client);
    await leaf('kubelet', `/O=system:nodes/CN=system:node:${this.nodeName}`, client);
    await leaf('kube-proxy', '/CN=system:kube-proxy', client);
    await leaf('kubelet-serving', `/CN=${this.nodeName}`, ['extendedKeyUsage=serverAuth', `subjectAltName=DNS:${this.nodeName},IP:${this.nodeIP},IP:127.0.0.1`]);
    // The service-account token signing key.
    await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', `${pki}/sa.key`]);
    await run('openssl', ['pkey', '-in', `${pki}/sa.key`, '-pubout', '-out', `${pki}/sa.pub`]);
  }

  private writeKubeconfigs(): void {
    for (const user of ['admin', 'controller-manager', 'scheduler', 'kubelet', 'kube-proxy']) {
      const cfg = {
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'lab', cluster: { server: `https://127.0.0.1:${APISERVER_PORT}`, 'certificate-authority': this.p('pki', 'ca.crt') } }],
        users: [{ name: user, user: { 'client-certificate': this.p('pki', `${user}.crt`), 'client-key': this.p('pki', `${user}.key`) } }],
        contexts: [{ name: 'lab', context: { cluster: 'lab', user } }],
        'current-context': 'lab',
      };
      writeFileSync(this.p('kubeconfig', `${user}.json`), JSON.stringify(cfg, null, 1), { mode: 0o600 });
    }
  }

  // --- processes -------------------------------------------------------------------------

  private spawnProc(name: string, file: string, args: string[]): void {
    const out = openSync(this.p('log', `${name}.log`), 'a');
    const child = spawn(file, args, { detached: true, stdio: ['ignore', out, out] });
    closeSync(out);
    child.unref();
    if (!child.pid) throw new Error(`could not start ${name}`);
    this.procs.push({ name, pid: child.pid });
    this.saveState();
  }

  private bin(name: string): string {
    return path.join(this.built.K8S_BIN, name);
  }

  private startEtcd(): void {
    this.spawnProc('etcd', 'etcd', [
      '--name', 'lab', '--data-dir', this.p('etcd'),
      '--listen-client-urls', `http://127.0.0.1:${ETCD_PORT}`, '--advertise-client-urls', `http://127.0.0.1:${ETCD_PORT}`,
      '--listen-peer-urls', `http://127.0.0.1:${ETCD_PEER_PORT}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${ETCD_PEER_PORT}`,
      '--initial-cluster', `lab=http://127.0.0.1:${ETCD_PEER_PORT}`,
      // A lab's etcd needs no fsync per write: it dies with the lab.
      '--unsafe-no-fsync',
    ]);
  }

  private startApiserver(): void {
    const pki = this.p('pki');
    this.spawnProc('kube-apiserver', this.bin('kube-apiserver'), [
      `--etcd-servers=http://127.0.0.1:${ETCD_PORT}`,
      `--secure-port=${APISERVER_PORT}`, '--bind-address=0.0.0.0', `--advertise-address=${this.nodeIP}`,
      `--tls-cert-file=${pki}/apiserver.crt`, `--tls-private-key-file=${pki}/apiserver.key`, `--client-ca-file=${pki}/ca.crt`,
      `--service-account-key-file=${pki}/sa.pub`, `--service-account-signing-key-file=${pki}/sa.key`,
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      '--authorization-mode=Node,RBAC', '--enable-admission-plugins=NodeRestriction',
      `--kubelet-client-certificate=${pki}/apiserver-kubelet-client.crt`, `--kubelet-client-key=${pki}/apiserver-kubelet-client.key`,
      `--kubelet-certificate-authority=${pki}/ca.crt`,
      // The hostname resolves to 127.0.0.1, which the node proxy (logs, exec, stats) refuses.
      '--kubelet-preferred-address-types=InternalIP,Hostname',
      '--allow-privileged=true', '--profiling=false', '--v=1',
    ]);
  }

  private startControllerManager(): void {
    const kc = this.p('kubeconfig', 'controller-manager.json');
    const pki = this.p('pki');
    this.spawnProc('kube-controller-manager', this.bin('kube-controller-manager'), [
      `--kubeconfig=${kc}`, `--authentication-kubeconfig=${kc}`, `--authorization-kubeconfig=${kc}`,
      '--bind-address=127.0.0.1', '--leader-elect=false', '--use-service-account-credentials=true',
      `--service-account-private-key-file=${pki}/sa.key`, `--root-ca-file=${pki}/ca.crt`,
      `--cluster-signing-cert-file=${pki}/ca.crt`, `--cluster-signing-key-file=${pki}/ca.key`,
      `--service-cluster-ip-range=${SERVICE_CIDR}`, '--profiling=false', '--v=1',
    ]);
  }

  private startScheduler(): void {
    const kc = this.p('kubeconfig', 'scheduler.json');
    this.spawnProc('kube-scheduler', this.bin('kube-scheduler'), [
      `--kubeconfig=${kc}`, `--authentication-kubeconfig=${kc}`, `--authorization-kubeconfig=${kc}`,
      '--bind-address=127.0.0.1', '--leader-elect=false', '--profiling=false', '--v=1',
    ]);
  }

  /** Routes Service IPs, the kubernetes Service's above all: pods reach the apiserver by it. */
  private startKubeProxy(): void {
    this.spawnProc('kube-proxy', this.bin('kube-proxy'), [
      `--kubeconfig=${this.p('kubeconfig', 'kube-proxy.json')}`, `--hostname-override=${this.nodeName}`,
      '--proxy-mode=iptables', `--cluster-cidr=${POD_SUBNET}`,
      // Leave the host's conntrack and route_localnet sysctls as they are.
      '--conntrack-max-per-core=0', '--conntrack-tcp-timeout-established=0', '--conntrack-tcp-timeout-close-wait=0',
      '--iptables-localhost-nodeports=false',
      '--metrics-bind-address=127.0.0.1:10249', '--healthz-bind-address=127.0.0.1:10256', '--v=1',
    ]);
  }

  private startContainerd(): void {
    const c = this.p('containerd');
    const cri = 'plugins."io.containerd.grpc.v1.cri"';
    writeFileSync(
      path.join(c, 'config.toml'),
      `version = 2
root = "${c}/root"
state = "${c}/state"
# opt would create /opt/containerd; the others only log that they cannot work here.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "${this.containerdSocket}"

[${cri}]
  sandbox_image = "${PAUSE_IMAGE}"
  # Root lacks CAP_SYS_RESOURCE here: runc must not raise oom_score_adj (every sandbox fails).
  restrict_oom_score_adj = true
  [${cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [${cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [${cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [${cri}.cni]
    bin_dir = "${CNI_BIN}"
    conf_dir = "${this.p('cni', 'net.d')}"
`,
    );
    // No masquerade: pods reach the node's addresses through the bridge, and no iptables rule
    // outlives the lab.
    writeFileSync(
      this.p('cni', 'net.d', '10-strata-lab.conflist'),
      JSON.stringify({
        cniVersion: '0.4.0',
        name: 'strata-lab',
        plugins: [
          {
            type: 'bridge', bridge: BRIDGE, isGateway: true, ipMasq: false, hairpinMode: true,
            ipam: { type: 'host-local', ranges: [[{ subnet: POD_SUBNET }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: this.p('cni', 'ipam') },
          },
          { type: 'loopback' },
        ],
      }),
    );
    this.spawnProc('containerd', 'containerd', ['--config', path.join(c, 'config.toml')]);
  }

  private async startKubelet(): Promise<void> {
    // Bidirectional and HostToContainer propagation need a shared mount; the root namespace
    // here is private.
    mkdirSync(KUBELET_DIR, { recursive: true });
    if (mountPoints().includes(KUBELET_DIR)) throw new Error(`${KUBELET_DIR} is already a mount point: is another lab running?`);
    await run('mount', ['--bind', KUBELET_DIR, KUBELET_DIR]);
    this.kubeletBound = true;
    this.saveState();
    await run('mount', ['--make-rshared', KUBELET_DIR]);
    const pki = this.p('pki');
    const config = {
      apiVersion: 'kubelet.config.k8s.io/v1beta1',
      kind: 'KubeletConfiguration',
      address: '0.0.0.0',
      port: KUBELET_PORT,
      readOnlyPort: 0,
      healthzBindAddress: '127.0.0.1',
      tlsCertFile: `${pki}/kubelet-serving.crt`,
      tlsPrivateKeyFile: `${pki}/kubelet-serving.key`,
      authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: `${pki}/ca.crt` } },
      authorization: { mode: 'Webhook' },
      // cgroup v1 here: kubelet 1.34 refuses it unless told otherwise.
      cgroupDriver: 'cgroupfs',
      failCgroupV1: false,
      containerRuntimeEndpoint: `unix://${this.containerdSocket}`,
      clusterDomain: 'cluster.local',
      failSwapOn: false,
      resolvConf: '/etc/resolv.conf',
      // Imported images cannot be pulled again: never collect them, never evict for disk.
      imageGCHighThresholdPercent: 100,
      evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '1%', 'imagefs.available': '1%', 'nodefs.inodesFree': '1%' },
      serializeImagePulls: false,
      // Volume stats (NodeGetVolumeStats for CSI volumes) every 5 s instead of every minute: the
      // tests wait for a resize to show.
      volumeStatsAggPeriod: '5s',
      volumePluginDir: path.join(KUBELET_DIR, 'volumeplugins'),
      podLogsDir: this.p('pod-logs'),
      registerNode: true,
    };
    writeFileSync(this.p('kubelet-config.json'), JSON.stringify(config, null, 1));
    this.spawnProc('kubelet', this.bin('kubelet'), [
      `--config=${this.p('kubelet-config.json')}`,
      `--kubeconfig=${this.p('kubeconfig', 'kubelet.json')}`,
      `--root-dir=${KUBELET_DIR}`,
      `--hostname-override=${this.nodeName}`,
      `--node-ip=${this.nodeIP}`,
      '--v=1',
    ]);
  }

  /**
   * The sidecar images imported with `csi: true`, keyed as the chart's `sidecars` values. The
   * stand-ins' tag is their build's content hash.
   */
  get sidecarImages(): Record<'provisioner' | 'attacher' | 'resizer' | 'snapshotter' | 'livenessprobe' | 'nodeDriverRegistrar', string> {
    const b = this.built;
    const standins = path.basename(path.dirname(path.dirname(b.LIVENESSPROBE)));
    return {
      provisioner: `strata.local/csi-provisioner:${b.PROVISIONER_VERSION}`,
      attacher: `strata.local/csi-attacher:${b.ATTACHER_VERSION}`,
      resizer: `strata.local/csi-resizer:${b.RESIZER_VERSION}`,
      snapshotter: `strata.local/csi-snapshotter:${b.SNAPSHOTTER_VERSION}`,
      livenessprobe: `strata.local/livenessprobe:${standins}`,
      nodeDriverRegistrar: `strata.local/csi-node-driver-registrar:${standins}`,
    };
  }

  private sidecarBinaries(): Array<[string, string]> {
    const i = this.sidecarImages;
    const b = this.built;
    return [
      [i.provisioner, b.CSI_PROVISIONER],
      [i.attacher, b.CSI_ATTACHER],
      [i.resizer, b.CSI_RESIZER],
      [i.snapshotter, b.CSI_SNAPSHOTTER],
      [i.livenessprobe, b.LIVENESSPROBE],
      [i.nodeDriverRegistrar, b.NODE_DRIVER_REGISTRAR],
    ];
  }

  private async installSnapshotSupport(): Promise<void> {
    for (const f of readdirSync(this.built.SNAPSHOT_CRDS).filter((n) => n.endsWith('.yaml'))) {
      // loadAllYaml gives the client's typed objects: serialised back, x-kubernetes-* keys survive.
      for (const crd of loadAllYaml(readFileSync(path.join(this.built.SNAPSHOT_CRDS, f), 'utf8')) as Array<V1CustomResourceDefinition | null>) {
        if (crd?.kind === 'CustomResourceDefinition') await this.api.crds.createCustomResourceDefinition({ body: crd });
      }
    }
    for (const name of ['volumesnapshots', 'volumesnapshotcontents', 'volumesnapshotclasses']) {
      await this.api.waitFor(`CRD ${name} established`, async () => {
        const crd = await this.api.crds.readCustomResourceDefinition({ name: `${name}.snapshot.storage.k8s.io` });
        return crd.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True') ? true : undefined;
      });
    }
    // A cluster add-on, not part of the chart: it runs beside the controller-manager.
    this.spawnProc('snapshot-controller', this.built.SNAPSHOT_CONTROLLER, [`--kubeconfig=${this.kubeconfig}`, '--leader-election=false', '--v=2']);
  }

  private async waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await check().catch(() => false)) return;
      const dead = this.procs.find((p) => !alive(p.pid));
      if (dead) throw new Error(`${dead.name} exited while waiting for ${what}`);
      await sleep(100);
    }
    throw new Error(`timed out waiting for ${what}`);
  }

  logTail(lines = 15): string {
    const out: string[] = [];
    for (const d of this.procs) {
      const f = this.p('log', `${d.name}.log`);
      if (existsSync(f)) out.push(`--- ${d.name}`, ...readFileSync(f, 'utf8').trim().split('\n').slice(-lines));
    }
    return out.join('\n');
  }

  // --- stop ------------------------------------------------------------------------------

  /**
   * Deletes every pod so that kubelet tears sandboxes and volumes down as in production, then
   * stops the processes, kills what containerd's shims still run, and unmounts what is left:
   * nothing of the lab runs or stays mounted afterwards.
   */
  async stop(): Promise<void> {
    const has = (name: string) => this.procs.some((p) => p.name === name && alive(p.pid));
    if (has('kubelet') && has('kube-apiserver')) {
      // Without the controllers no DaemonSet or ReplicaSet brings a deleted pod back.
      await this.kill(['kube-controller-manager', 'kube-scheduler', 'snapshot-controller']);
      await this.drainPods().catch((e: Error) => this.say(`pod drain: ${e.message}`));
    }
    await this.kill(['kubelet', 'kube-proxy', 'kube-controller-manager', 'kube-scheduler', 'snapshot-controller']);
    await killShims(this.containerdSocket);
    await this.kill(['containerd']);
    await this.kill(['kube-apiserver']);
    await this.kill(['etcd']);
    await this.kill(this.procs.map((p) => p.name));
    const leftovers = await this.unmountAll();
    await runAllowFail('ip', ['link', 'del', BRIDGE]);
    removeKubepodsCgroups();
    removeContainerLogLinks(this.dir);
    await removeKubeChains();
    if (existsSync(STATE_FILE) && JSON.parse(readFileSync(STATE_FILE, 'utf8')).dir === this.dir) rmSync(STATE_FILE, { force: true });
    if (leftovers.length) throw new Error(`lab stopped but these stay mounted: ${leftovers.join(', ')}`);
    // Only now, with nothing mounted below: a FUSE or bind mount would take its data with it.
    if (this.kubeletBound) rmSync(KUBELET_DIR, { recursive: true, force: true });
    rmSync(this.dir, { recursive: true, force: true });
  }

  /**
   * App pods first, DaemonSet pods (a CSI node plugin) last: kubelet needs the node plugin to
   * unmount the app pods' volumes.
   */
  private async drainPods(): Promise<void> {
    const list = async () => (await this.api.core.listPodForAllNamespaces()).items;
    const daemon = (p: V1Pod) => (p.metadata?.ownerReferences ?? []).some((o) => o.kind === 'DaemonSet');
    for (const wave of [(p: V1Pod) => !daemon(p), daemon]) {
      for (const pod of (await list()).filter(wave))
        await ignoreNotFound(this.api.core.deleteNamespacedPod({ name: pod.metadata!.name!, namespace: pod.metadata!.namespace!, gracePeriodSeconds: 1 }));
      await this.api.waitFor('pods to be gone', async () => ((await list()).some(wave) ? undefined : true), 90_000, 500);
    }
  }

  private async kill(names: string[]): Promise<void> {
    const group = this.procs.filter((p) => names.includes(p.name) && alive(p.pid));
    for (const p of group) signal(p.pid, 'SIGTERM');
    const deadline = Date.now() + 10_000;
    while (group.some((p) => alive(p.pid)) && Date.now() < deadline) await sleep(50);
    for (const p of group) if (alive(p.pid)) signal(p.pid, 'SIGKILL');
    for (let i = 0; i < 40 && group.some((p) => alive(p.pid)); i++) await sleep(50);
  }

  /** Unmounts, deepest first, what is mounted below the lab's directories; returns what stays. */
  private async unmountAll(): Promise<string[]> {
    const newNetns = listNetns().filter((n) => !this.netnsBefore.has(n));
    const ours = (m: string) =>
      m === this.dir || m.startsWith(this.dir + '/') || (this.kubeletBound && (m === KUBELET_DIR || m.startsWith(KUBELET_DIR + '/'))) || newNetns.includes(m);
    for (let pass = 0; pass < 3; pass++) {
      const mounts = mountPoints().filter(ours).sort((a, b) => b.length - a.length);
      if (!mounts.length) break;
      for (const m of mounts) if ((await runAllowFail('umount', [m], { timeoutMs: 30_000 })).exitCode !== 0) await runAllowFail('umount', ['-l', m], { timeoutMs: 30_000 });
    }
    for (const n of newNetns) rmSync(n, { force: true });
    return mountPoints().filter(ours);
  }
}

// --- host helpers ------------------------------------------------------------------------

/** The Kubernetes node name: the host name if it is a valid one. */
function nodeNameOf(host: string): string {
  const h = host.toLowerCase();
  return /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(h) && h.length <= 253 ? h : 'strata-lab';
}

/** The node's first real IPv4 address (not loopback, not the lab's own bridge or veths). */
export function hostAddress(): string {
  for (const [name, addrs] of Object.entries(networkInterfaces())) {
    if (name === BRIDGE || name.startsWith('veth')) continue;
    const a = addrs?.find((x) => x.family === 'IPv4' && !x.internal);
    if (a) return a.address;
  }
  throw new Error('no non-loopback IPv4 address: the apiserver needs one to reach kubelet');
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

function mountPoints(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => unescapeMount(l.split(' ')[4]!));
}

function listNetns(): string[] {
  const dir = '/run/netns';
  return existsSync(dir) ? readdirSync(dir).map((n) => path.join(dir, n)) : [];
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

/** A zombie still answers kill(pid, 0): hasExited reads its state. */
const alive = (pid: number): boolean => !hasExited(pid);

function procTable(): Array<{ pid: number; ppid: number; cmdline: string }> {
  const out: Array<{ pid: number; ppid: number; cmdline: string }> = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      out.push({ pid: Number(e), ppid, cmdline: readFileSync(`/proc/${e}/cmdline`, 'utf8').replace(/\0/g, ' ') });
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/**
 * containerd's shims outlive containerd, and the containers outlive kubelet: kill every shim of
 * the lab's containerd (found by its socket on their command line) with all it runs.
 */
async function killShims(socket: string): Promise<void> {
  const table = procTable();
  const shims = table.filter((p) => p.cmdline.includes('containerd-shim') && p.cmdline.includes(socket));
  if (!shims.length) return;
  const doomed = new Set(shims.map((s) => s.pid));
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of table) if (!doomed.has(p.pid) && doomed.has(p.ppid)) (doomed.add(p.pid), (grew = true));
  }
  for (const pid of doomed) signal(pid, 'SIGKILL');
  for (let i = 0; i < 100 && [...doomed].some(alive); i++) await sleep(50);
}

/** Empty pod cgroups kubelet leaves on cgroup v1 (best effort: a busy one stays). */
function removeKubepodsCgroups(): void {
  const root = '/sys/fs/cgroup';
  if (!existsSync(root)) return;
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(dir, e.name));
    try {
      rmdirSync(dir);
    } catch {
      /* busy or not empty */
    }
  };
  for (const ctrl of readdirSync(root)) {
    const dir = path.join(root, ctrl, 'kubepods');
    try {
      if (statSync(dir).isDirectory()) walk(dir);
    } catch {
      /* not there */
    }
  }
}

/**
 * kubelet (and kube-proxy) leave iptables chains named KUBE-* behind, among them KUBE-FIREWALL,
 * which drops packets to 127.0.0.0/8 from other sources: remove the jumps to them, then them.
 */
export async function removeKubeChains(): Promise<void> {
  for (const tool of ['iptables', 'ip6tables']) {
    for (const table of ['filter', 'nat', 'mangle']) {
      const res = await runAllowFail(tool, ['-w', '5', '-t', table, '-S'], { timeoutMs: 30_000 });
      if (res.exitCode !== 0) continue;
      const rules = res.stdout.split('\n');
      const chains = rules.map((r) => /^-N (KUBE-\S+)$/.exec(r)?.[1]).filter((c): c is string => !!c);
      if (!chains.length) continue;
      // Jumps from the built-in chains; the KUBE-* chains' own rules go with -F.
      for (const r of rules) {
        const m = /^-A (\S+) (.*-j (KUBE-\S+).*)$/.exec(r);
        if (m && !m[1]!.startsWith('KUBE-')) await runAllowFail(tool, ['-w', '5', '-t', table, '-D', m[1]!, ...splitRule(m[2]!)], { timeoutMs: 30_000 });
      }
      for (const c of chains) await runAllowFail(tool, ['-w', '5', '-t', table, '-F', c], { timeoutMs: 30_000 });
      for (const c of chains) await runAllowFail(tool, ['-w', '5', '-t', table, '-X', c], { timeoutMs: 30_000 });
    }
  }
}

/** Splits an `iptables -S` rule into arguments (quoted comments stay one argument). */
function splitRule(rule: string): string[] {
  return [...rule.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) => (m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!));
}

/** kubelet links each container's log into /var/log/containers whatever podLogsDir says. */
function removeContainerLogLinks(labDir: string): void {
  const dir = '/var/log/containers';
  if (!existsSync(dir)) return;
  for (const n of readdirSync(dir)) {
    try {
      if (readlinkSync(path.join(dir, n)).startsWith(labDir + '/')) rmSync(path.join(dir, n), { force: true });
    } catch {
      /* not a link */
    }
  }
}

/** Refuses to start beside a running lab (fixed ports, one kubelet directory). */
async function refuseIfRunning(): Promise<void> {
  if (existsSync(STATE_FILE)) {
    const st = JSON.parse(readFileSync(STATE_FILE, 'utf8')) as LabState;
    const live = st.procs.filter((p) => alive(p.pid));
    if (live.length) throw new Error(`a Kubernetes lab runs (${st.dir}; pids ${live.map((p) => `${p.name}=${p.pid}`).join(', ')}): one at a time`);
  }
  for (const port of [APISERVER_PORT, ETCD_PORT, KUBELET_PORT]) {
    const busy = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (busy) throw new Error(`port ${port} is in use: a Kubernetes lab (or other cluster) runs here`);
  }
}

