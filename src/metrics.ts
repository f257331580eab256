import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Prometheus metrics: every RPC's count by result code and its latency, plus
 * the process figures prom-client collects. Served only when asked for
 * (--metrics-address), so tests and the demo open no port.
 */

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'strata_' });

const calls = new Counter({
  name: 'strata_rpc_requests_total',
  help: 'CSI calls handled, by method and gRPC status code',
  labelNames: ['method', 'code'] as const,
  registers: [registry],
});

const latency = new Histogram({
  name: 'strata_rpc_duration_seconds',
  help: 'CSI call latency, by method',
  labelNames: ['method'] as const,
  // Calls range from a mountinfo read (~1 ms) to a clone or a FUSE teardown (tens of seconds).
  buckets: [0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  registers: [registry],
});

const reachable = new Gauge({
  name: 'strata_storage_reachable',
  help: 'Whether a configured Ceph monitor or S3 endpoint answered the last reachability check (1) or not (0)',
  labelNames: ['cluster', 'store'] as const,
  registers: [registry],
});

export function observeReachable(cluster: string, store: 'ceph' | 's3', ok: boolean): void {
  reachable.set({ cluster, store }, ok ? 1 : 0);
}

export function observeRpc(method: string, code: string, ms: number): void {
  calls.inc({ method, code });
  latency.observe({ method }, ms / 1000);
}

/** Parses ":9090" or "127.0.0.1:9090". */
export function parseListen(address: string): { host?: string; port: number } {
  const m = /^(?:(.*):)?(\d{1,5})$/.exec(address);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port > 0 && port < 65536)) throw new Error(`metrics address "${address}" is not [host]:port`);
  return { host: m[1] || undefined, port };
}

export async function serveMetrics(address: string): Promise<Server> {
  const { host, port } = parseListen(address);
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      (e: Error) => res.writeHead(500).end(e.message),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
