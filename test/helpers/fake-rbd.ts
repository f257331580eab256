import { randomUUID } from 'node:crypto';
import { EBUSY, EEXIST, ENOENT, type CreateOptions, type ImageInfo, type RbdApi, type SnapInfo } from '../../src/backends/rbd/rbd-api.js';
import { ExecError } from '../../src/util/exec.js';

/**
 * An in-memory RBD pool set behaving as librbd does for what the controller
 * relies on: clone v2 (a clone copies its parent's metadata; a snapshot
 * removed while clones need it moves to the trash namespace and goes with
 * its last clone), images with snapshots refuse removal, watchers make an
 * image busy, trashed images wait for their clones; images in a RADOS
 * namespace ("<pool>/<ns>") need the namespace made first. Tests reach into
 * `images` to stage what a crash leaves and `failNext` to cut a sequence.
 */

export interface FakeImage {
  id: string;
  pool: string;
  name: string;
  size: number;
  features: string[];
  meta: Map<string, string>;
  snaps: Map<string, { id: string; namespace: 'user' | 'trash'; size: number }>;
  parent?: { id: string; snapId: string };
  trashed: boolean;
  watchers: string[];
}

const EEXIST_E = (op: string) => new ExecError(`rbd ${op}`, EEXIST, 'exists', false);
const ENOENT_E = (op: string) => new ExecError(`rbd ${op}`, ENOENT, 'not found', false);

export class FakeRbd implements RbdApi {
  readonly images = new Map<string, FakeImage>();
  readonly pools = new Set(['rbd']);
  /** RADOS namespaces made, as "<pool>/<namespace>". */
  readonly namespaceSpecs = new Set<string>();
  /** Operation names in call order (for asserting what a path did). */
  readonly calls: string[] = [];
  private readonly failures: Array<{ op: string; error: Error }> = [];
  private nextId = 1;

  /** The next call of `op` throws `error` instead of acting (a crash or a failure at that step). */
  failNext(op: keyof RbdApi, error: Error): void {
    this.failures.push({ op, error });
  }

  private step(op: string): void {
    this.calls.push(op);
    const i = this.failures.findIndex((f) => f.op === op);
    if (i >= 0) throw this.failures.splice(i, 1)[0]!.error;
  }

  find(pool: string, name: string): FakeImage | undefined {
    return [...this.images.values()].find((i) => i.pool === pool && i.name === name && !i.trashed);
  }

  private need(op: string, pool: string, name: string): FakeImage {
    const img = this.find(pool, name);
    if (!img) throw ENOENT_E(op);
    return img;
  }

  private children(img: FakeImage, snapId?: string): FakeImage[] {
    return [...this.images.values()].filter((c) => c.parent?.id === img.id && (snapId === undefined || c.parent.snapId === snapId));
  }

  private make(pool: string, name: string, size: number, opts: CreateOptions): FakeImage {
    if (!this.pools.has(pool) && !this.namespaceSpecs.has(pool)) throw ENOENT_E('create');
    if (opts.dataPool && !this.pools.has(opts.dataPool)) throw ENOENT_E('create');
    if (this.find(pool, name)) throw EEXIST_E('create');
    const img: FakeImage = { id: `id${this.nextId++}`, pool, name, size, features: [...opts.features], meta: new Map(), snaps: new Map(), trashed: false, watchers: [] };
    this.images.set(img.id, img);
    return img;
  }

  /** Unlinks a removed image from its parent; a trashed parent snapshot goes with its last clone. */
  private drop(img: FakeImage): void {
    this.images.delete(img.id);
    const p = img.parent && this.images.get(img.parent.id);
    if (!p) return;
    for (const [name, s] of p.snaps) if (s.id === img.parent!.snapId && s.namespace === 'trash' && !this.children(p, s.id).length) p.snaps.delete(name);
  }

  async info(pool: string, image: string): Promise<ImageInfo | undefined> {
    this.step('info');
    const img = this.find(pool, image);
    if (!img) return undefined;
    const p = img.parent && this.images.get(img.parent.id);
    const snap = p && [...p.snaps.entries()].find(([, s]) => s.id === img.parent!.snapId)?.[0];
    return { size: img.size, ...(p ? { parent: { pool: p.pool, image: p.name, snapshot: snap ?? '' } } : {}) };
  }

  async create(pool: string, image: string, sizeBytes: number, opts: CreateOptions): Promise<void> {
    this.step('create');
    this.make(pool, image, sizeBytes, opts);
  }

  async clone(pool: string, parent: string, snap: string, child: string, opts: CreateOptions): Promise<void> {
    this.step('clone');
    const p = this.need('clone', pool, parent);
    const s = p.snaps.get(snap);
    if (!s || s.namespace !== 'user') throw ENOENT_E('clone');
    const c = this.make(pool, child, s.size, opts);
    c.parent = { id: p.id, snapId: s.id };
    c.meta = new Map(p.meta);
  }

  async grow(pool: string, image: string, sizeBytes: number): Promise<number | undefined> {
    this.step('grow');
    const img = this.find(pool, image);
    if (!img) return undefined;
    const before = img.size;
    img.size = Math.max(before, sizeBytes);
    return before;
  }

  async metaList(pool: string, image: string): Promise<Record<string, string>> {
    this.step('metaList');
    return Object.fromEntries(this.need('meta_list', pool, image).meta);
  }

  async metaSet(pool: string, image: string, key: string, value: string): Promise<void> {
    this.step('metaSet');
    this.need('meta_set', pool, image).meta.set(key, value);
  }

  async metaRemove(pool: string, image: string, key: string): Promise<void> {
    this.step('metaRemove');
    this.find(pool, image)?.meta.delete(key);
  }

  async metaStrip(pool: string, image: string, prefix: string, then: Record<string, string> = {}): Promise<void> {
    this.step('metaStrip');
    const img = this.need('meta_strip', pool, image);
    for (const k of [...img.meta.keys()]) if (k.startsWith(prefix)) img.meta.delete(k);
    for (const [k, v] of Object.entries(then)) img.meta.set(k, v);
  }

  async snapCreate(pool: string, image: string, snap: string): Promise<void> {
    this.step('snapCreate');
    const img = this.need('snap_create', pool, image);
    if (!img.snaps.has(snap)) img.snaps.set(snap, { id: `snap${this.nextId++}`, namespace: 'user', size: img.size });
  }

  async snapRemove(pool: string, image: string, snap: string): Promise<void> {
    this.step('snapRemove');
    const img = this.find(pool, image);
    const s = img?.snaps.get(snap);
    if (!img || !s || s.namespace !== 'user') return;
    img.snaps.delete(snap);
    if (this.children(img, s.id).length) img.snaps.set(randomUUID(), { ...s, namespace: 'trash' });
  }

  async snapList(pool: string, image: string): Promise<SnapInfo[]> {
    this.step('snapList');
    return [...this.need('snap_list', pool, image).snaps.entries()].map(([name, s]) => ({ name, namespace: s.namespace }));
  }

  async remove(pool: string, image: string): Promise<'removed' | 'has-snapshots' | 'missing'> {
    this.step('remove');
    const img = this.find(pool, image);
    if (!img) return 'missing';
    if (img.snaps.size) return 'has-snapshots';
    if (img.watchers.length) throw new ExecError('rbd remove', EBUSY, 'image has watchers', false);
    this.drop(img);
    return 'removed';
  }

  async trashMove(pool: string, image: string): Promise<void> {
    this.step('trashMove');
    this.need('trash_move', pool, image).trashed = true;
  }

  async trashList(pool: string): Promise<Array<{ id: string; name: string }>> {
    this.step('trashList');
    return [...this.images.values()].filter((i) => i.pool === pool && i.trashed).map((i) => ({ id: i.id, name: i.name }));
  }

  async trashRemove(pool: string, id: string): Promise<boolean> {
    this.step('trashRemove');
    const img = this.images.get(id);
    if (!img || !img.trashed || img.pool !== pool) return true;
    if (img.snaps.size || img.watchers.length) return false;
    this.drop(img);
    return true;
  }

  async list(pool: string): Promise<string[]> {
    this.step('list');
    return [...this.images.values()].filter((i) => i.pool === pool && !i.trashed).map((i) => i.name);
  }

  async namespaceCreate(pool: string, namespace: string): Promise<void> {
    this.step('namespaceCreate');
    if (!this.pools.has(pool)) throw ENOENT_E('namespace_create');
    this.namespaceSpecs.add(`${pool}/${namespace}`);
  }

  async namespaces(pool: string): Promise<string[]> {
    this.step('namespaces');
    return [...this.namespaceSpecs].filter((s) => s.startsWith(`${pool}/`)).map((s) => s.slice(pool.length + 1));
  }

  async watchers(pool: string, image: string): Promise<string[] | undefined> {
    this.step('watchers');
    return this.find(pool, image)?.watchers;
  }

  /** A fake image has no stale watches to reload. */
  async reloadWatches(): Promise<boolean> {
    this.step('reloadWatches');
    return true;
  }

  async rbdPools(): Promise<Array<{ name: string; maxAvail: number }>> {
    this.step('rbdPools');
    return [...this.pools].map((name) => ({ name, maxAvail: 10 * 2 ** 30 }));
  }

  async poolAvailable(pool: string): Promise<number | undefined> {
    this.step('poolAvailable');
    return this.pools.has(pool) ? 10 * 2 ** 30 : undefined;
  }
}
