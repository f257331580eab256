import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { KeyFiles, processStart, sweepKeyDirs } from '../../src/ceph/credentials.js';
import { mapS3Error } from '../../src/backends/s3/store.js';
import { toStatus } from '../../src/csi/handler.js';
import { CsiError, deadlineExceeded, isCsiError } from '../../src/errors.js';
import { CallScope, boundedSignal, boundedTimeout, currentCall, outsideCall, stopReason } from '../../src/util/call-context.js';
import { ExecError, run } from '../../src/util/exec.js';
import { enqueueByOrder } from '../../src/ceph/rados-bridge.js';

/**
 * Every backend call follows its gRPC call: the call scope, commands cut to
 * the time left and killed when it stops, errors mapped to retryable codes,
 * and key files that live only while a call needs them.
 */

describe('the call scope', () => {
  it('is seen by everything the handler awaits, and by nothing outside it', async () => {
    const scope = new CallScope(Date.now() + 60_000);
    await scope.run(async () => {
      await sleep(1);
      assert.equal(currentCall(), scope);
      await Promise.resolve().then(() => assert.equal(currentCall(), scope));
      outsideCall(() => assert.equal(currentCall(), undefined));
    });
    assert.equal(currentCall(), undefined);
    scope.settle();
  });

  it('cuts timeouts to the time left, less a margin, and leaves them alone without a deadline', async () => {
    const scope = new CallScope(Date.now() + 20_000);
    scope.run(() => {
      const t = boundedTimeout(60_000);
      assert.ok(t <= 19_000 && t > 18_500, `got ${t}`);
      assert.equal(boundedTimeout(5_000), 5_000);
    });
    scope.settle();
    new CallScope(undefined).run(() => assert.equal(boundedTimeout(60_000), 60_000));
    assert.equal(boundedTimeout(60_000), 60_000);
  });

  it('aborts with DEADLINE_EXCEEDED before the deadline, and not at all once settled', async () => {
    const scope = new CallScope(Date.now() + 300);
    const t0 = Date.now();
    await new Promise((r) => scope.signal.addEventListener('abort', r));
    assert.ok(Date.now() - t0 < 300, 'aborts inside the deadline, leaving time to answer');
    assert.ok(isCsiError(scope.signal.reason, status.DEADLINE_EXCEEDED));
    scope.run(() => assert.ok(isCsiError(stopReason(), status.DEADLINE_EXCEEDED)));

    const settled = new CallScope(Date.now() + 100);
    settled.settle();
    await sleep(200);
    settled.cancel(); // grpc-js may report a cancel after the answer
    assert.equal(settled.signal.aborted, false, 'work the call left running is not stopped');
  });

  it('treats a deadline too far for a timer as none', async () => {
    const scope = new CallScope(Date.now() + 40 * 24 * 3600_000);
    await sleep(20);
    assert.equal(scope.signal.aborted, false);
    scope.settle();
  });

  it('runs settle hooks once, and at once when already settled', () => {
    const scope = new CallScope(undefined);
    let n = 0;
    scope.onSettled(() => n++);
    scope.settle();
    scope.settle();
    scope.onSettled(() => n++);
    assert.equal(n, 2);
  });

  it('gives a signal that fires at its own timeout outside a call and with the call inside one', async () => {
    const own = boundedSignal(50);
    await sleep(120);
    assert.ok(own.aborted);
    const scope = new CallScope(undefined);
    const s = scope.run(() => boundedSignal(60_000));
    scope.cancel();
    assert.ok(s.aborted);
    assert.ok(isCsiError(s.reason, status.CANCELLED));
  });
});

describe('commands under a deadline', () => {
  it('kills a command when its call reaches the deadline, with a deadline error', async () => {
    const scope = new CallScope(Date.now() + 1500);
    const t0 = Date.now();
    const err = await scope.run(() => run('sleep', ['10'])).catch((e: unknown) => e);
    assert.ok(err instanceof ExecError && err.timedOut, String(err));
    assert.ok(Date.now() - t0 < 1500, `took ${Date.now() - t0} ms`);
    assert.equal(toStatus(err).code, status.DEADLINE_EXCEEDED);
    scope.settle();
  });

  it('kills a running command when its client cancels', async () => {
    const scope = new CallScope(undefined);
    const p = scope.run(() => run('sleep', ['10'])).catch((e: unknown) => e);
    await sleep(100);
    const t0 = Date.now();
    scope.cancel();
    const err = await p;
    assert.ok(err instanceof ExecError && err.timedOut, String(err));
    assert.ok(Date.now() - t0 < 1000);
  });

  it('starts nothing once the call has stopped', async () => {
    const scope = new CallScope(undefined);
    scope.abort(deadlineExceeded('passed'));
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-t-'));
    const err = await scope.run(() => run('mkdir', [path.join(dir, 'x')])).catch((e: unknown) => e);
    assert.ok(err instanceof ExecError && err.timedOut);
    assert.equal(existsSync(path.join(dir, 'x')), false, 'the command must not have run');
    rmSync(dir, { recursive: true });
  });
});

describe('errors at the edge', () => {
  const code = (e: unknown) => status[toStatus(e).code];
  it('a command that ran out of time, or a Ceph ETIMEDOUT, is DEADLINE_EXCEEDED', () => {
    assert.equal(code(new ExecError('rbd', undefined, 'no answer', true)), 'DEADLINE_EXCEEDED');
    assert.equal(code(new ExecError('ceph fs clone status', 110, 'errno 110', false)), 'DEADLINE_EXCEEDED');
  });
  it('an unreachable cluster or a dead rados client is UNAVAILABLE', () => {
    assert.equal(code(new ExecError('ceph (rados client)', undefined, 'rados client exited (SIGKILL)', false, true)), 'UNAVAILABLE');
    assert.equal(code(new ExecError('ceph fs subvolume info', 107, 'ENOTCONN', false)), 'UNAVAILABLE');
    assert.equal(code(new ExecError('ceph fs subvolume info', 108, 'ESHUTDOWN', false)), 'UNAVAILABLE');
    assert.equal(code(new ExecError('rbd', 110, "rbd: couldn't connect to the cluster!", false)), 'UNAVAILABLE');
    assert.equal(code(new ExecError('ceph', 1, '[errno 110] RADOS timed out (error connecting to the cluster)', false)), 'UNAVAILABLE');
    assert.equal(code(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })), 'UNAVAILABLE');
  });
  it('a busy Ceph operation is ABORTED', () => {
    assert.equal(code(new ExecError('ceph fs subvolume rm', 11, 'EAGAIN', false)), 'ABORTED');
  });
  it('an output cut short is UNAVAILABLE (retry reads it again), never INTERNAL', () => {
    let e: unknown;
    try {
      JSON.parse('{"id": 1, "rc"');
    } catch (x) {
      e = x;
    }
    assert.equal(code(e), 'UNAVAILABLE');
  });
  it('INTERNAL stays for what nothing recognises; errnos of other tools mean nothing', () => {
    assert.equal(code(new TypeError('x is undefined')), 'INTERNAL');
    assert.equal(code(new ExecError('mkfs.ext4', 1, 'bad', false)), 'INTERNAL');
    assert.equal(code(new ExecError('umount', 16, 'busy', false)), 'INTERNAL');
  });
  it('S3: an aborted request answers why its call stopped; no answer or no connection is UNAVAILABLE', () => {
    const why = deadlineExceeded('the deadline passed');
    const abort = Object.assign(new Error('Request aborted'), { name: 'AbortError', cause: why });
    assert.equal(mapS3Error(abort, 'x'), why);
    assert.equal((mapS3Error(Object.assign(new Error('Request aborted'), { name: 'AbortError' }), 'x') as CsiError).code, status.UNAVAILABLE);
    assert.equal((mapS3Error(Object.assign(new Error('x'), { name: 'TimeoutError', code: 'ETIMEDOUT' }), 'x') as CsiError).code, status.UNAVAILABLE);
    assert.equal((mapS3Error(Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }), 'x') as CsiError).code, status.UNAVAILABLE);
  });
});

describe('rados client queue', () => {
  it('sends the requests of older calls first, and a call\'s own requests in the order made', () => {
    const a = new CallScope(undefined);
    const b = new CallScope(undefined);
    assert.ok(a.order < b.order, 'calls are numbered as they begin');
    const q: Array<{ order: number; name: string }> = [];
    enqueueByOrder(q, { order: b.order, name: 'b info' });
    enqueueByOrder(q, { order: a.order, name: 'a info' });
    enqueueByOrder(q, { order: b.order, name: 'b rm' });
    enqueueByOrder(q, { order: a.order, name: 'a rm' });
    const later = new CallScope(undefined);
    enqueueByOrder(q, { order: later.order, name: 'later' });
    assert.deepEqual(q.map((r) => r.name), ['a info', 'a rm', 'b info', 'b rm', 'later']);
  });
});

describe('key files', () => {
  const keyDirs = () => readdirSync(existsSync('/dev/shm') ? '/dev/shm' : tmpdir()).filter((n) => n.startsWith(`strata-keys-${process.pid}-`));
  const KEY = 'AQBfZ1dlAAAAABAAk2Xx0ow9m4cWqkUqCq3ZVg==';

  it('are held while a call needs them, shared by concurrent calls, and removed when the last settles', () => {
    const kf = new KeyFiles();
    const a = new CallScope(undefined);
    const b = new CallScope(undefined);
    const fa = a.run(() => kf.fileFor('u1', KEY));
    const fb = b.run(() => new KeyFiles().fileFor('u1', KEY));
    assert.equal(fa, fb);
    assert.equal(statSync(fa).mode & 0o777, 0o600);
    assert.equal(statSync(path.dirname(fa)).mode & 0o777, 0o700);
    assert.equal(keyDirs().length, 1, 'one directory per process, named by its pid');
    a.settle();
    assert.ok(existsSync(fa), 'still needed by the other call');
    b.settle();
    assert.equal(existsSync(fa), false, 'no call needs it any more');
    assert.equal(KeyFiles.held(), 0);
    // A later call writes it again.
    const c = new CallScope(undefined);
    const fc = c.run(() => kf.fileFor('u1', KEY));
    assert.ok(existsSync(fc));
    c.settle();
    assert.equal(existsSync(fc), false);
  });

  it('a request\'s identity writes its key to a file only when a tool asks for the file', () => {
    const kf = new KeyFiles();
    const s = new CallScope(undefined);
    const before = KeyFiles.held();
    const id = s.run(() => kf.identity('u4', KEY));
    assert.equal(id.key(), KEY, 'the rados client gets the key itself');
    assert.equal(id.tag, s.run(() => kf.identity('u4', KEY)).tag, 'the same user and key: the same client');
    assert.notEqual(id.tag, kf.identity('u5', KEY).tag);
    assert.equal(KeyFiles.held(), before, 'no file yet');
    const f = s.run(() => id.keyFile);
    assert.equal(id.keyFile, f, 'written once per identity');
    assert.equal(statSync(f).mode & 0o777, 0o600);
    assert.equal(KeyFiles.held(), before + 1);
    s.settle();
    assert.equal(existsSync(f), false, 'removed with its call');
    assert.equal(KeyFiles.held(), before);
  });

  it('work a settled call left running holds its key file for a while, as work outside any call does', () => {
    const s = new CallScope(undefined);
    s.settle();
    const f = s.run(() => new KeyFiles().fileFor('u2', KEY));
    assert.ok(existsSync(f), 'not removed the moment it was written');
    const outside = new KeyFiles().fileFor('u3', KEY);
    assert.ok(existsSync(outside));
  });

  it('a dead process\'s directory is swept; a live one\'s (or one of a pid now used by another process) is judged by start time', () => {
    const base = mkdtempSync(path.join(tmpdir(), 'strata-shm-'));
    const mine = `strata-keys-${process.pid}-${processStart(process.pid)}-abc123`;
    const reused = `strata-keys-${process.pid}-1-abc123`; // same pid, another start: an earlier process
    const dead = 'strata-keys-999999999-5-abc123';
    const legacy = 'strata-keys-Ab12Cd'; // an earlier version's name, with no owner
    const other = 'not-ours';
    for (const d of [mine, reused, dead, legacy, other]) mkdirSync(path.join(base, d));
    assert.deepEqual(sweepKeyDirs(base).sort(), [dead, legacy, reused].sort());
    assert.deepEqual(readdirSync(base).sort(), [mine, other].sort());
    rmSync(base, { recursive: true });
  });
});
