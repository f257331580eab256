import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { redact, wrap, type RpcRuntime } from '../../src/csi/handler.js';
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
});
