import { spawn, type ChildProcessByStdio } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Metadata, type ServiceError } from '@grpc/grpc-js';
import { run } from '../src/util/exec.js';
import type { CsiClients } from '../test/helpers/driver.js';

/**
 * The benchmarks call the driver through grpc-go (bench/grpc-go), as
 * Kubernetes' sidecars and kubelet do: a Node.js client costs each call about
 * a millisecond more than theirs (measured), which is the benchmark's cost,
 * not the driver's. One client process per plugin socket; calls go to it as
 * JSON lines, so each driver call pays one pipe round trip, as each baseline
 * call does to its python3-rados process.
 */

const here = path.dirname(fileURLToPath(import.meta.url));
const SOURCE = path.resolve(here, '../../bench/grpc-go');
const BINARY = path.join(here, 'grpc-go-client');

let built: Promise<void> | undefined;

/** Builds the client once per run (Go's build cache makes a rebuild about a second). */
export function buildGoClient(): Promise<void> {
  built ??= run('go', ['build', '-o', BINARY, '.'], { cwd: SOURCE, timeoutMs: 600_000 }).then(
    () => undefined,
    (e: Error) => {
      throw new Error(`building the grpc-go benchmark client failed (Go 1.22+ and the module proxy are needed; test/install-deps.sh installs Go): ${e.message}`);
    },
  );
  return built;
}

interface Answer {
  id: number;
  code: number;
  error?: string;
  res?: unknown;
}

class GoClient {
  private readonly child: ChildProcessByStdio<Writable, Readable, null>;
  private readonly pending = new Map<number, { resolve: (r: unknown) => void; reject: (e: Error) => void }>();
  private next = 1;

  constructor(socket: string) {
    this.child = spawn(BINARY, [`unix://${socket}`], { stdio: ['pipe', 'pipe', 'inherit'] });
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      const a = JSON.parse(line) as Answer;
      const p = this.pending.get(a.id);
      if (!p) return;
      this.pending.delete(a.id);
      if (a.code === 0) p.resolve(a.res ?? {});
      // Shaped as grpc-js's errors, so codeOf() and the retries read them alike.
      else p.reject(Object.assign(new Error(`${a.code}: ${a.error ?? ''}`), { code: a.code, details: a.error ?? '', metadata: new Metadata() }) as ServiceError);
    });
    this.child.once('exit', (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`grpc-go client exited with ${code}`));
      this.pending.clear();
    });
  }

  call(method: string, req: unknown): Promise<unknown> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.stdin.write(JSON.stringify({ id, method, req }) + '\n');
    });
  }

  service<T>(name: string): T {
    return new Proxy({} as Record<string, unknown>, { get: (_t, rpc: string) => (req: unknown) => this.call(`/csi.v1.${name}/${rpc}`, req) }) as T;
  }

  close(): void {
    this.child.stdin.end();
  }
}

/** Clients for a controller and a node plugin, through grpc-go (build first with buildGoClient). */
export function goClients(sockets: { controller: string; node: string }): CsiClients {
  const ctrl = new GoClient(sockets.controller);
  const node = new GoClient(sockets.node);
  return {
    identity: ctrl.service('Identity'),
    controller: ctrl.service('Controller'),
    node: node.service('Node'),
    close: () => {
      ctrl.close();
      node.close();
    },
  };
}
