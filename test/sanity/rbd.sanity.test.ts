import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import path from 'node:path';
import { CephLab } from '../lab/ceph-lab.js';
import { startDriver, type DriverProcess } from '../helpers/driver.js';
import { leftovers } from '../helpers/leftovers.js';
import { MIN_PASSED, runSanity, withoutDefaultIdentity } from './sanity-runner.js';

/**
 * csi-sanity against the RBD backend on a real Ceph lab, for file-system and
 * raw block volumes, in a RADOS namespace, and with request secrets only. Zero failures are required; what is skipped, and why,
 * is listed in sanity-runner.ts.
 */

describe('csi-sanity: rbd', { timeout: 900_000 }, () => {
  let lab: CephLab;
  let driver: DriverProcess;

  before(async () => {
    lab = await CephLab.start({ components: ['rbd'] });
    driver = await startDriver({ config: lab.writeDriverConfig(), nodeId: 'sanity-node' });
  });

  after(async () => {
    await driver?.stop();
    await lab?.stop();
  });

  const passes = async (d: { socket: string; dir: string }, workName: string, accessType: 'mount' | 'block', minPassed: number, radosNamespace?: string) => {
    const workDir = path.join(d.dir, workName);
    const r = await runSanity({
      socket: d.socket,
      workDir,
      accessType,
      params: { backend: 'rbd', clusterID: 'lab', pool: 'rbd', ...(radosNamespace ? { radosNamespace } : {}) },
      secrets: { userID: 'admin', userKey: lab.adminKey },
    });
    assert.equal(r.failed, 0, `${workName}: csi-sanity failures:\n${r.failures.join('\n')}\n${r.output.slice(-4000)}`);
    assert.ok(r.passed >= minPassed, `${workName}: only ${r.passed} specs passed`);
    assert.deepEqual(await leftovers(workDir), [], 'mounts or FUSE processes left behind');
    const images = (await lab.rbd(['ls', radosNamespace ? `rbd/${radosNamespace}` : 'rbd'])).split('\n').filter(Boolean);
    assert.deepEqual(images, [], 'csi-sanity deleted every volume and snapshot, so no image may remain');
  };

  for (const accessType of ['mount', 'block'] as const) {
    it(`passes every spec with ${accessType} volumes`, () => passes(driver, `sanity-${accessType}`, accessType, MIN_PASSED.withIdentity));
  }

  it('passes every spec with volumes in a RADOS namespace', () => passes(driver, 'sanity-namespace', 'mount', MIN_PASSED.withIdentity, 'sanity-ns'));

  it('case 11: passes every spec with credentials only in request secrets', () =>
    withoutDefaultIdentity(
      () => startDriver({ config: lab.writeDriverConfig({ defaultIdentity: false }), nodeId: 'sanity-node' }),
      (d) => passes(d, 'sanity-secrets-only', 'mount', MIN_PASSED.secretsOnly),
    ));
});
