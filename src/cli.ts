#!/usr/bin/env node
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ConfigError, loadConfig } from './config/config.js';
import { serve, type Mode } from './csi/server.js';
import { createLogger } from './log.js';
import { packageVersion } from './version.js';
import { parseListen, serveMetrics } from './metrics.js';
import { isNodeId } from './csi/grammar.js';

/** `strata serve`: the one entry point of the controller and the node plugin. */

function parseTopology(v: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of v.split(',').map((s) => s.trim()).filter(Boolean)) {
    const i = pair.indexOf('=');
    if (i <= 0) throw new InvalidArgumentError(`"${pair}" is not key=value`);
    out[pair.slice(0, i)] = pair.slice(i + 1);
  }
  return out;
}

function wholeNumber(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be a whole number');
  return n;
}

function metricsAddress(v: string): string {
  try {
    parseListen(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
  return v;
}

const program = new Command('strata').description('Strata CSI driver for Ceph RBD, CephFS and S3').version(packageVersion());

program
  .command('serve')
  .description('serve the CSI gRPC API on a unix socket')
  .addOption(new Option('--mode <mode>', 'which CSI services to run').choices(['controller', 'node', 'all']).default('all').env('STRATA_MODE'))
  .addOption(new Option('--endpoint <url>', 'listen address: unix:///path/csi.sock (or tcp://host:port for tests)').default('unix:///csi/csi.sock').env('CSI_ENDPOINT'))
  .addOption(new Option('--node-id <name>', 'this node\'s id (the Kubernetes node name); required in node mode').env('NODE_ID'))
  .addOption(new Option('--config <file>', 'driver config (YAML)').default('/etc/strata/config.yaml').env('STRATA_CONFIG'))
  .addOption(new Option('--state-dir <dir>', 'node-private directory for FUSE mount points and stage records').default('/var/lib/strata').env('STRATA_STATE_DIR'))
  .addOption(new Option('--node-topology <k=v,...>', 'topology segments this node reports in NodeGetInfo').argParser(parseTopology).env('STRATA_NODE_TOPOLOGY'))
  .addOption(new Option('--max-volumes <n>', 'most volumes this node takes (0: no limit)').argParser(wholeNumber).default(0).env('STRATA_MAX_VOLUMES'))
  .addOption(new Option('--log-level <level>', 'pino log level').choices(['trace', 'debug', 'info', 'warn', 'error']).default('info').env('STRATA_LOG_LEVEL'))
  .addOption(new Option('--drain-seconds <n>', 'on SIGTERM, how long calls in flight may finish').argParser(wholeNumber).default(25).env('STRATA_DRAIN_SECONDS'))
  .addOption(new Option('--heal-interval <seconds>', 'how often the node remounts FUSE volumes whose daemon died (0: only at start)').argParser(wholeNumber).default(30).env('STRATA_HEAL_INTERVAL'))
  .addOption(new Option('--metrics-address <[host]:port>', 'serve Prometheus metrics at http://<address>/metrics (off when unset)').argParser(metricsAddress).env('STRATA_METRICS_ADDRESS'))
  .action(async (o: { mode: Mode; endpoint: string; nodeId?: string; config: string; stateDir: string; nodeTopology?: Record<string, string>; maxVolumes: number; logLevel: string; drainSeconds: number; healInterval: number; metricsAddress?: string }) => {
    const log = createLogger(o.logLevel);
    let config;
    try {
      config = loadConfig(o.config);
    } catch (e) {
      if (e instanceof ConfigError) {
        log.fatal(e.message);
        process.exit(2);
      }
      throw e;
    }
    if (o.mode !== 'controller' && !o.nodeId) {
      log.fatal('--node-id (or NODE_ID) is required in node and all modes');
      process.exit(2);
    }
    if (o.nodeId !== undefined && !isNodeId(o.nodeId)) {
      log.fatal('--node-id must be a Kubernetes node name (letters, digits, "-" and ".", at most 253 bytes)');
      process.exit(2);
    }
    const server = await serve({
      mode: o.mode,
      endpoint: o.endpoint,
      config,
      stateDir: path.resolve(o.stateDir), // sysfs names loop backing files by absolute path
      version: packageVersion(),
      log,
      drainMs: o.drainSeconds * 1000,
      healIntervalSeconds: o.healInterval,
      node: o.nodeId ? { nodeId: o.nodeId, topology: o.nodeTopology, maxVolumes: o.maxVolumes } : undefined,
    });
    const metrics = o.metricsAddress ? await serveMetrics(o.metricsAddress) : undefined;
    if (o.metricsAddress) log.info({ address: o.metricsAddress }, 'serving metrics');
    let stopping = false;
    const shutdown = (sig: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ sig }, 'shutting down');
      metrics?.close();
      server.stop().then(() => process.exit(0));
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
  });

program
  .command('check-config')
  .description('validate a config file and exit')
  .argument('<file>')
  .action((file: string) => {
    try {
      const c = loadConfig(file);
      console.log(`ok: driver ${c.driverName}, clusters ${c.clusters.map((x) => x.id).join(', ')}`);
    } catch (e) {
      console.error((e as Error).message);
      process.exit(2);
    }
  });

await program.parseAsync(process.argv);
