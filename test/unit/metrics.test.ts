import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { observeRpc, parseListen, serveMetrics } from '../../src/metrics.js';

describe('metrics', () => {
  it('parses listen addresses and refuses bad ones', () => {
    assert.deepEqual(parseListen(':9090'), { host: undefined, port: 9090 });
    assert.deepEqual(parseListen('127.0.0.1:9091'), { host: '127.0.0.1', port: 9091 });
    assert.throws(() => parseListen('9090x'), /not \[host\]:port/);
    assert.throws(() => parseListen(':0'), /not \[host\]:port/);
    assert.throws(() => parseListen(':70000'), /not \[host\]:port/);
  });

  it('serves RPC counts and latencies over HTTP', async () => {
    observeRpc('CreateVolume', 'OK', 12);
    observeRpc('CreateVolume', 'ABORTED', 3);
    const server = await serveMetrics('127.0.0.1:19391');
    try {
      const res = await fetch('http://127.0.0.1:19391/metrics');
      assert.equal(res.status, 200);
      const body = await res.text();
      assert.match(body, /strata_rpc_requests_total\{method="CreateVolume",code="OK"\} 1/);
      assert.match(body, /strata_rpc_requests_total\{method="CreateVolume",code="ABORTED"\} 1/);
      assert.match(body, /strata_rpc_duration_seconds_count\{method="CreateVolume"\} 2/);
      assert.match(body, /strata_process_resident_memory_bytes \d+/);
      assert.equal((await fetch('http://127.0.0.1:19391/other')).status, 404);
    } finally {
      server.close();
    }
  });
});
