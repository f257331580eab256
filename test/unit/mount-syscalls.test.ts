import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { findMount } from '../../src/mount/mountinfo.js';
import { bindMount, unmount } from '../../src/mount/mounter.js';
import { EBUSY, EINVAL, bind, umount2 } from '../../src/mount/syscalls.js';
import { CallScope } from '../../src/util/call-context.js';
import { ExecError } from '../../src/util/exec.js';

/** The mount addon (native/strata_mount.cc) on real bind mounts of a temporary directory (the tests run as root). */

const root = mkdtempSync(path.join(tmpdir(), 'strata-syscalls-'));
const src = path.join(root, 'src');
mkdirSync(src);
writeFileSync(path.join(src, 'f'), 'x');
const dir = (name: string) => {
  const d = path.join(root, name);
  mkdirSync(d, { recursive: true });
  return d;
};

after(async () => {
  for (const d of ['a', 'b', 'c', 'd', 'e']) await unmount(path.join(root, d)).catch(() => {});
  rmSync(root, { recursive: true, force: true });
});

const errno = (n: number) => (e: unknown) => e instanceof ExecError && e.exitCode === n && !e.timedOut;

describe('mount addon', () => {
  it('binds and unmounts, as mount --bind and umount do', async () => {
    const t = dir('a');
    await bind(src, t, 5_000);
    assert.equal((await findMount(t))?.mountPoint, t);
    await umount2(t, false, 5_000);
    assert.equal(await findMount(t), undefined);
  });

  it('answers a failure with its errno, named in the message', async () => {
    const t = dir('b');
    await assert.rejects(umount2(t, false, 5_000), (e: unknown) => errno(EINVAL)(e) && /EINVAL/.test((e as Error).message));
    await assert.rejects(bind(path.join(root, 'missing'), t, 5_000), (e: unknown) => e instanceof ExecError && /ENOENT/.test(e.message));
    assert.equal(await findMount(t), undefined);
  });

  it('never unmounts through a symlink (UMOUNT_NOFOLLOW)', async () => {
    const t = dir('c');
    await bind(src, t, 5_000);
    const link = path.join(root, 'link');
    symlinkSync(t, link);
    await assert.rejects(umount2(link, false, 5_000), errno(EINVAL));
    assert.ok(await findMount(t), 'the mount behind the symlink stays');
    await umount2(t, false, 5_000);
  });

  it('answers EBUSY for a mount in use, which a lazy unmount detaches', async () => {
    const t = dir('d');
    await bind(src, t, 5_000);
    const fh = await open(path.join(t, 'f'));
    try {
      await assert.rejects(umount2(t, false, 5_000), errno(EBUSY));
      await umount2(t, true, 5_000);
      assert.equal(await findMount(t), undefined);
    } finally {
      await fh.close();
    }
  });

  it('is not called once the call has no time left', async () => {
    const t = dir('e');
    await bindMount(src, t, false);
    const scope = new CallScope(Date.now() - 1);
    await assert.rejects(scope.run(() => umount2(t, false, 5_000)), (e: unknown) => e instanceof ExecError && e.timedOut);
    scope.settle();
    assert.ok(await findMount(t), 'still mounted: nothing was called');
    await unmount(t);
    assert.equal(await findMount(t), undefined);
  });
});
