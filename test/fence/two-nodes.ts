import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before } from 'node:test';
import { CephLab, type Component, type DriverConfigOptions } from '../lab/ceph-lab.js';
import { connect, startDriver, type CsiClients, type DriverProcess } from '../helpers/driver.js';
import { leftovers } from '../helpers/leftovers.js';
import { fusePids, until } from './helpers.js';

/**
 * One lab, its controller and two node plugins, node-a and node-b, for a
 * describe block: `useTwoNodes` starts them before its tests and stops them
 * after, thawing first any FUSE daemon a failed test left frozen (it would
 * hang the cleanup). The node plugins run no periodic heal pass: what a node
 * does must come from its start-up pass, at a known time.
 */
export class TwoNodes {
  lab!: CephLab;
  ctrl!: DriverProcess;
  a!: DriverProcess;
  b!: DriverProcess;
  cc!: CsiClients;
  ca!: CsiClients;
  cb!: CsiClients;
  /** The node plugins' config (`nodeConfig` options: the S3 tests' nodes hold no keys). */
  config!: string;
  /** The lab's admin user, as a StorageClass's node-stage and provisioner secret. */
  secrets!: Record<string, string>;

  constructor(
    private readonly components: Component[],
    private readonly nodeConfig: DriverConfigOptions,
  ) {}

  async start(): Promise<void> {
    this.lab = await CephLab.start({ components: this.components });
    this.ctrl = await startDriver({ config: this.lab.writeDriverConfig(), mode: 'controller' });
    this.config = this.lab.writeDriverConfig(this.nodeConfig);
    this.a = await startDriver({ config: this.config, mode: 'node', nodeId: 'node-a', args: ['--heal-interval', '0'] });
    this.b = await startDriver({ config: this.config, mode: 'node', nodeId: 'node-b', args: ['--heal-interval', '0'] });
    this.cc = connect(this.ctrl.socket);
    this.ca = { ...connect(this.a.socket), controller: this.cc.controller };
    this.cb = { ...connect(this.b.socket), controller: this.cc.controller };
    this.secrets = { userID: 'admin', userKey: this.lab.adminKey };
  }

  async stop(): Promise<void> {
    for (const p of [...fusePids(this.a?.dir ?? '/nonexistent'), ...fusePids(this.b?.dir ?? '/nonexistent')]) process.kill(p, 'SIGCONT');
    this.cc?.close();
    this.ca?.close();
    this.cb?.close();
    await this.a?.stop();
    await this.b?.stop();
    await this.ctrl?.stop();
    await this.lab?.stop();
  }

  /**
   * Kills node-a's plugin (-9) and starts it again on the same state, as a
   * node coming back after being fenced, then waits for it to release what
   * it staged under `volumeDir`: "volume released" logged, no mount or FUSE
   * daemon left (`daemonGone` for one serving elsewhere), no stage record
   * kept, nothing healed. Every volume staged there, when several are.
   */
  async restartA(volumeDir: string, daemonGone: () => boolean = () => true): Promise<void> {
    this.ca.close();
    this.a.child.kill('SIGKILL');
    await until('node-a plugin to exit', () => this.a.child.exitCode !== null || this.a.child.signalCode !== null);
    this.a = await startDriver({ config: this.config, mode: 'node', nodeId: 'node-a', dir: this.a.dir, args: ['--heal-interval', '0'] });
    this.ca = { ...connect(this.a.socket), controller: this.cc.controller };
    const log = () => readFileSync(this.a.logFile, 'utf8');
    const staged = path.join(this.a.stateDir, 'staged');
    const records = () => (existsSync(staged) ? readdirSync(staged) : []);
    try {
      await until('node-a to release the volume', async () => log().includes('"volume released"') && records().length === 0 && (await leftovers(volumeDir)).length === 0 && daemonGone());
    } catch (e) {
      const warnings = log().split('\n').filter((l) => /"level":(40|50|60)/.test(l)).slice(-8);
      throw new Error(`${(e as Error).message}; left: ${[...(await leftovers(volumeDir)), ...records().map((r) => `stage record ${r}`)].join(', ') || 'nothing'}; plugin warnings:\n${warnings.join('\n')}`);
    }
    assert.doesNotMatch(log(), /volume healed|mounting it again/);
  }
}

/** A TwoNodes started before the enclosing describe's tests and stopped after them. */
export function useTwoNodes(components: Component[], nodeConfig: DriverConfigOptions = {}): TwoNodes {
  const n = new TwoNodes(components, nodeConfig);
  before(() => n.start());
  after(() => n.stop());
  return n;
}
