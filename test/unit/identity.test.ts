import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { parseConfig } from '../../src/config/config.js';
import { identityService, reachability, watchReachability } from '../../src/csi/identity.js';
import { KeyedTryLock } from '../../src/csi/locks.js';
import { registry } from '../../src/metrics.js';

/** A port on this machine that refuses connections: bound, then closed. */
async function closedPort(): Promise<number> {
  const s: Server = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('identity', () => {
  it('Probe says the process serves, at once, while no configured store answers (liveness must not restart the plugin)', async () => {
    const port = await closedPort();
    const cfg = parseConfig(`clusters:\n  - id: c\n    ceph: { monitors: ["127.0.0.1:${port}"] }\n    s3: { endpoint: "http://127.0.0.1:${port}" }\n`);
    const lines: string[] = [];
    const rt = { log: pino({ level: 'debug' }, new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) })), locks: new KeyedTryLock(), inflight: { count: 0 } };
    const svc = identityService(rt, cfg, { name: 'd', version: '0' }, { controller: true });
    const t0 = Date.now();
    const res = await new Promise<{ ready?: { value: boolean } }>((resolve, reject) =>
      svc.Probe({ request: {} } as never, ((err: Error | null, r: never) => (err ? reject(err) : resolve(r))) as never),
    );
    assert.equal(res.ready?.value, true);
    assert.ok(Date.now() - t0 < 500, `Probe took ${Date.now() - t0} ms`);

    assert.deepEqual((await reachability(cfg)).map((r) => [r.store, r.ok]), [['ceph', false], ['s3', false]]);
    const stop = watchReachability(cfg, rt.log, 60_000);
    for (let i = 0; i < 100 && !lines.some((l) => l.includes('storage unreachable')); i++) await new Promise((r) => setTimeout(r, 20));
    stop();
    assert.ok(lines.some((l) => l.includes('storage unreachable') && l.includes('"store":"s3"')), 'the outage is logged');
    assert.match(await registry.metrics(), /strata_storage_reachable\{cluster="c",store="ceph"\} 0/);
  });
});
