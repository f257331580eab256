import { connect } from 'node:net';
import type { Config } from '../config/config.js';
import type { IdentityHandlers } from './gen/csi/v1/Identity.js';
import { wrap, type RpcRuntime } from './handler.js';
import type { PluginCapability } from './gen/csi/v1/PluginCapability.js';

/**
 * Identity: name and version, capabilities, and a Probe that reports
 * ready=false (with the reason in the log) when a configured cluster cannot
 * be reached, answering within a couple of seconds whatever the network does.
 */

export interface PluginInfo {
  name: string;
  version: string;
}

const PROBE_TIMEOUT_MS = 2_000;
const PROBE_CACHE_MS = 5_000;

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

/** Names the first unreachable cluster endpoint, or undefined when all answer. */
export async function unreachable(cfg: Config): Promise<string | undefined> {
  const checks: Array<Promise<string | undefined>> = [];
  for (const c of cfg.clusters) {
    if (c.ceph) {
      // Any one monitor answering is enough: that is how Ceph clients behave.
      checks.push(
        Promise.all(c.ceph.monitors.map((m) => tcpReachable(m, PROBE_TIMEOUT_MS))).then((r) =>
          r.some(Boolean) ? undefined : `cluster ${c.id}: no Ceph monitor answers (${c.ceph!.monitors.join(', ')})`,
        ),
      );
    }
    if (c.s3) {
      const hp = endpointHostPort(c.s3.endpoint);
      checks.push(tcpReachable(hp, PROBE_TIMEOUT_MS).then((ok) => (ok ? undefined : `cluster ${c.id}: S3 endpoint ${hp} does not answer`)));
    }
  }
  return (await Promise.all(checks)).find(Boolean);
}

export function identityService(rt: RpcRuntime, cfg: Config, info: PluginInfo, opts: { controller: boolean }): IdentityHandlers {
  const topology = cfg.clusters.some((c) => c.topology);
  let cached: { at: number; reason: string | undefined } | undefined;
  return {
    GetPluginInfo: wrap(rt, 'GetPluginInfo', async () => ({ name: info.name, vendor_version: info.version })),
    GetPluginCapabilities: wrap(rt, 'GetPluginCapabilities', async () => {
      const caps: PluginCapability[] = [{ volume_expansion: { type: 'ONLINE' } }];
      if (opts.controller) caps.push({ service: { type: 'CONTROLLER_SERVICE' } });
      if (topology) caps.push({ service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } });
      return { capabilities: caps };
    }),
    Probe: wrap(rt, 'Probe', async (_req, ctx) => {
      if (!cached || Date.now() - cached.at > PROBE_CACHE_MS) cached = { at: Date.now(), reason: await unreachable(cfg) };
      if (cached.reason) ctx.log.warn({ reason: cached.reason }, 'not ready');
      return { ready: { value: !cached.reason } };
    }),
  };
}
