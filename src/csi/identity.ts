import { connect } from 'node:net';
import type { Logger } from 'pino';
import { observeReachable } from '../metrics.js';
import type { Config } from '../config/config.js';
import type { IdentityHandlers } from './gen/csi/v1/Identity.js';
import { wrap, type RpcRuntime } from './handler.js';
import type { PluginCapability } from './gen/csi/v1/PluginCapability.js';

/**
 * Identity: name and version, capabilities, and a Probe that says whether
 * this process serves gRPC. Probe is what the livenessprobe sidecar calls
 * (with a 1 s timeout): storage it cannot reach must not make kubelet
 * restart the plugin, which would take every FUSE mount on the node with it.
 * Storage reachability is checked in the background instead, logged when it
 * changes and exported as the strata_storage_reachable metric; calls that
 * need an unreachable store answer UNAVAILABLE.
 */

export interface PluginInfo {
  name: string;
  version: string;
}

const REACH_TIMEOUT_MS = 2_000;
const REACH_INTERVAL_MS = 30_000;

function tcpReachable(hostPort: string, timeoutMs: number): Promise<boolean> {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(hostPort.replace(/^v[12]:/, ''));
  const host = m?.[1] ?? hostPort;
  const port = Number(m?.[2] ?? 6789);
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

function endpointHostPort(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || (u.protocol === 'https:' ? 443 : 80)}`;
}

export interface Reachability {
  cluster: string;
  store: 'ceph' | 's3';
  ok: boolean;
  endpoints: string;
}

/** Whether each configured store answers: any one Ceph monitor is enough (that is how Ceph clients behave). */
export async function reachability(cfg: Config): Promise<Reachability[]> {
  const checks: Array<Promise<Reachability>> = [];
  for (const c of cfg.clusters) {
    if (c.ceph) {
      const endpoints = c.ceph.monitors.join(', ');
      checks.push(Promise.all(c.ceph.monitors.map((m) => tcpReachable(m, REACH_TIMEOUT_MS))).then((r) => ({ cluster: c.id, store: 'ceph', ok: r.some(Boolean), endpoints })));
    }
    if (c.s3) {
      const hp = endpointHostPort(c.s3.endpoint);
      checks.push(tcpReachable(hp, REACH_TIMEOUT_MS).then((ok) => ({ cluster: c.id, store: 's3', ok, endpoints: hp })));
    }
  }
  return Promise.all(checks);
}

/** Checks reachability now and every interval, logging changes and setting the metric; returns a stop function. */
export function watchReachability(cfg: Config, log: Logger, intervalMs = REACH_INTERVAL_MS): () => void {
  const last = new Map<string, boolean>();
  const check = async () => {
    for (const r of await reachability(cfg)) {
      observeReachable(r.cluster, r.store, r.ok);
      const key = `${r.cluster}/${r.store}`;
      if (last.get(key) === r.ok) continue;
      if (r.ok) log.info({ cluster: r.cluster, store: r.store }, 'storage reachable');
      else log.warn({ cluster: r.cluster, store: r.store, endpoints: r.endpoints }, 'storage unreachable: calls that need it answer UNAVAILABLE until it is back');
      last.set(key, r.ok);
    }
  };
  void check();
  const timer = setInterval(() => void check(), intervalMs).unref();
  return () => clearInterval(timer);
}

export function identityService(rt: RpcRuntime, cfg: Config, info: PluginInfo, opts: { controller: boolean }): IdentityHandlers {
  const topology = cfg.clusters.some((c) => c.topology);
  return {
    GetPluginInfo: wrap(rt, 'GetPluginInfo', async () => ({ name: info.name, vendor_version: info.version })),
    GetPluginCapabilities: wrap(rt, 'GetPluginCapabilities', async () => {
      const caps: PluginCapability[] = [{ volume_expansion: { type: 'ONLINE' } }];
      if (opts.controller) caps.push({ service: { type: 'CONTROLLER_SERVICE' } });
      if (topology) caps.push({ service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } });
      return { capabilities: caps };
    }),
    // A serving process is ready whatever the storage does (a draining one gets UNAVAILABLE from the wrapper).
    Probe: wrap(rt, 'Probe', async () => ({ ready: { value: true } })),
  };
}
