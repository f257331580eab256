import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { GiB, MiB, requireCapability, sizeFits, sizeFromRange } from '../../src/csi/capabilities.js';
import { CsiError } from '../../src/errors.js';

const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    return (e as CsiError).code;
  }
  return undefined;
};

describe('capacity ranges', () => {
  it('uses the default when nothing is asked', () => assert.equal(sizeFromRange(null, GiB, MiB), GiB));
  it('rounds the requirement up to the granularity', () => assert.equal(sizeFromRange({ required_bytes: MiB + 1, limit_bytes: 0 }, GiB, MiB), 2 * MiB));
  it('respects a limit below the default', () => assert.equal(sizeFromRange({ required_bytes: 0, limit_bytes: 10 * MiB }, GiB, MiB), 10 * MiB));
  it('rounds down to fit the limit when only a limit is given', () =>
    assert.equal(sizeFromRange({ required_bytes: 0, limit_bytes: 5 * MiB }, GiB, 4 * MiB), 4 * MiB));
  it('answers OUT_OF_RANGE when required exceeds limit', () =>
    assert.equal(code(() => sizeFromRange({ required_bytes: 2 * MiB, limit_bytes: MiB }, GiB, MiB)), status.OUT_OF_RANGE));
  it('answers OUT_OF_RANGE when no multiple of the granularity fits', () =>
    assert.equal(code(() => sizeFromRange({ required_bytes: MiB + 1, limit_bytes: MiB + 2 }, GiB, MiB)), status.OUT_OF_RANGE));
  it('answers INVALID_ARGUMENT for negative values', () =>
    assert.equal(code(() => sizeFromRange({ required_bytes: -1, limit_bytes: 0 }, GiB, MiB)), status.INVALID_ARGUMENT));
  it('tells whether an existing size fits a retry', () => {
    assert.ok(sizeFits(2 * MiB, { required_bytes: MiB, limit_bytes: 0 }));
    assert.ok(!sizeFits(2 * MiB, { required_bytes: MiB, limit_bytes: MiB }));
  });
});

describe('volume capabilities', () => {
  it('needs an access type and a mode', () => {
    assert.equal(code(() => requireCapability(null)), status.INVALID_ARGUMENT);
    assert.equal(code(() => requireCapability({ access_mode: { mode: 'SINGLE_NODE_WRITER' } } as never)), status.INVALID_ARGUMENT);
    assert.equal(code(() => requireCapability({ mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'UNKNOWN' } } as never)), status.INVALID_ARGUMENT);
    assert.doesNotThrow(() => requireCapability({ block: {}, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } } as never));
  });
});

describe('capability grammar', () => {
  const cap = (over: Record<string, unknown> = {}, mount: Record<string, unknown> = {}) =>
    ({ mount: { fs_type: 'ext4', mount_flags: [], volume_mount_group: '', ...mount }, access_mode: { mode: 'SINGLE_NODE_WRITER' }, access_type: 'mount', ...over }) as never;
  it('takes a plain capability', () => assert.equal(code(() => requireCapability(cap())), undefined));
  it('case 8: refuses access modes outside the CSI enum', () => {
    assert.equal(code(() => requireCapability(cap({ access_mode: { mode: 99 } }))), status.INVALID_ARGUMENT);
    assert.equal(code(() => requireCapability(cap({ access_mode: { mode: 'UNKNOWN' } }))), status.INVALID_ARGUMENT);
  });
  it('refuses mount flags that smuggle more options or look like command options', () => {
    for (const f of ['ro,exec', '--bind', '-o', 'a b', '', 'x\n', 'ü']) {
      assert.equal(code(() => requireCapability(cap({}, { mount_flags: [f] }))), status.INVALID_ARGUMENT, JSON.stringify(f));
    }
    assert.equal(code(() => requireCapability(cap({}, { mount_flags: ['noatime', 'nfsvers=4.1', 'context=system_u:object_r:x:s0'] }))), undefined);
  });
  it('refuses odd file-system type names and both access types at once', () => {
    assert.equal(code(() => requireCapability(cap({}, { fs_type: '../x' }))), status.INVALID_ARGUMENT);
    assert.equal(code(() => requireCapability(cap({ block: {} }))), status.INVALID_ARGUMENT);
  });
  it('answers OUT_OF_RANGE for sizes no number can hold exactly', () =>
    assert.equal(code(() => sizeFromRange({ required_bytes: 2 ** 60, limit_bytes: 0 }, GiB, MiB)), status.OUT_OF_RANGE));
});

