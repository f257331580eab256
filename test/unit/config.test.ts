import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, parseConfig } from '../../src/config/config.js';

describe('config', () => {
  it('fills defaults', () => {
    const c = parseConfig('clusters:\n  - id: lab\n    ceph:\n      monitors: ["127.0.0.1:6789"]\n');
    assert.equal(c.driverName, 'strata.csi.dev');
    assert.deepEqual(c.clusters[0]!.ceph!.monitors, ['127.0.0.1:6789']);
  });

  const bad: Array<[string, RegExp]> = [
    ['clusters: []\n', /clusters: at least one cluster/],
    ['clusters:\n  - id: "bad id"\n', /clusters\.0\.id/],
    ['clusters:\n  - id: a\n    ceph:\n      monitors: []\n', /clusters\.0\.ceph\.monitors/],
    ['clusters:\n  - id: a\n    ceph:\n      monitors: [m]\n      userID: x\n', /userID and userKeyFile go together/],
    ['clusters:\n  - id: a\n    s3:\n      endpoint: not-a-url\n', /clusters\.0\.s3\.endpoint/],
    ['clusters:\n  - id: a\n  - id: a\n', /duplicate cluster id/],
    ['clusters:\n  - id: a\n    cepf: {}\n', /cepf/],
    ['driverName: "-x-"\nclusters:\n  - id: a\n', /driverName/],
    ['clusters: [\n', /not valid YAML/],
  ];
  for (const [text, msg] of bad) {
    it(`names the bad key: ${msg.source}`, () => {
      assert.throws(() => parseConfig(text, 'test.yaml'), (e: unknown) => e instanceof ConfigError && msg.test(e.message) && e.message.startsWith('test.yaml'));
    });
  }
});

describe('which stores a call can reach', () => {
  it('uses request secrets of the store\'s own kind, else the config\'s default identity', async () => {
    const { canReach, hasDefaultIdentities } = await import('../../src/config/config.js');
    const bare = parseConfig('clusters:\n  - id: c\n    ceph: { monitors: ["m:6789"] }\n    s3: { endpoint: "http://s3:7480" }\n');
    const c = bare.clusters[0]!;
    assert.equal(hasDefaultIdentities(bare), false);
    assert.equal(canReach(c, 'ceph', {}), false);
    assert.equal(canReach(c, 'ceph', { accessKeyID: 'a', secretAccessKey: 'b' }), false, 'S3 secrets say nothing to Ceph');
    assert.equal(canReach(c, 'ceph', { userID: 'u', userKey: 'k' }), true);
    assert.equal(canReach(c, 's3', { userID: 'u', userKey: 'k' }), false, 'Ceph secrets say nothing to S3');
    assert.equal(canReach(c, 's3', { accessKeyID: 'a', secretAccessKey: 'b' }), true);
    const full = parseConfig('clusters:\n  - id: c\n    ceph: { monitors: ["m:6789"], userID: u, userKeyFile: /k }\n    s3: { endpoint: "http://s3:7480", accessKeyIDFile: /a, secretAccessKeyFile: /s }\n');
    assert.equal(hasDefaultIdentities(full), true);
    assert.equal(canReach(full.clusters[0]!, 'ceph'), true);
    assert.equal(canReach(full.clusters[0]!, 's3'), true);
  });
});
