import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { KubeLab } from './lab.js';
import { K8S_CACHE, K8S_DIR } from './paths.js';
import type { Obj } from './api.js';

/**
 * Strata as users install it: the image built from the project's Dockerfile (test/k8s/strata-image.sh)
 * and the chart installed with helm, its sidecars from the lab's images. The node plugin must
 * register with the real kubelet through node-driver-registrar, and deregister when it goes.
 * No Ceph lab yet: the storage scenarios of issue 15 come next.
 */

const NS = 'strata';
const REPO = path.resolve(K8S_DIR, '../..');

function helmBinary(): string {
  const bin = path.join(execFileSync('go', ['env', 'GOPATH']).toString().trim(), 'bin', 'helm');
  if (!existsSync(bin)) execFileSync('bash', [path.join(REPO, 'test/install-helm.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
  return bin;
}

describe('Strata chart on the Kubernetes lab', { timeout: 900_000 }, () => {
  let lab: KubeLab | undefined;
  let helm: (args: string[]) => string;

  before(async () => {
    const image = path.join(K8S_CACHE, 'images', 'strata.tar');
    execFileSync('bash', [path.join(K8S_DIR, 'strata-image.sh'), image], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 1_200_000 });
    const bin = helmBinary();
    lab = await KubeLab.start({ csi: true, log: (m) => console.log(`[k8s-lab] ${m}`) });
    const t = Date.now();
    await lab.importImage(image);
    console.log(`[k8s-lab] Strata image imported in ${(Date.now() - t) / 1000} s`);
    const kubeconfig = lab.kubeconfig;
    helm = (args) => execFileSync(bin, [...args, '--kubeconfig', kubeconfig, '-n', NS], { timeout: 300_000 }).toString();
  });
  after(async () => {
    await lab?.stop();
  });

  const pods = async (component: string) =>
    ((await lab!.api.get(`/api/v1/namespaces/${NS}/pods?labelSelector=app.kubernetes.io/component%3D${component}`)).items as Obj[]);
  const allRunning = (ps: Obj[]) =>
    ps.length === 1 && ps[0]!.status?.phase === 'Running' && (ps[0]!.status.containerStatuses as Obj[] | undefined)?.length === ps[0]!.spec.containers.length &&
    (ps[0]!.status.containerStatuses as Obj[]).every((c) => c.state?.running);
  const registered = async () => {
    const node = await lab!.api.get(`/apis/storage.k8s.io/v1/csinodes/${lab!.nodeName}`);
    return ((node.spec?.drivers ?? []) as Obj[]).find((d) => d.name === 'strata.csi.dev');
  };

  it('installs with helm from the built image; every container of the controller and the node plugin runs', async () => {
    const values = {
      image: { repository: 'strata.local/strata', tag: 'lab', pullPolicy: 'Never' },
      sidecars: { ...lab!.sidecarImages, pullPolicy: 'Never' },
      controller: { replicas: 1 },
    };
    writeFileSync(lab!.p('values.json'), JSON.stringify(values));
    const t = Date.now();
    helm(['install', 'strata', path.join(REPO, 'deploy/helm/strata'), '--create-namespace', '-f', lab!.p('values.json')]);
    await lab!.api.waitFor('controller and node pods running', async () => (allRunning(await pods('controller')) && allRunning(await pods('node')) ? true : undefined), 180_000, 500);
    console.log(`[k8s-lab] chart installed, every container running after ${(Date.now() - t) / 1000} s`);
    const driver = await lab!.api.get('/apis/storage.k8s.io/v1/csidrivers/strata.csi.dev');
    assert.equal(driver.spec.attachRequired, true);
  });

  it('the node plugin registers with kubelet (CSINode) under the node name', async () => {
    const d = await lab!.api.waitFor('strata.csi.dev in CSINode', registered, 60_000);
    assert.equal(d.nodeID, lab!.nodeName);
  });

  it('helm uninstall removes the pods, and kubelet forgets the driver', async () => {
    helm(['uninstall', 'strata', '--wait', '--timeout', '120s']);
    await lab!.api.waitFor('Strata pods gone', async () => ((await pods('controller')).length + (await pods('node')).length === 0 ? true : undefined), 120_000, 500);
    await lab!.api.waitFor('strata.csi.dev gone from CSINode', async () => ((await registered()) ? undefined : true), 60_000);
  });
});
