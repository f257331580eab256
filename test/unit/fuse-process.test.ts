import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fuseDaemonPid, waitExit } from '../../src/mount/fuse-process.js';

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
});
