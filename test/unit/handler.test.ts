import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { EventEmitter } from 'node:events';
import { STOP_GRACE_MS, redact, wrap, type RpcRuntime } from '../../src/csi/handler.js';
import { run } from '../../src/util/exec.js';
import { KeyedTryLock } from '../../src/csi/locks.js';
import { notFound } from '../../src/errors.js';
import { REDACT_PATHS } from '../../src/log.js';

function runtime(lines: string[]): RpcRuntime {
  const sink = new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) });
  return { log: pino({ level: 'debug', redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, sink), locks: new KeyedTryLock(), inflight: { count: 0 } };
}

function call<Req, Res>(h: ReturnType<typeof wrap<Req, Res>>, request: Req): Promise<{ err: { code: number; details: string } | null; res?: Res }> {
  return new Promise((resolve) => h({ request } as never, ((err: never, res: Res) => resolve({ err, res })) as never));
}

/** A call as grpc-js gives it: with a deadline and a 'cancelled' event. */
function callWithin<Req, Res>(h: ReturnType<typeof wrap<Req, Res>>, request: Req, deadlineMs: number) {
  const call = Object.assign(new EventEmitter(), { request, getDeadline: () => new Date(Date.now() + deadlineMs) });
  const answer = new Promise<{ err: { code: number; details: string } | null; ms: number }>((resolve) => {
    const t0 = Date.now();
    h(call as never, ((err: never) => resolve({ err, ms: Date.now() - t0 })) as never);
  });
  return { call, answer };
}

describe('the RPC wrapper', () => {
  it('redacts secrets and mount flags wherever they sit', () => {
    const r = redact({ secrets: { userKey: 'AQD...' }, volume_capability: { mount: { mount_flags: ['password=x'] } }, name: 'n' }) as Record<string, any>;
    assert.equal(r.secrets, '[redacted 1]');
    assert.equal(r.volume_capability.mount.mount_flags, '[redacted 1]');
    assert.equal(r.name, 'n');
  });

  it('never writes a secret to the log', async () => {
    const lines: string[] = [];
    const h = wrap(runtime(lines), 'T', async () => {
      throw notFound('gone');
    });
    const { err } = await call(h, { secrets: { userKey: 'SUPERSECRETKEY==' }, volume_id: 'v' });
    assert.equal(err?.code, status.NOT_FOUND);
    assert.ok(lines.length >= 2);
    assert.ok(!lines.join('').includes('SUPERSECRETKEY'), 'key leaked into logs');
  });

  it('answers ABORTED while the same volume is busy, then frees the lock', async () => {
    const rt = runtime([]);
    const pending: Array<() => void> = [];
    const slow = wrap(rt, 'Slow', () => new Promise<object>((r) => pending.push(() => r({}))), { lockKeys: (q: { volume_id: string }) => [q.volume_id] });
    const first = call(slow, { volume_id: 'v1' });
    const second = await call(slow, { volume_id: 'v1' });
    assert.equal(second.err?.code, status.ABORTED);
    const other = call(slow, { volume_id: 'v2' });
    assert.equal(pending.length, 2, 'a different volume is not blocked');
    pending.forEach((f) => f());
    assert.equal((await first).err, null);
    assert.equal((await other).err, null);
    assert.equal(rt.locks.size, 0);
  });

  it('maps unexpected exceptions to INTERNAL', async () => {
    const h = wrap(runtime([]), 'Boom', async () => {
      throw new TypeError('x is undefined');
    });
    assert.equal((await call(h, {})).err?.code, status.INTERNAL);
  });

  it('stops a call\'s command at its deadline, answers DEADLINE_EXCEEDED in time and frees the lock', async () => {
    const rt = runtime([]);
    const h = wrap(rt, 'Slow', async () => (await run('sleep', ['30']), {}), { lockKeys: (q: { volume_id: string }) => [q.volume_id] });
    const { answer } = callWithin(h, { volume_id: 'v1' }, 2000);
    const { err, ms } = await answer;
    assert.equal(err?.code, status.DEADLINE_EXCEEDED);
    assert.ok(ms < 2000, `answered after ${ms} ms`);
    assert.equal(rt.locks.size, 0);
  });

  it('stops a call\'s command when the client cancels', async () => {
    const rt = runtime([]);
    const h = wrap(rt, 'Slow', async () => (await run('sleep', ['30']), {}), { lockKeys: (q: { volume_id: string }) => [q.volume_id] });
    const { call, answer } = callWithin(h, { volume_id: 'v1' }, 60_000);
    setTimeout(() => call.emit('cancelled'), 200);
    const { err, ms } = await answer;
    assert.equal(err?.code, status.CANCELLED);
    assert.ok(ms < 2000);
    assert.equal(rt.locks.size, 0);
  });

  it('takes the lock back from a handler that ignores its deadline, with a warning', async () => {
    const lines: string[] = [];
    const rt = runtime(lines);
    let finish: () => void = () => {};
    const h = wrap(rt, 'Stuck', () => new Promise<object>((r) => (finish = () => r({}))), { lockKeys: (q: { volume_id: string }) => [q.volume_id] });
    const { answer } = callWithin(h, { volume_id: 'v1' }, 500);
    const { err, ms } = await answer;
    assert.equal(err?.code, status.DEADLINE_EXCEEDED);
    assert.ok(ms >= STOP_GRACE_MS && ms < STOP_GRACE_MS + 2000, `answered after ${ms} ms`);
    assert.equal(rt.locks.size, 0, 'a retry must not get ABORTED for ever');
    assert.ok(lines.some((l) => l.includes('"level":40') && l.includes('lock released')));
    assert.equal(rt.inflight.count, 0);
    finish();
  });
});

describe('undecodable requests', () => {
  it('reach the wrapper marked and are answered INVALID_ARGUMENT, not grpc-js\'s INTERNAL', async () => {
    const { loadCsi } = await import('../../src/csi/proto.js');
    const { lenientService, MALFORMED } = await import('../../src/csi/handler.js');
    const svc = lenientService(loadCsi().csi.v1.Node.service);
    const bad = Buffer.from('088080808080808080808001', 'hex'); // a varint of 11 bytes
    const req = svc.NodeGetVolumeStats!.requestDeserialize(bad) as unknown as Record<symbol, string>;
    assert.ok(req[MALFORMED], 'marked');
    const ok = svc.NodeGetVolumeStats!.requestDeserialize(Buffer.alloc(0)) as unknown as Record<string, unknown>;
    assert.equal(ok.volume_id, '');
    let ran = false;
    const h = wrap(runtime([]), 'NodeGetVolumeStats', async () => ((ran = true), {}));
    const { err } = await call(h, req as never);
    assert.equal(err?.code, status.INVALID_ARGUMENT);
    assert.equal(ran, false);
  });
});
