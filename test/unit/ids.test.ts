import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeId, nameHash, parseId, MAX_ID_BYTES } from '../../src/csi/ids.js';

describe('volume and snapshot ids', () => {
  it('round-trips and says what it is', () => {
    const id = encodeId({ kind: 'v', backend: 'rbd', cluster: 'lab', location: ['rbd', 'csi-vol-abc'] });
    assert.equal(id, 's1:v:rbd:lab:rbd:csi-vol-abc');
    assert.deepEqual(parseId(id, 'v'), { kind: 'v', backend: 'rbd', cluster: 'lab', location: ['rbd', 'csi-vol-abc'] });
  });

  it('does not take a snapshot id for a volume id, nor foreign strings', () => {
    const sid = encodeId({ kind: 's', backend: 'rbd', cluster: 'lab', location: ['rbd', 'csi-snap-1'] });
    assert.equal(parseId(sid, 'v'), undefined);
    for (const bad of ['', 'some-vol-id', 's2:v:rbd:lab:p:i', 's1:v:nfs:lab:p:i', 's1:v:rbd:lab', 's1:v:rbd:lab::i']) {
      assert.equal(parseId(bad, 'v'), undefined, bad);
    }
  });

  it('refuses parts that would break parsing, and ids over 128 bytes', () => {
    assert.throws(() => encodeId({ kind: 'v', backend: 'rbd', cluster: 'a:b', location: ['p', 'i'] }));
    assert.throws(() => encodeId({ kind: 'v', backend: 'rbd', cluster: 'lab', location: ['p', 'x'.repeat(MAX_ID_BYTES)] }));
  });

  it('derives the same storage name for the same request name only', () => {
    assert.equal(nameHash('d', 'pvc-1'), nameHash('d', 'pvc-1'));
    assert.notEqual(nameHash('d', 'pvc-1'), nameHash('d', 'pvc-2'));
    assert.notEqual(nameHash('d1', 'pvc-1'), nameHash('d2', 'pvc-1'));
    assert.match(nameHash('d', 'ünïcode name'), /^[0-9a-f]{32}$/);
  });

  it('keeps the longest realistic RBD id within the CSI limit', () => {
    const id = encodeId({ kind: 's', backend: 'rbd', cluster: 'c'.repeat(32), location: ['p'.repeat(40), `csi-snap-${nameHash('d', 'n')}`] });
    assert.ok(Buffer.byteLength(id) <= MAX_ID_BYTES, `${Buffer.byteLength(id)} bytes`);
  });
});
