import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clientKey, clientsIn, firstArray, isClientAddr, ownInstances, parseClientRecord } from '../../src/backends/rbd/fence.js';
import { attachKey } from '../../src/backends/attachments.js';

describe('rbd fencing records', () => {
  it('accepts only client addresses as rbd status prints them', () => {
    for (const a of ['127.0.0.1:0/47972954', '10.1.2.3:6801/1', '[::1]:0/3380718274', '[fe80::1:2]:0/12']) assert.ok(isClientAddr(a), a);
    for (const a of ['', '-h', '--cluster=x', '127.0.0.1:0', '127.0.0.1/5', 'v2:127.0.0.1:0/5', '127.0.0.1:0/5 extra', '127.0.0.1:0/5\n', 'any', 3, undefined, '1.2.3.4:0/-1']) {
      assert.equal(isClientAddr(a), false, JSON.stringify(a));
    }
  });

  it('never trusts a record: bad JSON is no record, bad addresses are dropped', () => {
    assert.equal(parseClientRecord(undefined), undefined);
    assert.equal(parseClientRecord('{'), undefined);
    assert.equal(parseClientRecord('{"addrs":"x"}'), undefined);
    assert.deepEqual(parseClientRecord('{"v":1,"addrs":["1.2.3.4:0/9","--yes-i-really-mean-it",7]}'), { v: 1, addrs: ['1.2.3.4:0/9'] });
  });

  it('reads client records by node and skips keys that do not decode', () => {
    const meta = {
      [clientKey('node-a')]: '{"v":1,"addrs":["1.2.3.4:0/1"]}',
      [clientKey('node-b')]: 'garbage',
      'strata.client.zz': '{"v":1,"addrs":["1.2.3.4:0/2"]}',
      [attachKey('node-a')]: '{"mode":"SINGLE_NODE_WRITER","readonly":false}',
    };
    assert.deepEqual([...clientsIn(meta)], [
      ['node-a', ['1.2.3.4:0/1']],
      ['node-b', []],
    ]);
  });

  it("finds a node's own instances: new watchers, less those of other nodes", () => {
    assert.deepEqual(ownInstances(['1.1.1.1:0/3', '1.1.1.1:0/1', '1.1.1.1:0/2'], ['1.1.1.1:0/1'], [['1.1.1.1:0/2']]), ['1.1.1.1:0/3']);
    assert.deepEqual(ownInstances(['1.1.1.1:0/1', '1.1.1.1:0/1', 'junk'], [], []), ['1.1.1.1:0/1']);
    assert.deepEqual(ownInstances([], [], []), []);
  });

  it('reads the first of the JSON arrays Pacific prints for the blocklist', () => {
    assert.equal(firstArray('[{"addr":"[::1]:0/1","until":"x"}][]'), '[{"addr":"[::1]:0/1","until":"x"}]');
    assert.equal(firstArray('[]\n[]'), '[]');
    assert.equal(firstArray('[{"a":"]\\"["}][1]'), '[{"a":"]\\"["}]');
  });
});
