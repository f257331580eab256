import type { Logger } from 'pino';
import type { CephConn } from '../../ceph/conn.js';
import { cephCommand, rbdCall } from '../../ceph/rados-bridge.js';
import { failedPrecondition, unavailable } from '../../errors.js';
import { parseOutput } from '../../util/json.js';
import { namesInPg, objectHash } from '../../ceph/pg-hash.js';
import { ExecError } from '../../util/exec.js';
import { EACCES, EBUSY, EEXIST, ENOENT, ENOTEMPTY, EPERM, type CreateOptions, type ImageInfo, type RbdApi, type SnapInfo, isErrno, tryReloadWatches } from './rbd-api.js';

/**
 * RbdApi on librbd, inside the long-lived rados client of the connection's
 * identity (src/ceph/rados-bridge.ts): no process and no cluster connect per
 * operation. Each method is one librbd call (metaStrip: one image open);
 * answers are checked whole before use, as the CLI's JSON was.
 */

const TIMEOUT_MS = 45_000;
/** Twice the OSD's default object-context cache of a placement group (osd_pg_object_context_cache_count). */
const RELOAD_MISSES = 128;
/** A header's watches are reloaded at most this often: a reload times them out, a second one adds nothing. */
const RELOAD_EVERY_MS = 10_000;
const reloadedAt = new Map<string, number>();
const TRASH_ID = /^[0-9a-f]{1,32}$/;

export class LibRbd implements RbdApi {
  constructor(
    private readonly conn: CephConn,
    private readonly log?: Logger,
  ) {}

  /**
   * A refusal by the OSDs (EPERM, EACCES) is the identity's caps not reaching
   * the pool or namespace: a node key limited to one namespace, asked for an
   * image elsewhere. Said so, as FAILED_PRECONDITION, rather than an errno.
   */
  private async call(op: string, args: Record<string, unknown>): Promise<unknown> {
    try {
      return await rbdCall(this.conn, op, args, { timeoutMs: TIMEOUT_MS, log: this.log });
    } catch (e) {
      if (!isErrno(e, EPERM) && !isErrno(e, EACCES)) throw e;
      const where = typeof args.image === 'string' ? `image ${String(args.pool)}/${args.image}` : `pool ${String(args.pool)}`;
      throw failedPrecondition(`client.${this.conn.identity.id} is not allowed to reach ${where} (rbd ${op}: permission denied): its caps do not cover that pool or RADOS namespace`);
    }
  }

  private async undefinedIfMissing<T>(p: Promise<T>): Promise<T | undefined> {
    try {
      return await p;
    } catch (e) {
      if (isErrno(e, ENOENT)) return undefined;
      throw e;
    }
  }

  async info(pool: string, image: string): Promise<ImageInfo | undefined> {
    const r = await this.undefinedIfMissing(this.call('info', { pool, image }));
    if (r === undefined) return undefined;
    const o = record(r, 'rbd info');
    const info: ImageInfo = { size: count(o.size, 'rbd info') };
    if (o.parent !== undefined) {
      const p = record(o.parent, 'rbd info');
      info.parent = { pool: text(p.pool, 'rbd info'), image: text(p.image, 'rbd info'), snapshot: text(p.snapshot, 'rbd info') };
    }
    return info;
  }

  async create(pool: string, image: string, sizeBytes: number, opts: CreateOptions): Promise<void> {
    await this.call('create', { pool, image, size: sizeBytes, features: opts.features, data_pool: opts.dataPool ?? null });
  }

  async clone(pool: string, parent: string, snap: string, child: string, opts: CreateOptions): Promise<void> {
    await this.call('clone', { pool, parent, snap, image: child, features: opts.features, data_pool: opts.dataPool ?? null });
  }

  async grow(pool: string, image: string, sizeBytes: number): Promise<number | undefined> {
    const r = await this.undefinedIfMissing(this.call('grow', { pool, image, size: sizeBytes }));
    return r === undefined ? undefined : count(r, 'rbd resize');
  }

  async metaList(pool: string, image: string): Promise<Record<string, string>> {
    const o = record(await this.call('meta_list', { pool, image }), 'rbd image-meta list');
    for (const v of Object.values(o)) text(v, 'rbd image-meta list');
    return o as Record<string, string>;
  }

  async metaSet(pool: string, image: string, key: string, value: string): Promise<void> {
    await this.call('meta_set', { pool, image, key, value });
  }

  async metaRemove(pool: string, image: string, key: string): Promise<void> {
    await this.undefinedIfMissing(this.call('meta_remove', { pool, image, key }));
  }

  async metaStrip(pool: string, image: string, prefix: string, then: Record<string, string> = {}): Promise<void> {
    await this.call('meta_strip', { pool, image, prefix, set: then });
  }

  async snapCreate(pool: string, image: string, snap: string): Promise<void> {
    try {
      await this.call('snap_create', { pool, image, snap });
    } catch (e) {
      if (!isErrno(e, EEXIST)) throw e;
    }
  }

  async snapRemove(pool: string, image: string, snap: string): Promise<void> {
    await this.undefinedIfMissing(this.call('snap_remove', { pool, image, snap }));
  }

  async snapList(pool: string, image: string): Promise<SnapInfo[]> {
    return list(await this.call('snap_list', { pool, image }), 'rbd snap ls').map((s) => {
      const o = record(s, 'rbd snap ls');
      return { name: text(o.name, 'rbd snap ls'), namespace: text(o.namespace, 'rbd snap ls') };
    });
  }

  async remove(pool: string, image: string): Promise<'removed' | 'has-snapshots' | 'missing'> {
    try {
      await this.call('remove', { pool, image });
      return 'removed';
    } catch (e) {
      if (isErrno(e, ENOENT)) return 'missing';
      if (isErrno(e, ENOTEMPTY)) return 'has-snapshots';
      // A watch that can never time out by itself must not hold the image for good.
      if (isErrno(e, EBUSY)) await tryReloadWatches(this, pool, { image }, this.log);
      throw e;
    }
  }

  async trashMove(pool: string, image: string): Promise<void> {
    await this.call('trash_move', { pool, image });
  }

  async trashList(pool: string): Promise<Array<{ id: string; name: string }>> {
    return list(await this.call('trash_list', { pool }), 'rbd trash ls').map((t) => {
      const o = record(t, 'rbd trash ls');
      return { id: text(o.id, 'rbd trash ls'), name: text(o.name, 'rbd trash ls') };
    });
  }

  async trashRemove(pool: string, id: string): Promise<boolean> {
    try {
      await this.call('trash_remove', { pool, id });
      return true;
    } catch (e) {
      // Clones or snapshots still hold it (or a killed client's watch): a later pass tries again.
      if (isErrno(e, ENOENT)) return true;
      if (isErrno(e, EBUSY)) await tryReloadWatches(this, pool, { id }, this.log);
      if (e instanceof ExecError && e.exitCode !== undefined) return false;
      throw e;
    }
  }

  async list(pool: string): Promise<string[]> {
    const r = await this.undefinedIfMissing(this.call('list', { pool }));
    return r === undefined ? [] : list(r, 'rbd ls').map((n) => text(n, 'rbd ls'));
  }

  async namespaceCreate(pool: string, namespace: string): Promise<void> {
    try {
      await this.call('namespace_create', { pool, namespace });
    } catch (e) {
      if (!isErrno(e, EEXIST)) throw e;
    }
  }

  async namespaces(pool: string): Promise<string[]> {
    const r = await this.undefinedIfMissing(this.call('namespace_list', { pool }));
    return r === undefined ? [] : list(r, 'rbd namespace ls').map((n) => text(n, 'rbd namespace ls'));
  }

  async watchers(pool: string, image: string): Promise<string[] | undefined> {
    const r = await this.undefinedIfMissing(this.call('watchers', { pool, image }));
    return r === undefined ? undefined : list(r, 'rbd status').map((a) => text(a, 'rbd status'));
  }

  async reloadWatches(pool: string, header: { image: string } | { id: string }): Promise<boolean> {
    if ('id' in header && !TRASH_ID.test(header.id)) return false;
    const oid = 'id' in header ? `rbd_header.${header.id}` : text(await this.call('header', { pool, image: header.image }), 'rbd header');
    const key = `${this.conn.monitors.join(',')} ${pool} ${oid}`;
    const now = Date.now();
    for (const [k, at] of reloadedAt) if (now - at >= RELOAD_EVERY_MS) reloadedAt.delete(k);
    if (reloadedAt.has(key)) return false;
    reloadedAt.set(key, now);
    const [base = '', namespace = ''] = pool.split('/');
    const map = parseOutput<{ raw_pgid?: unknown; pgid?: unknown }>(await this.mon('osd map', { pool: base, object: oid, nspace: namespace }), 'ceph osd map');
    const pgNum = count(parseOutput<{ pg_num?: unknown }>(await this.mon('osd pool get', { pool: base, var: 'pg_num' }), 'ceph osd pool get').pg_num, 'ceph osd pool get');
    const [raw, ps] = [map.raw_pgid, map.pgid].map((p) => parseInt(text(p, 'ceph osd map').split('.')[1] ?? '', 16));
    // A pool placed by another hash than rjenkins (none made since Argonaut) would get misses elsewhere.
    if (raw !== objectHash(namespace, oid) || !Number.isSafeInteger(ps)) {
      this.log?.warn({ pool, oid }, 'the pool does not place objects by the rjenkins hash: stale watches there time out only when the OSD reloads the header');
      return false;
    }
    await this.call('reload_pg', { pool, names: await namesInPg('strata.watch-reload.', namespace, ps!, pgNum, RELOAD_MISSES) });
    this.log?.info({ pool, oid, pg: `${base}.${ps!.toString(16)}` }, 'made the OSD reload the watches of an image header');
    return true;
  }

  private async df(): Promise<Array<{ name: string; maxAvail: number }>> {
    const df = parseOutput<{ pools?: Array<{ name?: unknown; stats?: { max_avail?: unknown } }> }>(await this.mon('df'), 'ceph df');
    return list<{ name?: unknown; stats?: { max_avail?: unknown } }>(df?.pools, 'ceph df').map((p) => ({ name: text(p.name, 'ceph df'), maxAvail: count(p.stats?.max_avail, 'ceph df') }));
  }

  private mon(prefix: string, args: Record<string, string> = {}): Promise<string> {
    return cephCommand(this.conn, 'mon', { prefix, format: 'json', ...args }, { timeoutMs: TIMEOUT_MS, log: this.log });
  }

  async rbdPools(): Promise<Array<{ name: string; maxAvail: number }>> {
    const detail = parseOutput<Array<{ pool_name?: unknown; application_metadata?: Record<string, unknown> }>>(await this.mon('osd pool ls', { detail: 'detail' }), 'ceph osd pool ls');
    const rbdPools = new Set(
      list<{ pool_name?: unknown; application_metadata?: Record<string, unknown> }>(detail, 'ceph osd pool ls')
        .filter((p) => p.application_metadata && 'rbd' in p.application_metadata)
        .map((p) => text(p.pool_name, 'ceph osd pool ls')),
    );
    return (await this.df()).filter((p) => rbdPools.has(p.name));
  }

  async poolAvailable(pool: string): Promise<number | undefined> {
    return (await this.df()).find((p) => p.name === pool)?.maxAvail;
  }
}

/** An answer missing a part it must have is a cut or garbled one: retryable, never taken as "nothing there". */
function incomplete(what: string): Error {
  return unavailable(`${what} gave an incomplete answer; retry`);
}

function record(v: unknown, what: string): Record<string, unknown> {
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw incomplete(what);
  return v as Record<string, unknown>;
}

/** `v` as an array of T; its items are checked where they are read. */
function list<T = unknown>(v: unknown, what: string): T[] {
  if (!Array.isArray(v)) throw incomplete(what);
  return v as T[];
}

function text(v: unknown, what: string): string {
  if (typeof v !== 'string') throw incomplete(what);
  return v;
}

function count(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw incomplete(what);
  return v;
}
