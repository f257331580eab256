import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { loadCsi } from '../../src/csi/proto.js';
import { ensureBuilt, K8S_DIR, type BuiltPaths } from './paths.js';

/**
 * The lab's stand-ins for node-driver-registrar and livenessprobe must behave as the real ones:
 * kubelet registers the driver through the first, and the second decides whether kubelet kills
 * the driver. Here a test plays kubelet and a scripted Identity service plays the driver.
 */

type ProbeAnswer = { ready?: boolean; error?: grpc.status; delayMs?: number };

async function fakeDriver(socket: string, answer: () => ProbeAnswer): Promise<grpc.Server> {
  const server = new grpc.Server();
  server.addService(loadCsi().csi.v1.Identity.service, {
    GetPluginInfo: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { name: 'strata.csi.dev', vendor_version: 'test' }),
    GetPluginCapabilities: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { capabilities: [] }),
    Probe: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => {
      const a = answer();
      setTimeout(() => {
        if (a.error !== undefined) cb({ code: a.error, details: 'scripted failure' });
        else cb(null, a.ready === undefined ? {} : { ready: { value: a.ready } });
      }, a.delayMs ?? 0);
    },
  });
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
  return server;
}

function run(bin: string, args: string[]): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

async function waitFor(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(50)) if (ok()) return;
  throw new Error(`timed out waiting for ${what}`);
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

let built: BuiltPaths;
let dir: string;
const children: ChildProcess[] = [];
const servers: grpc.Server[] = [];

before(() => {
  built = ensureBuilt(['standins']);
  dir = mkdtempSync(path.join(tmpdir(), 'strata-standins-'));
});
after(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const s of servers) s.forceShutdown();
  rmSync(dir, { recursive: true, force: true });
});

describe('node-driver-registrar stand-in', () => {
  type RegistrationClient = grpc.Client & Record<string, (req: object, cb: (e: grpc.ServiceError | null, r?: Record<string, unknown>) => void) => void>;
  const call = (c: RegistrationClient, method: string, req: object) =>
    new Promise<Record<string, unknown>>((resolve, reject) => c[method]!(req, (e, r) => (e ? reject(e) : resolve(r!))));
  let client: RegistrationClient;
  let registrar: ReturnType<typeof run>;
  const endpoint = '/var/lib/kubelet/plugins/strata.csi.dev/csi.sock';

  it('waits for the driver, then serves GetInfo on <registry>/<driver name>-reg.sock with the host endpoint', async () => {
    const driverSock = path.join(dir, 'reg-driver.sock');
    const registry = path.join(dir, 'registry');
    mkdirSync(registry);
    registrar = run(built.NODE_DRIVER_REGISTRAR, [`--csi-address=${driverSock}`, `--kubelet-registration-path=${endpoint}`, `--plugin-registration-path=${registry}`, '--v=2']);
    children.push(registrar.child);
    await sleep(1500);
    const regSock = path.join(registry, 'strata.csi.dev-reg.sock');
    assert.equal(existsSync(regSock), false, 'registered before the driver answered');
    assert.equal(registrar.child.exitCode, null, registrar.output());
    servers.push(await fakeDriver(driverSock, () => ({ ready: true })));
    await waitFor('the registration socket', () => existsSync(regSock), 15_000);

    const def = protoLoader.loadSync('pluginregistration.proto', { keepCase: true, defaults: true, includeDirs: [path.join(K8S_DIR, 'proto')] });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { pluginregistration: { Registration: new (a: string, c: grpc.ChannelCredentials) => RegistrationClient } };
    client = new pkg.pluginregistration.Registration(`unix://${regSock}`, grpc.credentials.createInsecure());
    const info = await call(client, 'GetInfo', {});
    assert.deepEqual(info, { type: 'CSIPlugin', name: 'strata.csi.dev', endpoint, supported_versions: ['1.0.0'] });
  });

  it('keeps running after a successful registration and exits 1 after a failed one', async () => {
    await call(client, 'NotifyRegistrationStatus', { plugin_registered: true });
    await sleep(300);
    assert.equal(registrar.child.exitCode, null, registrar.output());
    await call(client, 'NotifyRegistrationStatus', { plugin_registered: false, error: 'version not supported' }).catch(() => undefined);
    assert.equal(await registrar.exited, 1, registrar.output());
    assert.match(registrar.output(), /version not supported/);
    client.close();
  });
});

describe('livenessprobe stand-in', () => {
  let answer: ProbeAnswer = { ready: true };
  let url: string;

  before(async () => {
    const driverSock = path.join(dir, 'probe-driver.sock');
    servers.push(await fakeDriver(driverSock, () => answer));
    const port = await freePort();
    const probe = run(built.LIVENESSPROBE, [`--csi-address=unix://${driverSock}`, `--health-port=${port}`]);
    children.push(probe.child);
    url = `http://127.0.0.1:${port}/healthz`;
    await waitFor('/healthz', () => probe.output().includes('serving /healthz'));
    await sleep(100);
  });

  const cases: Array<[string, ProbeAnswer, number]> = [
    ['ready=true answers 200', { ready: true }, 200],
    ['no ready field (ready, per the CSI spec) answers 200', {}, 200],
    ['ready=false answers 500', { ready: false }, 500],
    ['a Probe error answers 500', { error: grpc.status.UNAVAILABLE }, 500],
    ['a Probe slower than the 1 s default timeout answers 500', { ready: true, delayMs: 1500 }, 500],
    ['a Probe just under the timeout answers 200', { ready: true, delayMs: 700 }, 200],
  ];
  for (const [name, a, status] of cases) {
    it(name, async () => {
      answer = a;
      const start = Date.now();
      const res = await fetch(url);
      assert.equal(res.status, status, await res.text());
      if (a.delayMs && status === 500) assert.ok(Date.now() - start < 1400, `took ${Date.now() - start} ms`);
    });
  }
});
