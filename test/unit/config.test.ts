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
