import { randomUUID } from 'node:crypto';
import { EAGAIN, EEXIST, EINVAL, ENOENT, ENOTEMPTY, isErrno, type SubvolumeApi, type SubvolumeInfo } from '../../src/backends/cephfs/subvolume-api.js';
import { ExecError } from '../../src/util/exec.js';

/**
 * An in-memory CephFS cluster behaving as the mgr volumes module (Ceph 16)
 * does for what the controller relies on: file systems and their data pools,
 * subvolume groups, subvolumes with quota, path and state; asynchronous clones
 * (the target answers EAGAIN, or "in-progress" through info, until enough
 * `cloneState` polls complete it; it cannot be removed, even with --force,
 * until it is canceled; its source snapshot cannot be removed while it is
 * pending); `rm --retain-snapshots` (the subvolume keeps only its
 * snapshots, answers ENOENT for everything but info, snapshot listing and
 * removal, and goes with its last snapshot); `resize --no-shrink`, which
 * refuses only a size below the bytes used (a size below the quota shrinks
 * it); metadata values with "%" refused (the mgr's ConfigParser); config-key;
 * and the users `authorize` makes. Tests reach into `subvolumes`,
 * `configKeys` and `users` to stage what a crash leaves, and `failNext` to
 * cut a sequence at a step.
 */

export interface FakeSnapshot {
  size: number;
  meta: Map<string, string>;
  pendingClones: number;
}

export interface FakeSubvolume {
  fs: string;
  group: string;
  name: string;
  path: string;
  quota: number;
  used: number;
  pool: string;
  state: 'complete' | 'snapshot-retained' | 'pending' | 'in-progress' | 'failed' | 'canceled';
  meta: Map<string, string>;
  snaps: Map<string, FakeSnapshot>;
  authorized: Set<string>;
  /** Users with a mount open (what evict cuts). */
  sessions: Set<string>;
  /** For a clone target not yet complete: its source and how many `clone status` polls are left. */
  clone?: { key: string; snap: string; polls: number };
}

const err = (op: string, code: number, text: string) => new ExecError(`ceph fs subvolume ${op}`, code, text, false);
const svKey = (fs: string, group: string, name: string) => `${fs}/${group}/${name}`;

export class FakeCephFs {
  /** File systems and their data pools (the first is the default layout). */
  readonly fileSystems = new Map<string, string[]>([['cephfs', ['cephfs.cephfs.data']]]);
  /** Pools and the bytes each can still take. */
  readonly pools = new Map<string, number>([['cephfs.cephfs.data', 10 * 2 ** 30]]);
  /** Subvolume groups, as "<fs>/<group>". */
  readonly groups = new Set<string>();
  /** Subvolumes by "<fs>/<group>/<name>". */
  readonly subvolumes = new Map<string, FakeSubvolume>();
  /** The mon's config-key store. */
  readonly configKeys = new Map<string, string>();
  /** Ceph users and their keys. */
  readonly users = new Map<string, string>();
  /** Users whose sessions were evicted, in order. */
  readonly evicted: string[] = [];
  /** How many `clone status` polls a new clone takes to complete (Infinity: never, until finishClone). */
  clonePolls = 1;
  /** Operation names in call order (for asserting what a path did). */
  readonly calls: string[] = [];
  private readonly failures: Array<{ op: string; error: Error }> = [];

  /** The next call of `op` throws `error` instead of acting (a crash or a failure at that step). */
  failNext(op: keyof SubvolumeApi, error: Error): void {
    this.failures.push({ op, error });
  }

  step(op: string): void {
    this.calls.push(op);
    const i = this.failures.findIndex((f) => f.op === op);
    if (i >= 0) throw this.failures.splice(i, 1)[0]!.error;
  }

  /** The API of one file system and group, as the controller's connector hands it out. */
  api(fs: string, group: string): SubvolumeApi {
    return new FakeGroup(this, fs, group);
  }

  find(fs: string, group: string, name: string): FakeSubvolume | undefined {
    return this.subvolumes.get(svKey(fs, group, name));
  }

  /** Ends a clone now, as complete, failed or canceled. */
  finishClone(fs: string, group: string, name: string, state: 'complete' | 'failed' | 'canceled' = 'complete'): void {
    const sv = this.find(fs, group, name)!;
    const src = this.subvolumes.get(sv.clone!.key)?.snaps.get(sv.clone!.snap);
    if (src) src.pendingClones--;
    sv.clone = undefined;
    sv.state = state;
  }

  /** Makes a subvolume directly (what an earlier call or a crash left). */
  add(fs: string, group: string, name: string, quota: number, init: Partial<FakeSubvolume> = {}): FakeSubvolume {
    this.groups.add(`${fs}/${group}`);
    const sv: FakeSubvolume = {
      fs,
      group,
      name,
      path: `/volumes/${group}/${name}/${randomUUID()}`,
      quota,
      used: 0,
      pool: this.fileSystems.get(fs)?.[0] ?? '',
      state: 'complete',
      meta: new Map(),
      snaps: new Map(),
      authorized: new Set(),
      sessions: new Set(),
      ...init,
    };
    this.subvolumes.set(svKey(fs, group, name), sv);
    return sv;
  }
}

class FakeGroup implements SubvolumeApi {
  constructor(
    private readonly c: FakeCephFs,
    readonly fs: string,
    readonly group: string,
  ) {}

  private find(name: string): FakeSubvolume | undefined {
    return this.c.find(this.fs, this.group, name);
  }

  /** The subvolume as the mgr opens it for an operation: ENOENT when missing or only retained, EAGAIN while a clone target. */
  private open(op: string, name: string, retainedOk = false): FakeSubvolume {
    const sv = this.find(name);
    if (!sv) throw err(op, ENOENT, `subvolume '${name}' does not exist`);
    if (sv.state === 'snapshot-retained' && !retainedOk) throw err(op, ENOENT, `subvolume '${name}' is removed and has only snapshots retained`);
    if (sv.state !== 'complete' && sv.state !== 'snapshot-retained') throw err(op, EAGAIN, `subvolume '${name}' is not ready for operation ${op}`);
    return sv;
  }

  private checkValue(op: string, value: string): void {
    if (value.includes('%')) throw err(op, EINVAL, "'%' must be followed by '%' or '('");
  }

  private drop(sv: FakeSubvolume): void {
    if (sv.clone) {
      const src = this.c.subvolumes.get(sv.clone.key)?.snaps.get(sv.clone.snap);
      if (src) src.pendingClones--;
    }
    this.c.subvolumes.delete(svKey(sv.fs, sv.group, sv.name));
  }

  async ensureGroup(): Promise<void> {
    this.c.step('ensureGroup');
    if (!this.c.fileSystems.has(this.fs)) throw err('group create', ENOENT, `volume '${this.fs}' does not exist`);
    this.c.groups.add(`${this.fs}/${this.group}`);
  }

  async fsNames(): Promise<string[]> {
    this.c.step('fsNames');
    return [...this.c.fileSystems.keys()];
  }

  async groupNames(): Promise<string[]> {
    this.c.step('groupNames');
    if (!this.c.fileSystems.has(this.fs)) throw err('group ls', ENOENT, `volume '${this.fs}' does not exist`);
    return [...this.c.groups].filter((g) => g.startsWith(`${this.fs}/`)).map((g) => g.slice(this.fs.length + 1));
  }

  async info(name: string): Promise<SubvolumeInfo | undefined> {
    this.c.step('info');
    const sv = this.find(name);
    if (!sv) return undefined;
    if (sv.state === 'snapshot-retained') return { path: '', bytesQuota: 0, bytesUsed: 0, state: sv.state, dataPool: '', createdAt: '' };
    // The mgr answers EAGAIN for a clone target; CephFsCli reads that as "in-progress".
    if (sv.state !== 'complete') return { path: '', bytesQuota: 0, bytesUsed: 0, state: 'in-progress', dataPool: '', createdAt: '' };
    return { path: sv.path, bytesQuota: sv.quota, bytesUsed: sv.used, state: sv.state, dataPool: sv.pool, createdAt: '2026-01-01 00:00:00' };
  }

  async getpath(name: string): Promise<string | undefined> {
    this.c.step('getpath');
    const sv = this.find(name);
    if (!sv || sv.state === 'snapshot-retained') return undefined;
    return this.open('getpath', name).path;
  }

  async create(name: string, bytes: number, pool?: string): Promise<void> {
    this.c.step('create');
    const pools = this.c.fileSystems.get(this.fs);
    if (!pools) throw err('create', ENOENT, `volume '${this.fs}' does not exist`);
    if (!this.c.groups.has(`${this.fs}/${this.group}`)) throw err('create', ENOENT, `subvolume group '${this.group}' does not exist`);
    if (pool && !pools.includes(pool)) throw err('create', EINVAL, `invalid pool layout '${pool}'`);
    const sv = this.find(name);
    if (sv?.state === 'complete') {
      sv.quota = bytes;
      return;
    }
    if (sv && sv.state !== 'snapshot-retained') throw err('create', EAGAIN, `subvolume '${name}' is not ready for operation create`);
    // Over a retained subvolume: a new incarnation that keeps the snapshots.
    this.c.add(this.fs, this.group, name, bytes, { pool: pool ?? pools[0]!, snaps: sv?.snaps ?? new Map() });
  }

  async createIfMissing(name: string, bytes: number, pool: string | undefined, key: string, value: string): Promise<'found' | 'made'> {
    const at = await this.getpath(name).catch((e: unknown) => (isErrno(e, EAGAIN) ? 'clone target' : Promise.reject(e)));
    if (at !== undefined) return 'found';
    await this.create(name, bytes, pool);
    await this.metaSet(name, key, value);
    return 'made';
  }

  async grow(name: string, bytes: number): Promise<SubvolumeInfo | undefined> {
    const before = await this.info(name);
    if (before?.state === 'complete' && before.bytesQuota < bytes) await this.resize(name, bytes);
    return before;
  }

  async resize(name: string, bytes: number): Promise<void> {
    this.c.step('resize');
    const sv = this.open('resize', name);
    if (bytes < sv.used) throw err('resize', EINVAL, `Can't resize the subvolume. The new size '${bytes}' would be lesser than the current used size '${sv.used}'`);
    sv.quota = bytes;
  }

  async remove(name: string, retainSnapshots: boolean, force = false): Promise<void> {
    this.c.step('remove');
    const sv = this.find(name);
    if (!sv) return;
    if (sv.state !== 'complete' && sv.state !== 'snapshot-retained') {
      if (!force) throw err('rm', EAGAIN, `subvolume '${name}' is not ready for operation rm (use --force to override)`);
      if (sv.clone) throw err('rm', EAGAIN, `${name} clone in-progress -- please cancel the clone and retry`);
      this.drop(sv);
      return;
    }
    if (sv.snaps.size) {
      if (!retainSnapshots) throw err('rm', ENOTEMPTY, `subvolume '${name}' has snapshots`);
      Object.assign(sv, { state: 'snapshot-retained', path: '', meta: new Map(), authorized: new Set(), sessions: new Set() });
      return;
    }
    this.drop(sv);
  }

  async list(): Promise<string[]> {
    this.c.step('list');
    return [...this.c.subvolumes.values()].filter((s) => s.fs === this.fs && s.group === this.group).map((s) => s.name);
  }

  async metaList(name: string): Promise<Record<string, string>> {
    this.c.step('metaList');
    return Object.fromEntries(this.open('metadata ls', name).meta);
  }

  async metaSet(name: string, key: string, value: string): Promise<void> {
    this.c.step('metaSet');
    const sv = this.open('metadata set', name);
    this.checkValue('metadata set', value);
    sv.meta.set(key, value);
  }

  async metaRemove(name: string, key: string): Promise<void> {
    this.c.step('metaRemove');
    const sv = this.find(name);
    if (!sv || sv.state === 'snapshot-retained') return;
    this.open('metadata rm', name).meta.delete(key);
  }

  async snapCreate(name: string, snap: string): Promise<void> {
    this.c.step('snapCreate');
    const sv = this.open('snapshot create', name);
    if (sv.snaps.has(snap)) throw err('snapshot create', EEXIST, `snapshot '${snap}' already exists`);
    sv.snaps.set(snap, { size: sv.quota, meta: new Map(), pendingClones: 0 });
  }

  async snapRemove(name: string, snap: string): Promise<void> {
    this.c.step('snapRemove');
    const sv = this.find(name);
    if (!sv) return;
    const s = this.open('snapshot rm', name, true).snaps.get(snap);
    if (!s) return;
    if (s.pendingClones > 0) throw err('snapshot rm', EAGAIN, `snapshot '${snap}' has pending clones`);
    sv.snaps.delete(snap);
    if (sv.state === 'snapshot-retained' && !sv.snaps.size) this.drop(sv);
  }

  async snapList(name: string): Promise<string[]> {
    this.c.step('snapList');
    if (!this.find(name)) return [];
    return [...this.open('snapshot ls', name, true).snaps.keys()];
  }

  async snapMetaList(name: string, snap: string): Promise<Record<string, string> | undefined> {
    this.c.step('snapMetaList');
    const sv = this.find(name);
    if (!sv || sv.state === 'snapshot-retained') return undefined;
    const s = this.open('snapshot metadata ls', name).snaps.get(snap);
    return s ? Object.fromEntries(s.meta) : undefined;
  }

  async snapMetaSet(name: string, snap: string, key: string, value: string): Promise<void> {
    this.c.step('snapMetaSet');
    const s = this.open('snapshot metadata set', name).snaps.get(snap);
    if (!s) throw err('snapshot metadata set', ENOENT, `snapshot '${snap}' does not exist`);
    this.checkValue('snapshot metadata set', value);
    s.meta.set(key, value);
  }

  private retainedKey(name: string, snap: string): string {
    return `strata/cephfs/${this.fs}/${this.group}/${name}/${snap}`;
  }

  async retainedGet(name: string, snap: string): Promise<string | undefined> {
    this.c.step('retainedGet');
    return this.c.configKeys.get(this.retainedKey(name, snap));
  }

  async retainedSet(name: string, snap: string, value: string): Promise<void> {
    this.c.step('retainedSet');
    this.c.configKeys.set(this.retainedKey(name, snap), value);
  }

  async retainedRemove(name: string, snap: string): Promise<void> {
    this.c.step('retainedRemove');
    this.c.configKeys.delete(this.retainedKey(name, snap));
  }

  async claimGet(snap: string): Promise<string | undefined> {
    this.c.step('claimGet');
    return this.c.configKeys.get(`strata/cephfs/snapshot-names/${snap}`);
  }

  async claimSet(snap: string, snapshotId: string): Promise<void> {
    this.c.step('claimSet');
    this.c.configKeys.set(`strata/cephfs/snapshot-names/${snap}`, snapshotId);
  }

  async claimRemove(snap: string): Promise<void> {
    this.c.step('claimRemove');
    this.c.configKeys.delete(`strata/cephfs/snapshot-names/${snap}`);
  }

  async clone(name: string, snap: string, target: string, pool?: string): Promise<void> {
    this.c.step('clone');
    const src = this.open('snapshot clone', name, true);
    const s = src.snaps.get(snap);
    if (!s) throw err('snapshot clone', ENOENT, `snapshot '${snap}' does not exist`);
    if (this.find(target)) throw err('snapshot clone', EEXIST, `subvolume '${target}' exists`);
    const pools = this.c.fileSystems.get(this.fs)!;
    if (pool && !pools.includes(pool)) throw err('snapshot clone', EINVAL, `invalid pool layout '${pool}'`);
    s.pendingClones++;
    this.c.add(this.fs, this.group, target, s.size, { pool: pool ?? src.pool, state: 'pending', clone: { key: svKey(this.fs, this.group, name), snap, polls: this.c.clonePolls } });
  }

  async cloneState(target: string): Promise<{ state: string; reason?: string } | undefined> {
    this.c.step('cloneState');
    const sv = this.find(target);
    if (!sv) return undefined;
    if (sv.clone && --sv.clone.polls <= 0) this.c.finishClone(this.fs, this.group, target);
    else if (sv.state === 'pending') sv.state = 'in-progress';
    return sv.state === 'failed' ? { state: 'failed', reason: 'error in clone' } : { state: sv.state };
  }

  async cloneCancel(target: string): Promise<void> {
    this.c.step('cloneCancel');
    const sv = this.find(target);
    if (!sv?.clone) return; // missing (ENOENT) or finished (EINVAL): nothing to stop
    this.c.finishClone(this.fs, this.group, target, 'canceled');
  }

  async authorize(name: string, authId: string): Promise<string> {
    this.c.step('authorize');
    this.open('authorize', name).authorized.add(authId);
    if (!this.c.users.has(authId)) this.c.users.set(authId, `key-${authId}`);
    return this.c.users.get(authId)!;
  }

  async deauthorize(name: string, authId: string): Promise<void> {
    this.c.step('deauthorize');
    const sv = this.find(name);
    if (!sv || sv.state === 'snapshot-retained') return;
    if (!this.open('deauthorize', name).authorized.delete(authId)) return; // ENOENT "auth ID doesn't exist", which CephFsCli ignores
    if (![...this.c.subvolumes.values()].some((s) => s.authorized.has(authId))) this.c.users.delete(authId);
  }

  async userExists(authId: string): Promise<boolean | undefined> {
    this.c.step('userExists');
    return this.c.users.has(authId);
  }

  async authorizedUsers(name: string): Promise<string[]> {
    this.c.step('authorizedUsers');
    const sv = this.find(name);
    if (!sv || sv.state === 'snapshot-retained') return [];
    return [...this.open('authorized_list', name).authorized];
  }

  async evict(name: string, authId: string): Promise<void> {
    this.c.step('evict');
    const sv = this.find(name);
    if (!sv || sv.state === 'snapshot-retained' || !this.open('evict', name).authorized.has(authId)) return;
    if (sv.sessions.delete(authId)) this.c.evicted.push(authId);
  }

  async poolAvailable(pool: string): Promise<number | undefined> {
    this.c.step('poolAvailable');
    return this.c.pools.get(pool);
  }

  async dataPools(): Promise<string[] | undefined> {
    this.c.step('dataPools');
    return this.c.fileSystems.get(this.fs);
  }
}
