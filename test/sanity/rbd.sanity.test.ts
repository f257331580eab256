import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import path from 'node:path';
import { CephLab } from '../lab/ceph-lab.js';
import { startDriver, type DriverProcess } from '../helpers/driver.js';
import { leftovers } from '../helpers/leftovers.js';
import { MIN_PASSED, runSanity, withoutDefaultIdentity, type SanityResult } from './sanity-runner.js';

/**
 * csi-sanity against the RBD backend on a real Ceph lab, for file-system and
 * raw block volumes. Zero failures are required; what is skipped, and why,
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

  const check = (r: SanityResult, what: string, min = MIN_PASSED.withIdentity) => {
    assert.equal(r.failed, 0, `${what}: csi-sanity failures:\n${r.failures.join('\n')}\n${r.output.slice(-4000)}`);
    assert.ok(r.passed >= min, `${what}: only ${r.passed} specs passed`);
  };

  it('case 11: passes every spec with credentials only in request secrets', async () => {
    await withoutDefaultIdentity(
      () => startDriver({ config: lab.writeDriverConfig({ defaultIdentity: false }), nodeId: 'sanity-node' }),
      async (d) => {
        const workDir = path.join(d.dir, 'sanity-secrets-only');
        const params = { backend: 'rbd', clusterID: 'lab', pool: 'rbd' };
        const r = await runSanity({ socket: d.socket, workDir, accessType: 'mount', params, secrets: { userID: 'admin', userKey: lab.adminKey } });
        check(r, 'secrets only', MIN_PASSED.secretsOnly);
        assert.deepEqual(await leftovers(workDir), [], 'mounts or FUSE processes left behind');
      },
    );
  });

  for (const accessType of ['mount', 'block'] as const) {
    it(`passes every spec with ${accessType} volumes`, async () => {
      const workDir = path.join(driver.dir, `sanity-${accessType}`);
      const r = await runSanity({
        socket: driver.socket,
        workDir,
        accessType,
        params: { backend: 'rbd', clusterID: 'lab', pool: 'rbd' },
        secrets: { userID: 'admin', userKey: lab.adminKey },
      });
      check(r, accessType);
      assert.deepEqual(await leftovers(workDir), [], 'mounts or FUSE processes left behind');
      const images = (await lab.rbd(['ls', 'rbd'])).split('\n').filter(Boolean);
      assert.deepEqual(images, [], 'csi-sanity deleted every volume and snapshot, so no image may remain');
    });
  }
});
