import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { isCsiError } from '../../src/errors.js';
import { fuseDaemonPid, hasExited, waitExit } from '../../src/mount/fuse-process.js';
import { mountHealth, unmount } from '../../src/mount/mounter.js';

describe('fuse-process', () => {
  it('finds the process serving a directory by any of several binaries, and waits for its exit', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-fp-'));
    // A stand-in daemon: a node process whose argv names the directory, as the argv of s3fs/rclone/ceph-fuse name their mount point.
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)', dir], { stdio: 'ignore' });
    try {
      // 'spawn' may fire before exec has replaced the argv; wait until /proc shows the child's.
      const deadline = Date.now() + 5_000;
      while (fuseDaemonPid('node', dir) === undefined && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
      assert.equal(fuseDaemonPid('node', dir), child.pid);
      assert.equal(fuseDaemonPid(['s3fs', 'node'], dir), child.pid);
      assert.equal(fuseDaemonPid(['s3fs', 'rclone'], dir), undefined, 'other binaries do not match');
      assert.equal(fuseDaemonPid('node', `${dir}-other`), undefined, 'another directory does not match');
      child.kill();
      await waitExit(child.pid!, 5_000);
      assert.equal(fuseDaemonPid('node', dir), undefined);
    } finally {
      child.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('takes a zombie for exited: one nobody reaps answers kill(pid, 0) but is done', async () => {
    // The shell backgrounds a short sleep, prints its pid and becomes a long sleep, which never reaps it:
    // the short sleep stays a zombie, as an orphaned FUSE daemon does under a PID 1 that does not reap.
    const parent = spawn('sh', ['-c', 'sleep 0.2 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const pid = Number(await new Promise<string>((res) => parent.stdout.once('data', (b: Buffer) => res(b.toString().trim()))));
      assert.ok(pid > 0);
      assert.equal(hasExited(pid), false, 'running');
      const t0 = Date.now();
      await waitExit(pid, 10_000);
      const waited = Date.now() - t0;
      assert.ok(waited < 1_500, `waited ${waited} ms for a 0.2 s sleep`);
      assert.match(readFileSync(`/proc/${pid}/stat`, 'utf8'), /\) Z /, 'it is a zombie, not gone');
      assert.doesNotThrow(() => process.kill(pid, 0), 'which kill(pid, 0) cannot tell from a live process');
      assert.equal(hasExited(pid), true);
    } finally {
      parent.kill('SIGKILL');
    }
  });

  it('answers ABORTED for a daemon still running at the timeout, so the sidecar retries', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      await assert.rejects(waitExit(child.pid!, 100, 'sleep'), (e: unknown) => isCsiError(e, status.ABORTED) && /sleep \(pid \d+\) is still flushing/.test((e as Error).message));
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('knows a pid that is gone', () => {
    assert.equal(hasExited(2 ** 22 + 1), true, 'above the kernel pid limit: never a process');
    assert.equal(hasExited(process.pid), false);
  });

  const rclone = ['/usr/bin/rclone', '/usr/local/bin/rclone'].some((p) => existsSync(p)) && existsSync('/dev/fuse');
  it('mountHealth asks the FUSE daemon itself: a stopped daemon is hung, a killed one dead', { skip: !rclone && 'needs rclone and /dev/fuse' }, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-mh-'));
    const [src, mnt] = [path.join(dir, 'src'), path.join(dir, 'mnt')];
    mkdirSync(src);
    mkdirSync(mnt);
    // A local directory through rclone: a real FUSE daemon with no store behind it.
    assert.equal(spawnSync('rclone', ['mount', `:local:${src}`, mnt, '--daemon', '--config', '/dev/null'], { timeout: 20_000 }).status, 0);
    const pid = fuseDaemonPid('rclone', mnt)!;
    try {
      assert.equal(await mountHealth(mnt), 'ok');
      process.kill(pid, 'SIGSTOP');
      // The kernel still answers a stat of the root from its attribute cache; the probe must not be fooled.
      assert.equal(await mountHealth(mnt, undefined, 1_000), 'hung');
      process.kill(pid, 'SIGCONT');
      assert.equal(await mountHealth(mnt), 'ok');
      process.kill(pid, 'SIGKILL');
      await waitExit(pid, 5_000);
      assert.equal(await mountHealth(mnt), 'dead');
    } finally {
      process.kill(pid, 'SIGCONT');
      await unmount(mnt).catch(() => spawnSync('umount', ['-l', mnt]));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
