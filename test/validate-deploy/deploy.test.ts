import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import { Ajv } from 'ajv';
import { parseAllDocuments } from 'yaml';
import { parseS3Params } from '../../src/backends/s3/params.js';
import { parseCephfsParams } from '../../src/backends/cephfs/params.js';
import { parseRbdParams } from '../../src/backends/rbd/params.js';

/**
 * The Helm chart and the plain manifests: they render, validate against the
 * Kubernetes API schemas (kubernetes-models for built-in kinds, the snapshot
 * CRDs' own schemas for VolumeSnapshot*), stay in sync, and agree with the
 * code: driver name, socket paths, container flags, StorageClass parameters,
 * and the RBAC each sidecar documents.
 */

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const chart = path.join(root, 'deploy/helm/strata');
const HELM = [process.env.HELM, path.join(homedir(), 'go/bin/helm'), '/usr/local/bin/helm'].find((p): p is string => !!p && existsSync(p));
// The snapshot CRDs come with the external-snapshotter client module (test/install-deps.sh downloads it).
const SNAPSHOTTER_CLIENT = 'github.com/kubernetes-csi/external-snapshotter/client/v8@v8.4.0'; // as in test/install-helm.sh

type Doc = Record<string, any>;
const docsOf = (text: string): Doc[] => parseAllDocuments(text).map((d) => d.toJSON() as Doc).filter((d) => d && typeof d === 'object');
const readDocs = (file: string) => docsOf(readFileSync(file, 'utf8'));
const yamlFiles = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? yamlFiles(path.join(dir, e.name)) : /\.ya?ml$/.test(e.name) ? [path.join(dir, e.name)] : []));

/** Waits for test/install-helm.sh when test/run-all.sh started it in the background. */
async function helmReady(): Promise<void> {
  const status = process.env.STRATA_HELM_STATUS;
  if (!status) return;
  const deadline = Date.now() + 15 * 60_000;
  for (;;) {
    const s = existsSync(status) ? readFileSync(status, 'utf8').trim() : 'running';
    if (s === 'ok') return;
    if (s.startsWith('failed')) throw new Error(`test/install-helm.sh ${s} (log: /tmp/strata-install-helm.log)`);
    if (Date.now() > deadline) throw new Error('test/install-helm.sh did not finish within 15 minutes');
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function helmTemplate(extra: string[] = []): string {
  if (!HELM) throw new Error('helm not found: run test/install-deps.sh (go install helm.sh/helm/v3/cmd/helm)');
  return execFileSync(HELM, ['template', 'strata', chart, '--namespace', 'strata-system', '--kube-version', '1.34.10', ...extra], { encoding: 'utf8', timeout: 60_000 });
}

/** Validates one object; returns the problems (empty when valid). */
type Validator = (d: Doc) => Promise<string[]>;

async function coreValidator(): Promise<Validator> {
  return async (d) => {
    const mod = (await import(`kubernetes-models/${d.apiVersion}`).catch(() => undefined)) as Record<string, new (o: Doc) => { validate(): void }> | undefined;
    const Model = mod?.[d.kind];
    if (!Model) return [`${d.apiVersion} ${d.kind}: no schema for this kind`];
    try {
      new Model(d).validate();
      return [];
    } catch (e) {
      return [`${d.kind} ${d.metadata?.name}: ${(e as Error).message}`];
    }
  };
}

function crdValidator(): Validator {
  const gomodcache = execFileSync('go', ['env', 'GOMODCACHE'], { encoding: 'utf8' }).trim();
  const dir = path.join(gomodcache, SNAPSHOTTER_CLIENT, 'config/crd');
  assert.ok(existsSync(dir), `snapshot CRDs not found in ${dir}: run test/install-deps.sh`);
  const ajv = new Ajv({ strict: false, allErrors: true });
  const schemas = new Map<string, (d: unknown) => boolean>();
  for (const f of readdirSync(dir).filter((f) => f.startsWith('snapshot.storage.k8s.io_'))) {
    const crd = readDocs(path.join(dir, f))[0]!;
    for (const v of crd.spec.versions as Doc[]) {
      const fn = ajv.compile(v.schema.openAPIV3Schema);
      schemas.set(`${crd.spec.group}/${v.name} ${crd.spec.names.kind}`, fn as (d: unknown) => boolean);
    }
  }
  return async (d) => {
    const fn = schemas.get(`${d.apiVersion} ${d.kind}`) as ((d: unknown) => boolean) & { errors?: unknown[] } | undefined;
    if (!fn) return [`${d.apiVersion} ${d.kind}: no CRD schema`];
    return fn(d) ? [] : [`${d.kind} ${d.metadata?.name}: ${JSON.stringify(fn.errors)}`];
  };
}

describe('deploy: chart and manifests', { timeout: 20 * 60_000 }, () => {
  let validate: (docs: Doc[]) => Promise<string[]>;
  let rendered: Doc[];
  let example: Doc[];

  before(async () => {
    await helmReady();
    const core = await coreValidator();
    const crd = crdValidator();
    validate = async (docs) => (await Promise.all(docs.map((d) => (String(d.apiVersion).startsWith('snapshot.storage.k8s.io/') ? crd(d) : core(d))))).flat();
    rendered = docsOf(helmTemplate());
    example = docsOf(helmTemplate(['-f', path.join(chart, 'values-example.yaml')]));
  });

  it('validation catches a broken object (the check can fail)', async () => {
    const bad = structuredClone(rendered.find((d) => d.kind === 'Deployment')!);
    bad.spec.replicas = 'two';
    assert.notDeepEqual(await validate([bad]), []);
    const badClass = { apiVersion: 'snapshot.storage.k8s.io/v1', kind: 'VolumeSnapshotClass', metadata: { name: 'x' }, driver: 'strata.csi.dev', deletionPolicy: 'Sometimes' };
    assert.notDeepEqual(await validate([badClass]), []);
  });

  it('renders with default and example values, and every object validates', async () => {
    assert.deepEqual(await validate(rendered), []);
    assert.deepEqual(await validate(example), []);
    const kinds = (docs: Doc[]) => [...new Set(docs.map((d) => d.kind))].sort();
    assert.deepEqual(kinds(rendered), ['CSIDriver', 'ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'Deployment', 'Role', 'RoleBinding', 'ServiceAccount']);
    assert.deepEqual(kinds(example), [...kinds(rendered), 'StorageClass', 'VolumeSnapshotClass'].sort());
  });

  it("gives the node plugin none of the controller's key files", () => {
    for (const docs of [rendered, example]) {
      const secretsOf = (kind: string) => (docs.find((d) => d.kind === kind)!.spec.template.spec.volumes as Array<{ secret?: { secretName: string } }>).filter((v) => v.secret).map((v) => v.secret!.secretName);
      assert.deepEqual(secretsOf('DaemonSet'), []);
      assert.deepEqual(secretsOf('Deployment'), ['strata-keys']);
    }
  });

  it('keeps deploy/kubernetes in sync with the chart (run deploy/render.sh after changing it)', () => {
    const plain = readFileSync(path.join(root, 'deploy/kubernetes/strata.yaml'), 'utf8').replace(/^#.*\n/, '');
    assert.equal(plain, helmTemplate());
    const k = readDocs(path.join(root, 'deploy/kubernetes/kustomization.yaml'))[0]!;
    for (const r of k.resources as string[]) assert.ok(existsSync(path.join(root, 'deploy/kubernetes', r)), `kustomization lists missing ${r}`);
    assert.equal(k.namespace, 'strata-system');
  });

  it('validates the plain manifests and every example', async () => {
    for (const f of [...yamlFiles(path.join(root, 'deploy/kubernetes')), ...yamlFiles(path.join(root, 'deploy/examples'))]) {
      const docs = readDocs(f).filter((d) => d.kind !== 'Kustomization');
      assert.deepEqual(await validate(docs), [], f);
    }
  });

  it('uses the driver name, socket paths and flags the code has', () => {
    const help = execFileSync(process.execPath, [path.join(root, 'dist/src/cli.js'), 'serve', '--help'], { encoding: 'utf8' });
    const known = new Set(help.match(/--[a-z-]+/g));
    const driver = rendered.find((d) => d.kind === 'CSIDriver')!;
    const config = docsOf(rendered.find((d) => d.kind === 'ConfigMap')!.data['config.yaml'])[0]!;
    assert.equal(driver.metadata.name, 'strata.csi.dev');
    assert.equal(config.driverName, driver.metadata.name);
    for (const sc of example.filter((d) => d.kind === 'StorageClass')) assert.equal(sc.provisioner, driver.metadata.name);
    for (const vsc of example.filter((d) => d.kind === 'VolumeSnapshotClass')) assert.equal(vsc.driver, driver.metadata.name);

    for (const w of rendered.filter((d) => d.kind === 'Deployment' || d.kind === 'DaemonSet')) {
      const containers = w.spec.template.spec.containers as Doc[];
      const strata = containers.find((c) => c.name === 'strata')!;
      for (const a of strata.args as string[]) assert.ok(known.has(a.split('=')[0]!), `${w.kind} passes ${a}, which strata serve does not know`);
      assert.ok(strata.args.includes('--endpoint=unix:///csi/csi.sock'));
      // Every sidecar talks to the socket strata listens on, through the same volume.
      const sockVol = strata.volumeMounts.find((m: Doc) => m.mountPath === '/csi').name;
      for (const c of containers.filter((c) => c.name !== 'strata')) {
        assert.ok(c.args.includes('--csi-address=/csi/csi.sock'), `${c.name} uses another socket`);
        assert.equal(c.volumeMounts.find((m: Doc) => m.mountPath === '/csi')?.name, sockVol, `${c.name} mounts another /csi`);
      }
      if (w.kind === 'DaemonSet') {
        const pluginDir = w.spec.template.spec.volumes.find((v: Doc) => v.name === sockVol).hostPath.path;
        assert.equal(pluginDir, `/var/lib/kubelet/plugins/${driver.metadata.name}`);
        const reg = containers.find((c) => c.name === 'node-driver-registrar')!;
        assert.ok(reg.args.includes(`--kubelet-registration-path=${pluginDir}/csi.sock`));
        const kubelet = strata.volumeMounts.find((m: Doc) => m.mountPath === '/var/lib/kubelet');
        assert.equal(kubelet.mountPropagation, 'Bidirectional');
        assert.ok(strata.args.some((a: string) => a.startsWith(`--state-dir=/var/lib/kubelet/`)), 'FUSE mount points must sit under the propagated kubelet dir');
        assert.equal(strata.securityContext.privileged, true);
        assert.equal(w.spec.template.spec.hostNetwork, true);
      }
    }
  });

  it('names only StorageClass parameters a backend accepts', () => {
    const classes = [...example, ...yamlFiles(path.join(root, 'deploy/examples')).flatMap(readDocs)].filter((d) => d.kind === 'StorageClass');
    assert.ok(classes.length >= 4);
    for (const b of ['rbd', 'cephfs', 's3']) assert.ok(classes.some((sc) => sc.parameters.backend === b), `no example StorageClass for ${b}`);
    assert.ok(classes.some((sc) => sc.parameters.backend === 's3' && sc.parameters.bucket) && classes.some((sc) => sc.parameters.backend === 's3' && !sc.parameters.bucket), 'S3 examples for both layouts');
    const parsers: Record<string, (p: Record<string, string>) => unknown> = { rbd: parseRbdParams, cephfs: parseCephfsParams, s3: parseS3Params };
    for (const sc of classes) {
      const parse = parsers[sc.parameters.backend];
      assert.ok(parse, `${sc.metadata.name}: backend "${sc.parameters.backend}" does not exist`);
      assert.doesNotThrow(() => parse(sc.parameters), `${sc.metadata.name}`);
      assert.equal(sc.allowVolumeExpansion, true);
      for (const step of ['provisioner', 'controller-publish', 'controller-expand']) assert.ok(sc.parameters[`csi.storage.k8s.io/${step}-secret-name`], `${sc.metadata.name} has no ${step} secret`);
      // Nodes never get the controller's keys. CephFS and S3 volumes are mounted with a key of their
      // own from ControllerPublish (the examples' config has rgwAdmin): no secret. RBD nodes get a node user's.
      const nodeSecret = sc.parameters['csi.storage.k8s.io/node-stage-secret-name'];
      if (sc.parameters.backend === 'rbd') {
        assert.ok(nodeSecret, `${sc.metadata.name} has no node-stage secret`);
        assert.notEqual(nodeSecret, sc.parameters['csi.storage.k8s.io/provisioner-secret-name'], `${sc.metadata.name} sends nodes the provisioner's key`);
      } else assert.equal(nodeSecret, undefined, `${sc.metadata.name} sends nodes a secret they never need`);
    }
  });

  it("grants each sidecar what its documentation lists, and no more than that", () => {
    // From each sidecar's deploy/kubernetes/rbac.yaml (current releases), plus secrets "get"
    // because every StorageClass names secrets. Group snapshots are left out: Strata does not
    // offer them, and csi-snapshotter only watches those kinds with its feature gate on.
    const need: Record<string, string[]> = {
      provisioner: [
        '/persistentvolumes:get,list,watch,create,delete', '/persistentvolumeclaims:get,list,watch,update', 'storage.k8s.io/storageclasses:get,list,watch',
        '/events:list,watch,create,update,patch', 'snapshot.storage.k8s.io/volumesnapshots:get,list', 'snapshot.storage.k8s.io/volumesnapshotcontents:get,list',
        'storage.k8s.io/csinodes:get,list,watch', '/nodes:get,list,watch', 'storage.k8s.io/volumeattachments:get,list,watch', '/secrets:get',
      ],
      attacher: ['/persistentvolumes:get,list,watch,patch', 'storage.k8s.io/csinodes:get,list,watch', 'storage.k8s.io/volumeattachments:get,list,watch,patch', 'storage.k8s.io/volumeattachments/status:patch', '/secrets:get'],
      resizer: [
        '/persistentvolumes:get,list,watch,patch', '/persistentvolumeclaims:get,list,watch', '/persistentvolumeclaims/status:patch', '/pods:get,list,watch',
        '/events:list,watch,create,update,patch', 'storage.k8s.io/volumeattributesclasses:get,list,watch', '/secrets:get',
      ],
      snapshotter: [
        '/events:list,watch,create,update,patch', 'snapshot.storage.k8s.io/volumesnapshotclasses:get,list,watch',
        'snapshot.storage.k8s.io/volumesnapshotcontents:get,list,watch,update,patch', 'snapshot.storage.k8s.io/volumesnapshotcontents/status:update,patch', '/secrets:get',
      ],
    };
    const grants = (role: Doc) =>
      new Set((role.rules as Doc[]).flatMap((r) => (r.apiGroups as string[]).flatMap((g) => (r.resources as string[]).flatMap((res) => (r.verbs as string[]).map((v) => `${g}/${res}:${v}`)))));
    const sa = 'strata-controller';
    for (const [sidecar, rules] of Object.entries(need)) {
      const role = rendered.find((d) => d.kind === 'ClusterRole' && d.metadata.name === `strata-${sidecar}`);
      assert.ok(role, `no ClusterRole for ${sidecar}`);
      const want = new Set(rules.flatMap((r) => r.split(':')[1]!.split(',').map((v) => `${r.split(':')[0]}:${v}`)));
      assert.deepEqual([...grants(role)].sort(), [...want].sort(), `${sidecar} RBAC`);
      const binding = rendered.find((d) => d.kind === 'ClusterRoleBinding' && d.roleRef.name === role.metadata.name)!;
      assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa, namespace: 'strata-system' }]);
    }
    const leases = rendered.find((d) => d.kind === 'Role')!;
    assert.deepEqual(leases.rules, [{ apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'watch', 'list', 'delete', 'update', 'create'] }]);
    const deployment = rendered.find((d) => d.kind === 'Deployment')!;
    assert.equal(deployment.spec.replicas, 2);
    assert.equal(deployment.spec.template.spec.serviceAccountName, sa);
    for (const c of deployment.spec.template.spec.containers.filter((c: Doc) => c.name.startsWith('csi-'))) assert.ok(c.args.includes('--leader-election=true'), c.name);
    // The node plugin needs no API access at all.
    const ds = rendered.find((d) => d.kind === 'DaemonSet')!;
    assert.ok(!rendered.some((d) => d.kind.endsWith('Binding') && d.subjects.some((s: Doc) => s.name === ds.spec.template.spec.serviceAccountName)));
  });
});
