import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { namesInPg, objectHash, stableMod } from '../../src/ceph/pg-hash.js';

/** Expected values are what `ceph osd map <pool> <object> [<namespace>]` printed on the Ceph 16.2 lab (raw_pgid, pgid). */

describe('RADOS placement (pg-hash)', () => {
  it('hashes names of every tail length as Ceph does', () => {
    const cases: Array<[string, string, number]> = [
      ['', 'a', 0x29eec818],
      ['', 'hello world!', 0x1eccb293], // exactly one 12-byte block, no tail
      ['', 'strata.watch-reload.7', 0x091e886b],
      ['', 'rbd_header.5f3a2b1c9d8e', 0x8282063a],
      ['', 'rbd_header.102914f76dfb', 0x58d600bb],
      ['', 'rbd_id.csi-vol-0123456789abcdef0123456789abcdef', 0x8ebebf42],
      ['ns1', 'rbd_header.5f3a2b1c9d8e', 0xdf4bc6b0],
    ];
    for (const [ns, name, raw] of cases) assert.equal(objectHash(ns, name), raw, `${ns}/${name}`);
  });

  it('folds a hash into pg_num as ceph_stable_mod does', () => {
    assert.equal(stableMod(0x58d600bb, 8), 3);
    assert.equal(stableMod(0x8ebebf42, 8), 2);
    assert.equal(stableMod(0x091e886b, 100), 0x2b); // 0x6b is past 100: folded by the half mask
    assert.equal(stableMod(0xdf4bc6b0, 8), 0);
    assert.equal(stableMod(0xffffffff, 1), 0);
  });

  it('names objects that land in the one placement group asked for', async () => {
    const names = await namesInPg('strata.watch-reload.', 'ns1', 43, 100, 20);
    assert.equal(names.length, 20);
    assert.equal(new Set(names).size, 20);
    for (const n of names) assert.equal(stableMod(objectHash('ns1', n), 100), 43);
    assert.ok((await namesInPg('strata.watch-reload.', '', 3, 8, 5)).includes('strata.watch-reload.7'));
    await assert.rejects(namesInPg('x.', '', 8, 8, 1), RangeError);
  });
});
