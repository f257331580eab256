import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import path from 'node:path';
import { ListBucketsCommand, S3Client } from '@aws-sdk/client-s3';
import { CephLab, LAB_S3 } from '../lab/ceph-lab.js';
import { startDriver, type DriverProcess } from '../helpers/driver.js';
import { leftovers } from '../helpers/leftovers.js';
import { listKeys, labS3Client } from '../helpers/s3.js';
import { MIN_PASSED, runSanity, withoutDefaultIdentity } from './sanity-runner.js';

/**
 * csi-sanity against the S3 backend (s3fs mounts), once with a bucket per
 * volume and once with a shared bucket (a prefix per volume), and once with
 * request secrets only. Zero failures required; skips are listed in
 * sanity-runner.ts.
 */

describe('csi-sanity: s3', { timeout: 900_000 }, () => {
  let lab: CephLab;
  let driver: DriverProcess;
  let s3: S3Client;

  before(async () => {
    lab = await CephLab.start({ components: ['s3'] });
    driver = await startDriver({ config: lab.writeDriverConfig(), nodeId: 'sanity-node' });
    s3 = labS3Client(lab);
  });

  after(async () => {
    s3?.destroy();
    await driver?.stop();
    await lab?.stop();
  });

  const secrets = { accessKeyID: LAB_S3.accessKeyID, secretAccessKey: LAB_S3.secretAccessKey };

  const passes = async (d: { socket: string; dir: string }, workName: string, params: Record<string, string>, minPassed: number) => {
    const workDir = path.join(d.dir, workName);
    const r = await runSanity({ socket: d.socket, workDir, accessType: 'mount', params: { backend: 's3', clusterID: 'lab', ...params }, secrets });
    assert.equal(r.failed, 0, `csi-sanity failures:\n${r.failures.join('\n')}\n${r.output.slice(-4000)}`);
    assert.ok(r.passed >= minPassed, `only ${r.passed} specs passed`);
    assert.deepEqual(await leftovers(workDir), [], 'mounts or FUSE processes left behind');
    if (params.bucket) {
      assert.deepEqual(await listKeys(s3, params.bucket, ''), [], 'every volume and snapshot prefix is gone from the shared bucket');
    } else {
      const buckets = ((await s3.send(new ListBucketsCommand({}))).Buckets ?? []).map((b) => b.Name);
      assert.deepEqual(buckets.filter((b) => b?.startsWith('csi-')), [], 'every volume and snapshot bucket is gone');
    }
  };

  it('passes every spec with a bucket per volume', () => passes(driver, 'sanity-s3-own', {}, MIN_PASSED.withIdentity));

  it('passes every spec with a shared bucket', () => passes(driver, 'sanity-s3-shared', { bucket: 'sanity-shared' }, MIN_PASSED.withIdentity));

  it('case 11: passes every spec with credentials only in request secrets', () =>
    withoutDefaultIdentity(
      () => startDriver({ config: lab.writeDriverConfig({ defaultIdentity: false }), nodeId: 'sanity-node' }),
      (d) => passes(d, 'sanity-secrets-only', {}, MIN_PASSED.secretsOnly),
    ));
});
