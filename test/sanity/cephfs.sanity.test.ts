import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import path from 'node:path';
import { CephLab } from '../lab/ceph-lab.js';
import { startDriver, type DriverProcess } from '../helpers/driver.js';
import { leftovers } from '../helpers/leftovers.js';
import { MIN_PASSED, runSanity, withoutDefaultIdentity } from './sanity-runner.js';

/**
 * csi-sanity against the CephFS backend (ceph-fuse on these machines), with
 * the config's default identity and with request secrets only. Zero failures
 * required; skips are listed in sanity-runner.ts.
 */

describe('csi-sanity: cephfs', { timeout: 900_000 }, () => {
  let lab: CephLab;
  let driver: DriverProcess;

  before(async () => {
    lab = await CephLab.start({ components: ['rbd', 'cephfs'] });
    driver = await startDriver({ config: lab.writeDriverConfig(), nodeId: 'sanity-node' });
  });

  after(async () => {
    await driver?.stop();
    await lab?.stop();
  });

  const passes = async (d: { socket: string; dir: string }, workName: string, minPassed: number) => {
    const workDir = path.join(d.dir, workName);
    const r = await runSanity({
      socket: d.socket,
      workDir,
      accessType: 'mount',
      params: { backend: 'cephfs', clusterID: 'lab', fsName: 'cephfs' },
      secrets: { userID: 'admin', userKey: lab.adminKey },
    });
    assert.equal(r.failed, 0, `csi-sanity failures:\n${r.failures.join('\n')}\n${r.output.slice(-4000)}`);
    assert.ok(r.passed >= minPassed, `only ${r.passed} specs passed`);
    assert.deepEqual(await leftovers(workDir), [], 'mounts or FUSE processes left behind');
    const left = JSON.parse(await lab.ceph(['fs', 'subvolume', 'ls', 'cephfs', '--group_name', 'csi', '--format', 'json'])) as unknown[];
    assert.deepEqual(left, [], 'csi-sanity deleted every volume and snapshot, so no subvolume may remain');
  };

  it('passes every spec with file-system volumes', () => passes(driver, 'sanity-cephfs', MIN_PASSED.withIdentity));

  it('case 11: passes every spec with credentials only in request secrets', () =>
    withoutDefaultIdentity(
      () => startDriver({ config: lab.writeDriverConfig({ defaultIdentity: false }), nodeId: 'sanity-node' }),
      (d) => passes(d, 'sanity-secrets-only', MIN_PASSED.secretsOnly),
    ));
});
