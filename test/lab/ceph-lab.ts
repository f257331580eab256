import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { run, runAllowFail } from '../../src/util/exec.js';
import { hasExited } from '../../src/mount/fuse-process.js';

/**
 * A throwaway single-node Ceph cluster (mon, mgr, osd and optionally mds and
 * rgw) built from the Debian packages, for integration tests, csi-sanity, the
 * demo and the benchmark. Config lines and pitfalls come from
 * shared/ceph-lab/FACTS.md: paxos tuning, daemon-only asok/pid options,
 * foreground daemons with stderr kept open, mon stopped last.
 */

export type Component = 'rbd' | 'cephfs' | 's3';

export interface LabOptions {
  /** What the lab must serve. rbd needs mon+mgr+osd; cephfs adds mds; s3 adds rgw. */
  components?: Component[];
  /** memstore boots faster and keeps data in OSD RAM. */
  osdStore?: 'bluestore' | 'memstore';
  /**
   * The address every daemon binds (default STRATA_LAB_ADDR or 127.0.0.1). Labs on different
   * addresses (127.0.0.2, a node's own address for pods to reach) run side by side; on one
   * address only one lab runs at a time.
   */
  address?: string;
  log?: (msg: string) => void;
}

export const LAB_S3 = { accessKeyID: 'STRATALABACCESSKEY01', secretAccessKey: 'strata-lab-secret-key-0000000000000000000' };
/** An RGW user with the buckets=*, users=* and user-policy=* admin caps, for bucket quotas and the S3 users of volumes and nodes (the driver's rgwAdmin identity). */
export const LAB_RGW_ADMIN = { accessKeyID: 'STRATALABADMINKEY001', secretAccessKey: 'strata-lab-admin-secret-00000000000000000' };
export const RGW_PORT = 7480;

const REQUIRED_BINARIES = ['ceph-mon', 'ceph-mgr', 'ceph-osd', 'ceph', 'rbd', 'ceph-authtool', 'monmaptool'];

export interface DriverConfigOptions {
  topology?: Record<string, string>;
  rgwAdmin?: boolean;
  defaultIdentity?: boolean;
}

interface Daemon {
  name: string;
  pid: number;
  /** What started it (after `-c <conf>`, before `-f`), to start it again. */
  file: string;
  args: string[];
}

export class CephLab {
  readonly dir: string;
  readonly conf: string;
  readonly address: string;
  readonly monitors: string[];
  readonly fsid = randomUUID();
  readonly adminKeyring: string;
  adminKey = '';
  /** File with the bare admin key, as the driver config's userKeyFile expects. */
  readonly adminKeyFile: string;
  readonly components: Component[];
  private readonly daemons: Daemon[] = [];
  private readonly say: (msg: string) => void;
  private readonly store: 'bluestore' | 'memstore';

  private constructor(opts: LabOptions) {
    this.address = labAddress(opts);
    this.monitors = [`${this.address}:6789`];
    this.components = opts.components ?? ['rbd', 'cephfs', 's3'];
    this.store = opts.osdStore ?? 'bluestore';
    this.say = opts.log ?? (() => {});
    this.dir = mkdtempSync(path.join(tmpdir(), 'strata-lab-'));
    this.conf = path.join(this.dir, 'ceph.conf');
    this.adminKeyring = path.join(this.dir, 'keys', 'ceph.client.admin.keyring');
    this.adminKeyFile = path.join(this.dir, 'keys', 'admin.key');
  }

  static async start(opts: LabOptions = {}): Promise<CephLab> {
    const missing = REQUIRED_BINARIES.filter((b) => !['/usr/bin', '/usr/sbin', '/bin', '/sbin'].some((d) => existsSync(path.join(d, b))));
    if (missing.length) {
      throw new Error(`Ceph lab needs ${missing.join(', ')}: run test/install-deps.sh (or the README's test command) first`);
    }
    await reapStaleLabs(labAddress(opts));
    const lab = new CephLab(opts);
    try {
      await lab.boot();
      return lab;
    } catch (e) {
      const tail = lab.logTail();
      await lab.stop();
      throw new Error(`lab failed to start: ${(e as Error).message}\n${tail}`);
    }
  }

  get hasCephFS(): boolean {
    return this.components.includes('cephfs');
  }
  get hasS3(): boolean {
    return this.components.includes('s3');
  }
  get s3Endpoint(): string {
    return `http://${this.address}:${RGW_PORT}`;
  }

  /** Runs the ceph CLI as client.admin against this lab. */
  async ceph(args: string[], timeoutMs = 30_000): Promise<string> {
    return (await run('ceph', ['-c', this.conf, ...args], { timeoutMs })).stdout;
  }

  /** The same, for checks that expect a refusal. */
  async cephAllowFail(args: string[], timeoutMs = 30_000): Promise<{ exitCode: number; stdout: string; stderr: string }> {
    return runAllowFail('ceph', ['-c', this.conf, ...args], { timeoutMs });
  }

  async rbd(args: string[], timeoutMs = 30_000): Promise<string> {
    return (await run('rbd', ['-c', this.conf, ...args], { timeoutMs })).stdout;
  }

  /**
   * A driver config (YAML) pointing at this lab, with admin (and the lab S3 user) as the default
   * identity, or with none (`defaultIdentity: false`: credentials come only in request secrets).
   */
  driverConfig(extra: DriverConfigOptions = {}): string {
    const lines = ['driverName: strata.csi.dev', 'clusters:', '  - id: lab'];
    if (extra.topology) {
      lines.push('    topology:');
      for (const [k, v] of Object.entries(extra.topology)) lines.push(`      ${JSON.stringify(k)}: ${JSON.stringify(v)}`);
    }
    const identity = extra.defaultIdentity !== false;
    lines.push('    ceph:', `      monitors: ${JSON.stringify(this.monitors)}`);
    if (identity) lines.push('      userID: admin', `      userKeyFile: ${this.adminKeyFile}`);
    if (this.hasS3) {
      lines.push('    s3:', `      endpoint: ${this.s3Endpoint}`, '      region: us-east-1');
      if (identity) lines.push(`      accessKeyIDFile: ${this.p('keys', 's3-access-key')}`, `      secretAccessKeyFile: ${this.p('keys', 's3-secret-key')}`);
      if (extra.rgwAdmin !== false) {
        lines.push('      rgwAdmin:', `        accessKeyIDFile: ${this.p('keys', 'rgw-admin-access-key')}`, `        secretAccessKeyFile: ${this.p('keys', 'rgw-admin-secret-key')}`);
      }
    }
    return lines.join('\n') + '\n';
  }

  writeDriverConfig(extra: DriverConfigOptions = {}): string {
    const p = path.join(this.dir, `strata-${randomUUID().slice(0, 8)}.yaml`);
    writeFileSync(p, this.driverConfig(extra));
    return p;
  }

  private p(...parts: string[]): string {
    return path.join(this.dir, ...parts);
  }

  private writeConf(): void {
    const L = this.dir;
    const conf = `[global]
fsid = ${this.fsid}
mon_host = [v2:${this.address}:3300,v1:${this.address}:6789]
public_addr = ${this.address}
cluster_addr = ${this.address}
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = ${L}/keys/$cluster.$name.keyring
run_dir = ${L}/run
log_file = ${L}/log/$cluster-$name.log
crash_dir = ${L}/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
mon_allow_pool_delete = true
mon_data_avail_warn = 2
mon_data_avail_crit = 1
client_mount_timeout = 30
rbd_default_clone_format = 2

[mon]
mon_data = ${L}/mon/$cluster-$id
auth_allow_insecure_global_id_reclaim = false
mon_memory_target = 512M
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
mgr_initial_modules = iostat
admin_socket = ${L}/run/$cluster-$name.asok

[mgr]
mgr_data = ${L}/mgr/$cluster-$id
admin_socket = ${L}/run/$cluster-$name.asok

[osd]
osd_data = ${L}/osd/$cluster-$id
osd_objectstore = ${this.store}
bluestore_block_create = true
bluestore_block_size = 10G
osd_memory_target = 1G
admin_socket = ${L}/run/$cluster-$name.asok

[mds]
mds_data = ${L}/mds/$cluster-$id
mds_cache_memory_limit = 256M
admin_socket = ${L}/run/$cluster-$name.asok

[client]
admin_socket = ${L}/run/$cluster-$name.$pid.$cctid.asok

[client.rgw.gw]
rgw_frontends = beast endpoint=${this.address}:${RGW_PORT} tcp_nodelay=1
rgw_thread_pool_size = 64
rgw_data = ${L}/rgw
`;
    writeFileSync(this.conf, conf);
  }

  private startDaemon(name: string, file: string, args: string[]): void {
    const out = openSync(this.p('log', `${name}.out`), 'a');
    // Foreground (-f) with stderr open: a daemonized mgr has a closed stderr and
    // its volumes module then fails (FACTS pitfall 3).
    const child = spawn(file, ['-c', this.conf, ...args, '-f'], { detached: true, stdio: ['ignore', out, out] });
    closeSync(out);
    child.unref();
    if (!child.pid) throw new Error(`could not start ${name}`);
    this.daemons.push({ name, pid: child.pid, file, args });
  }

  private async waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await check().catch(() => false)) return;
      await sleep(100);
    }
    throw new Error(`timed out waiting for ${what}`);
  }

  private async boot(): Promise<void> {
    const t0 = Date.now();
    for (const d of ['keys', 'run', 'log', 'crash', 'mon', 'mgr/ceph-x', 'osd', 'mds/ceph-a', 'rgw']) mkdirSync(this.p(d), { recursive: true });
    this.writeConf();
    const keys = this.p('keys');
    await run('ceph-authtool', ['--create-keyring', `${keys}/ceph.mon..keyring`, '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *']);
    await run('ceph-authtool', [
      '--create-keyring', this.adminKeyring, '--gen-key', '-n', 'client.admin',
      '--cap', 'mon', 'allow *', '--cap', 'osd', 'allow *', '--cap', 'mds', 'allow *', '--cap', 'mgr', 'allow *',
    ]);
    await run('ceph-authtool', [`${keys}/ceph.mon..keyring`, '--import-keyring', this.adminKeyring]);
    this.adminKey = (await run('ceph-authtool', ['-p', '-n', 'client.admin', this.adminKeyring])).stdout.trim();
    writeFileSync(this.adminKeyFile, this.adminKey + '\n', { mode: 0o600 });
    await run('monmaptool', ['--create', '--addv', 'a', `[v2:${this.address}:3300,v1:${this.address}:6789]`, '--fsid', this.fsid, this.p('monmap')]);
    await run('ceph-mon', ['-c', this.conf, '--mkfs', '-i', 'a', '--monmap', this.p('monmap'), '--keyring', `${keys}/ceph.mon..keyring`]);
    this.startDaemon('mon.a', 'ceph-mon', ['-i', 'a']);
    await this.waitFor('mon', async () => (await runAllowFail('ceph', ['-c', this.conf, '--connect-timeout', '2', 'mon', 'stat'], { timeoutMs: 5000 })).exitCode === 0);
    this.say(`mon up (${Date.now() - t0} ms)`);

    await this.ceph(['auth', 'get-or-create', 'mgr.x', 'mon', 'allow profile mgr', 'osd', 'allow *', 'mds', 'allow *', '-o', `${keys}/ceph.mgr.x.keyring`]);
    this.startDaemon('mgr.x', 'ceph-mgr', ['-i', 'x']);

    const osdUuid = randomUUID();
    const osdId = (await this.ceph(['osd', 'new', osdUuid])).trim();
    mkdirSync(this.p('osd', `ceph-${osdId}`), { recursive: true });
    await this.ceph([
      'auth', 'get-or-create', `osd.${osdId}`, 'mon', 'allow profile osd', 'mgr', 'allow profile osd', 'osd', 'allow *',
      '-o', `${keys}/ceph.osd.${osdId}.keyring`,
    ]);
    await run('ceph-osd', ['-c', this.conf, '-i', osdId, '--mkfs', '--osd-uuid', osdUuid], { timeoutMs: 60_000 });
    this.startDaemon(`osd.${osdId}`, 'ceph-osd', ['-i', osdId]);
    await this.waitFor('osd up', async () => JSON.parse(await this.ceph(['osd', 'stat', '-f', 'json'])).num_up_osds >= 1);
    this.say(`osd up (${Date.now() - t0} ms)`);

    await this.ceph(['osd', 'pool', 'create', 'rbd', '8']);
    await this.rbd(['pool', 'init', 'rbd']);

    if (this.hasS3) await this.bootRgw();
    if (this.hasCephFS) await this.bootMds();
    await this.waitFor('mgr available', async () => JSON.parse(await this.ceph(['mgr', 'stat', '-f', 'json'])).available === true);
    if (this.hasCephFS) {
      await this.ceph(['fs', 'volume', 'create', 'cephfs'], 60_000);
      await this.waitFor('mds active', async () => (await this.ceph(['fs', 'status', 'cephfs', '-f', 'json'])).includes('"active"'));
      await this.ceph(['fs', 'subvolumegroup', 'create', 'cephfs', 'csi']);
    }
    if (this.hasS3) {
      await this.waitFor('rgw http', async () => (await fetch(this.s3Endpoint)).status < 500);
      await run('radosgw-admin', [
        '-c', this.conf, 'user', 'create', '--uid', 'lab', '--display-name', 'Strata lab',
        '--access-key', LAB_S3.accessKeyID, '--secret-key', LAB_S3.secretAccessKey,
      ]);
      await run('radosgw-admin', [
        '-c', this.conf, 'user', 'create', '--uid', 'strata-admin', '--display-name', 'Strata quota admin',
        '--access-key', LAB_RGW_ADMIN.accessKeyID, '--secret-key', LAB_RGW_ADMIN.secretAccessKey, '--caps', 'buckets=*;users=*;user-policy=*',
      ]);
      writeFileSync(this.p('keys', 's3-access-key'), LAB_S3.accessKeyID, { mode: 0o600 });
      writeFileSync(this.p('keys', 's3-secret-key'), LAB_S3.secretAccessKey, { mode: 0o600 });
      writeFileSync(this.p('keys', 'rgw-admin-access-key'), LAB_RGW_ADMIN.accessKeyID, { mode: 0o600 });
      writeFileSync(this.p('keys', 'rgw-admin-secret-key'), LAB_RGW_ADMIN.secretAccessKey, { mode: 0o600 });
    }
    this.say(`lab ready in ${Date.now() - t0} ms (${this.components.join(', ')})`);
  }

  private async bootMds(): Promise<void> {
    await this.ceph([
      'auth', 'get-or-create', 'mds.a', 'mon', 'allow profile mds', 'osd', 'allow rwx', 'mds', 'allow', 'mgr', 'allow profile mds',
      '-o', this.p('keys', 'ceph.mds.a.keyring'),
    ]);
    this.startDaemon('mds.a', 'ceph-mds', ['-i', 'a']);
  }

  private async bootRgw(): Promise<void> {
    // Pre-create the bucket pools: RGW otherwise stalls ~2 s on the first bucket (FACTS pitfall 9).
    for (const pool of ['.rgw.root', 'default.rgw.log', 'default.rgw.control', 'default.rgw.meta', 'default.rgw.buckets.index', 'default.rgw.buckets.data', 'default.rgw.buckets.non-ec']) {
      await this.ceph(['osd', 'pool', 'create', pool, '8']);
      await this.ceph(['osd', 'pool', 'application', 'enable', pool, 'rgw']);
    }
    await this.ceph(['auth', 'get-or-create', 'client.rgw.gw', 'mon', 'allow rw', 'osd', 'allow rwx', 'mgr', 'allow rw', '-o', this.p('keys', 'ceph.client.rgw.gw.keyring')]);
    this.startDaemon('rgw.gw', 'radosgw', ['-n', 'client.rgw.gw']);
  }

  logTail(lines = 20): string {
    const out: string[] = [];
    for (const d of this.daemons) {
      const f = this.p('log', `${d.name}.out`);
      if (existsSync(f)) out.push(`--- ${d.name}`, ...readFileSync(f, 'utf8').trim().split('\n').slice(-lines));
    }
    return out.join('\n');
  }

  /** Signals the lab's daemons whose name starts with `prefix` (SIGSTOP makes one unresponsive, SIGCONT resumes it); returns how many. */
  signalDaemons(prefix: string, sig: NodeJS.Signals): number {
    const group = this.daemons.filter((d) => d.name.startsWith(prefix));
    for (const d of group) signal(d.pid, sig);
    return group.length;
  }

  /**
   * Client ops the OSD has parked as "waiting for readable" for more than `minAgeS`. A PG whose read
   * lease ran out while its OSD was paused can latch "laggy" with nothing left to re-check it (Ceph
   * tracker 80404, fix in ceph/ceph#71663): its ops then wait until the OSD restarts, for every client.
   */
  async wedgedOsdOps(minAgeS: number): Promise<string[]> {
    const out: string[] = [];
    for (const d of this.daemons.filter((x) => x.name.startsWith('osd.'))) {
      const r = await runAllowFail('ceph', ['--admin-daemon', this.p('run', `ceph-${d.name}.asok`), 'dump_ops_in_flight'], { timeoutMs: 10_000 });
      if (r.exitCode !== 0) continue;
      const ops = (JSON.parse(r.stdout) as { ops: { description: string; age: number; type_data?: { flag_point?: string } }[] }).ops;
      for (const o of ops) if (o.type_data?.flag_point === 'waiting for readable' && o.age > minAgeS) out.push(o.description);
    }
    return out;
  }

  /** Restarts the daemons whose name starts with `prefix` as an operator would (TERM, then the same command again). */
  async restartDaemons(prefix: string): Promise<void> {
    for (const d of this.daemons.filter((x) => x.name.startsWith(prefix))) {
      signal(d.pid, 'SIGCONT');
      signal(d.pid, 'SIGTERM');
      const deadline = Date.now() + 15_000;
      while (alive(d.pid) && Date.now() < deadline) await sleep(50);
      if (alive(d.pid)) signal(d.pid, 'SIGKILL');
      while (alive(d.pid)) await sleep(50);
      this.daemons.splice(this.daemons.indexOf(d), 1);
      this.startDaemon(d.name, d.file, d.args);
    }
    if (prefix.startsWith('osd')) await this.waitFor('osd up', async () => JSON.parse(await this.ceph(['osd', 'stat', '-f', 'json'])).num_up_osds >= 1);
  }

  /** Stops daemons in the safe order (mon last, FACTS pitfall 4) and removes the lab. */
  async stop(): Promise<void> {
    const order = ['rgw', 'mds', 'osd', 'mgr', 'mon'];
    for (const prefix of order) {
      const group = this.daemons.filter((d) => d.name.startsWith(prefix));
      for (const d of group) {
        signal(d.pid, 'SIGCONT'); // a daemon a test paused would ignore SIGTERM
        signal(d.pid, 'SIGTERM');
      }
      const deadline = Date.now() + 8_000;
      while (group.some((d) => alive(d.pid)) && Date.now() < deadline) await sleep(50);
      for (const d of group) if (alive(d.pid)) signal(d.pid, 'SIGKILL');
    }
    for (let i = 0; i < 40 && this.daemons.some((d) => alive(d.pid)); i++) await sleep(50);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

/** A zombie still answers kill(pid, 0): hasExited reads its state. */
const alive = (pid: number): boolean => !hasExited(pid);

function labAddress(opts: LabOptions): string {
  const a = opts.address ?? process.env.STRATA_LAB_ADDR ?? '127.0.0.1';
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(a)) throw new Error(`lab address ${a} is not an IPv4 address`);
  return a;
}

/**
 * Daemons of a lab whose test process died without stopping it (a timeout, a
 * kill) hold the fixed ports of its address, and every later lab there would
 * fail to bind. Only one lab runs on an address at a time, so any other lab's
 * daemons on this address are stale: kill them and wait until they are gone.
 */
async function reapStaleLabs(address: string): Promise<void> {
  const stale: number[] = [];
  for (const ent of readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    try {
      const argv = readFileSync(`/proc/${ent}/cmdline`, 'utf8').split('\0');
      if (!/(^|\/)(ceph-mon|ceph-mgr|ceph-osd|ceph-mds|radosgw)$/.test(argv[0] ?? '')) continue;
      const conf = argv.find((a) => /\/strata-lab-[^/]+\/ceph\.conf$/.test(a));
      if (conf && readFileSync(conf, 'utf8').includes(`\npublic_addr = ${address}\n`)) stale.push(Number(ent));
    } catch {
      /* exited meanwhile, or its lab directory is gone */
    }
  }
  for (const pid of stale) signal(pid, 'SIGKILL');
  const deadline = Date.now() + 10_000;
  while (stale.some(alive) && Date.now() < deadline) await sleep(50);
}

