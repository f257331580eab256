import { existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import { RbdController } from '../backends/rbd/controller.js';
import { RbdNode } from '../backends/rbd/node.js';
import { CephfsController } from '../backends/cephfs/controller.js';
import { CephfsNode } from '../backends/cephfs/node.js';
import { S3Controller } from '../backends/s3/controller.js';
import { S3Node } from '../backends/s3/node.js';
import { controllerService } from './controller.js';
import { identityService, watchReachability } from './identity.js';
import { KeyedTryLock } from './locks.js';
import { nodeService, type NodeIdentity } from './node.js';
import { Healer } from '../node/healer.js';
import { StageRecords } from '../node/stage-records.js';
import { NodeVolumes } from '../node/volumes.js';
import { loadCsi } from './proto.js';
import { lenientService, type RpcRuntime } from './handler.js';

/** Builds the gRPC server for a mode and runs it on a unix socket (or TCP for tests). */

export type Mode = 'controller' | 'node' | 'all';

export interface ServeOptions {
  mode: Mode;
  endpoint: string;
  config: Config;
  node?: NodeIdentity;
  stateDir: string;
  version: string;
  log: Logger;
  /** How often the node looks for dead FUSE mounts to heal (0: only at start). */
  healIntervalSeconds?: number;
  /** How long SIGTERM waits for calls in flight before cutting them off. */
  drainMs?: number;
}

export interface RunningServer {
  address: string;
  stop(): Promise<void>;
}

function listenAddress(endpoint: string): { bind: string; socket?: string } {
  if (endpoint.startsWith('unix://')) {
    const socket = endpoint.slice('unix://'.length);
    return { bind: `unix:${socket}`, socket };
  }
  if (endpoint.startsWith('unix:')) return { bind: endpoint, socket: endpoint.slice(5) };
  if (endpoint.startsWith('tcp://')) return { bind: endpoint.slice(6) };
  throw new Error(`endpoint must be unix:///path or tcp://host:port, got ${endpoint}`);
}

export async function serve(opts: ServeOptions): Promise<RunningServer> {
  const csi = loadCsi().csi.v1;
  const rt: RpcRuntime = { log: opts.log, locks: new KeyedTryLock(), inflight: { count: 0 } };
  // channelz (grpc-js's call statistics) is on by default and costs every call; nothing here serves it.
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024, 'grpc.enable_channelz': 0 });
  const controller = opts.mode !== 'node';
  let healer: Healer | undefined;
  const node = opts.mode !== 'controller';
  server.addService(lenientService(csi.Identity.service), identityService(rt, opts.config, { name: opts.config.driverName, version: opts.version }, { controller }));
  if (controller) server.addService(lenientService(csi.Controller.service), controllerService(rt, opts.config, { rbd: new RbdController(opts.config, opts.log), cephfs: new CephfsController(opts.config), s3: new S3Controller(opts.config, opts.log) }));
  if (node) {
    if (!opts.node?.nodeId) throw new Error('node mode needs a node id (--node-id)');
    mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
    const backends = { rbd: new RbdNode(opts.config, opts.stateDir, opts.node.nodeId), cephfs: new CephfsNode(opts.config), s3: new S3Node(opts.config, opts.stateDir) };
    const records = new StageRecords(opts.stateDir);
    healer = new Healer(rt.locks, backends, records, opts.log.child({ component: 'healer' }));
    server.addService(lenientService(csi.Node.service), nodeService(rt, backends, opts.node, new NodeVolumes(records, healer)));
  }

  const { bind, socket } = listenAddress(opts.endpoint);
  if (socket) {
    mkdirSync(path.dirname(socket), { recursive: true });
    // A socket left by a previous run would make bind fail with EADDRINUSE.
    if (existsSync(socket) && statSync(socket).isSocket()) rmSync(socket);
  }
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(bind, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const address = socket ? `unix://${socket}` : bind.replace(/:0$/, `:${port}`);
  opts.log.info({ mode: opts.mode, address, driver: opts.config.driverName, version: opts.version }, 'serving');
  healer?.start((opts.healIntervalSeconds ?? 30) * 1000);
  const stopWatching = watchReachability(opts.config, opts.log.child({ component: 'reachability' }));

  const stop = async () => {
    rt.draining = true;
    healer?.stop();
    stopWatching();
    const drainMs = opts.drainMs ?? 25_000;
    if (rt.inflight.count > 0) {
      opts.log.info({ inflight: rt.inflight.count, drainMs }, 'waiting for calls in flight');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, drainMs);
        rt.inflight.idle = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    server.forceShutdown();
    if (socket && existsSync(socket)) rmSync(socket, { force: true });
    opts.log.info('stopped');
  };
  return { address, stop };
}
