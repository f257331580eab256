import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { loadCsi } from '../../src/csi/proto.js';
import type { ControllerClient } from '../../src/csi/gen/csi/v1/Controller.js';
import type { NodeClient } from '../../src/csi/gen/csi/v1/Node.js';
import type { IdentityClient } from '../../src/csi/gen/csi/v1/Identity.js';
import { forceCleanup } from './leftovers.js';

/**
 * Runs the real `strata serve` binary as a child process (as Kubernetes would)
 * and gives tests promise-based clients for its three services.
 */

const here = path.dirname(fileURLToPath(import.meta.url));
export const CLI = path.resolve(here, '../../src/cli.js');

export interface DriverProcess {
  socket: string;
  dir: string;
  stateDir: string;
  logFile: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

export async function startDriver(opts: { config: string; nodeId?: string; mode?: 'all' | 'controller' | 'node'; dir?: string; logLevel?: string; args?: string[] }): Promise<DriverProcess> {
  const dir = opts.dir ?? mkdtempSync(path.join(tmpdir(), 'strata-drv-'));
  mkdirSync(dir, { recursive: true });
  const socket = path.join(dir, 'csi.sock');
  const stateDir = path.join(dir, 'state');
  const logFile = path.join(dir, 'driver.log');
  const out = openSync(logFile, 'a');
  const args = [CLI, 'serve', '--mode', opts.mode ?? 'all', '--endpoint', `unix://${socket}`, '--config', opts.config, '--state-dir', stateDir, '--log-level', opts.logLevel ?? 'debug'];
  if (opts.nodeId ?? opts.mode !== 'controller') args.push('--node-id', opts.nodeId ?? 'node-a');
  args.push(...(opts.args ?? []));
  // A driver started again in the same directory: wait for its own socket, not the dead one's.
  rmSync(socket, { force: true });
  // Node's flags as the image runs it (Dockerfile): a 1 MiB young generation keeps an idle plugin ~10 MB smaller.
  const child = spawn(process.execPath, ['--max-semi-space-size=1', ...args], { stdio: ['ignore', out, out] });
  closeSync(out);
  for (let i = 0; i < 100 && !existsSync(socket); i++) {
    if (child.exitCode !== null) throw new Error(`driver exited with ${child.exitCode}; see ${logFile}`);
    await sleep(50);
  }
  if (!existsSync(socket)) throw new Error(`driver socket ${socket} never appeared; see ${logFile}`);
  return {
    socket,
    dir,
    stateDir,
    logFile,
    child,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        for (let i = 0; i < 100 && child.exitCode === null; i++) await sleep(50);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      // A test that failed halfway leaves mounts and FUSE daemons; never let them outlive the run.
      await forceCleanup(dir);
    },
  };
}

type Unary<C> = {
  [K in keyof C as C[K] extends (req: infer _R, cb: (err: grpc.ServiceError | null, res?: infer _S) => void) => grpc.ClientUnaryCall ? K : never]: C[K] extends (
    req: infer R,
    cb: (err: grpc.ServiceError | null, res?: infer S) => void,
  ) => grpc.ClientUnaryCall
    ? (req: R) => Promise<S>
    : never;
};

function promisify<C extends grpc.Client>(client: C): Unary<C> {
  return new Proxy({} as Unary<C>, {
    get(_t, name: string) {
      const fn = (client as unknown as Record<string, (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (e: unknown, r: unknown) => void) => void>)[name];
      return (req: unknown) =>
        new Promise((resolve, reject) =>
          fn!.call(client, req, new grpc.Metadata(), { deadline: Date.now() + 120_000 }, (e: unknown, r: unknown) => (e ? reject(e) : resolve(r))),
        );
    },
  });
}

export interface CsiClients {
  identity: Unary<IdentityClient>;
  controller: Unary<ControllerClient>;
  node: Unary<NodeClient>;
  close(): void;
}

export function connect(socket: string): CsiClients {
  const csi = loadCsi().csi.v1;
  const addr = `unix://${socket}`;
  const creds = grpc.credentials.createInsecure();
  const raw = [new csi.Identity(addr, creds), new csi.Controller(addr, creds), new csi.Node(addr, creds)] as const;
  return {
    identity: promisify(raw[0]),
    controller: promisify(raw[1]),
    node: promisify(raw[2]),
    close: () => raw.forEach((c) => c.close()),
  };
}

/** The gRPC status code of a failed call (for assertions). */
export function codeOf(e: unknown): string {
  const c = (e as grpc.ServiceError).code;
  return grpc.status[c] ?? String(c);
}

/** Calls again on ABORTED ("in progress"), once a second up to 30 times, as the sidecars and kubelet do. */
export async function retryAborted<T>(call: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await call();
    } catch (e) {
      if (codeOf(e) !== 'ABORTED' || i >= 30) throw e;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}
