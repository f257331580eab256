import type { Logger } from 'pino';
import type { Config } from '../../config/config.js';
import { findCluster } from '../../config/config.js';
import { GiB, isBlock, modeOf, sizeFits, sizeFromRange } from '../../csi/capabilities.js';
import type { RpcContext } from '../../csi/handler.js';
import { nameHash, parseId, type ObjectId } from '../../csi/ids.js';
import type * as csi from '../../csi/types.js';
import { aborted, alreadyExists, failedPrecondition, invalidArgument, notFound, outOfRange } from '../../errors.js';
import { decidePublish, type Attachment } from '../attachments.js';
import type { ControllerBackend, PublishedVolume } from '../types.js';
import { toSnapshot } from '../snapshots.js';
import { toCsiVolume, type VolumeSource } from '../volume.js';
import { copyTree, CopyJobs, type Tree } from './copier.js';
import { configCredentials, resolveS3Credentials, s3Of } from './credentials.js';
import {
  attachKey,
  attachPrefix,
  bucketOf,
  copyingPrefix,
  dataPrefix,
  idOf,
  locationOf,
  nodeOfAttachKey,
  objectName,
  recordKey,
  rootOf,
  type Location,
} from './layout.js';
import { parseS3Params, type S3Params } from './params.js';
import { stopReason } from '../../util/call-context.js';
import { RgwQuota } from './rgw-quota.js';
import { VolumeKeys } from './volume-keys.js';
import { s3Connector, type S3Api, type S3Connector } from './s3-api.js';
import { LIST_PAGE } from './store.js';

/**
 * S3 volumes are a bucket of their own or a prefix in a shared bucket (see
 * layout.ts). Everything the controller must remember is a JSON record in
 * the volume's own ".strata/" prefix: name, capacity, mount parameters,
 * attachments, and the state of copies. Snapshots, restores and clones are
 * server-side copies run in the background; RPCs answer "not ready yet"
 * (snapshots) or ABORTED (volumes) until done, and any later call picks a
 * copy up again after a controller restart.
 */

const DEFAULT_SIZE = GiB;
// How long an RPC waits for its copy before answering "still copying".
const COPY_WAIT_MS = 10_000;

type State = 'copying' | 'ready' | 'deleting';

export interface VolumeRecord {
  v: 1;
  kind: 'volume';
  name: string;
  capacity: number;
  state: State;
  source?: VolumeSource;
  /** Where the content is copied from while state is "copying". */
  copyFrom?: Tree;
  params: Pick<S3Params, 'mounter' | 'uid' | 'gid' | 'mode' | 'mountOptions'>;
  createdAt: string;
}

export interface SnapshotRecord {
  v: 1;
  kind: 'snapshot';
  name: string;
  source: string;
  size: number;
  state: 'copying' | 'ready';
  objects?: number;
  bytes?: number;
  createdAt: string;
}

const isVolumeName = (n: string) => /^csi-vol-[0-9a-f]{32}$/.test(n);
const isSnapshotName = (n: string) => /^csi-snap-[0-9a-f]{32}$/.test(n);

export class S3Controller implements ControllerBackend {
  private readonly jobs: CopyJobs;
  private readonly quota: RgwQuota;
  private readonly keys: VolumeKeys;

  constructor(
    private readonly cfg: Config,
    log: Logger,
    private readonly connect: S3Connector = s3Connector(cfg),
  ) {
    this.jobs = new CopyJobs(log);
    const admin = (cluster: string) => connect.admin(cluster);
    this.quota = new RgwQuota(admin);
    this.keys = new VolumeKeys(admin);
  }

  private store(cluster: string, secrets: Record<string, string> | undefined): S3Api {
    const s3 = s3Of(findCluster(this.cfg, cluster), cluster);
    return this.connect.store(s3, resolveS3Credentials(s3, secrets));
  }

  /** The store for listing RPCs, which carry no secrets: only the config's identity can list. */
  private listingStore(cluster: string, ctx: RpcContext): S3Api | undefined {
    const s3 = findCluster(this.cfg, cluster)?.s3;
    const creds = s3 && configCredentials(s3);
    if (!creds) ctx.log.debug({ cluster }, 'no S3 key files in the config: S3 volumes cannot be listed');
    return creds ? this.connect.store(s3!, creds) : undefined;
  }

  /** The request's identity when it has secrets, else the config's (listing and polling RPCs carry none). */
  private readStore(cluster: string, secrets: Record<string, string>, ctx: RpcContext): S3Api | undefined {
    return Object.keys(secrets).length ? this.store(cluster, secrets) : this.listingStore(cluster, ctx);
  }

  private location(id: ObjectId): Location {
    const l = locationOf(id);
    if (!l) throw notFound(`${id.kind === 'v' ? 'volume' : 'snapshot'} not found`);
    return l;
  }

  validateCapabilities(caps: csi.VolumeCapability[]): string | undefined {
    if (caps.some((c) => isBlock(c))) return 'S3 volumes are file systems: raw block access is not available';
    return undefined;
  }

  private volumeContext(l: Location, r: VolumeRecord): Record<string, string> {
    const ctx: Record<string, string> = { clusterID: l.cluster, bucket: bucketOf(l), prefix: dataPrefix(l), mounter: r.params.mounter };
    if (r.params.uid !== undefined) ctx.uid = String(r.params.uid);
    if (r.params.gid !== undefined) ctx.gid = String(r.params.gid);
    if (r.params.mode !== undefined) ctx.mode = r.params.mode.toString(8).padStart(4, '0');
    if (r.params.mountOptions.length) ctx.mountOptions = r.params.mountOptions.join(',');
    return ctx;
  }

  private toVolume(l: Location, r: VolumeRecord): csi.Volume {
    return toCsiVolume(idOf(l), r.capacity, this.volumeContext(l, r), r.source, findCluster(this.cfg, l.cluster)?.topology);
  }

  async createVolume(req: csi.CreateVolumeRequest, ctx: RpcContext): Promise<csi.Volume> {
    const p = parseS3Params(req.parameters);
    const l: Location = { kind: 'v', cluster: p.clusterID, hash: nameHash(this.cfg.driverName, req.name), shared: p.bucket };
    try {
      idOf(l);
    } catch {
      throw invalidArgument('clusterID and bucket are too long to fit a volume id of 128 bytes');
    }
    const store = this.store(p.clusterID, req.secrets);
    const src = req.volume_content_source;
    const wantSrc: VolumeSource | undefined = src?.snapshot ? { snapshot: src.snapshot.snapshot_id } : src?.volume ? { volume: src.volume.volume_id } : undefined;
    const bucket = bucketOf(l);
    if (!wantSrc && this.quota.enforced(l)) return this.toVolume(l, await this.createEmpty(store, l, req, p, ctx));
    let rec = await store.getJson<VolumeRecord>(bucket, recordKey(l));
    if (rec) {
      checkExisting(rec, req, wantSrc);
    } else {
      const size = sizeFromRange(req.capacity_range, DEFAULT_SIZE, 1);
      const from = wantSrc ? await this.contentSource(store, l, wantSrc, size, req.capacity_range ? undefined : 'inherit') : undefined;
      if (p.bucket) {
        if (!(await store.bucketExists(p.bucket))) await store.createBucket(p.bucket);
      } else {
        await store.createBucket(bucket);
      }
      rec = newRecord(req, p, from?.size ?? size, wantSrc, from?.tree);
      // The mount root exists as a directory object, so every mounter finds it on an empty volume.
      // Root and quota before the record, which marks the volume made: a crash before it must not
      // leave a volume that retries answer without either; the two are independent and go side by side.
      // A restore or clone gets its quota once its data is in: copies never run into it.
      await settleAll([store.put(bucket, dataPrefix(l), ''), from ? undefined : this.quota.apply(l, rec.capacity, ctx.log, store)]);
      await store.putJson(bucket, recordKey(l), rec);
    }
    if (rec.state === 'copying') rec = await this.fill(store, l, rec, ctx);
    return this.toVolume(l, rec);
  }

  /**
   * An empty volume with a bucket of its own on RGW, in as many steps as the bare calls, with no
   * lookup first: the bucket; the record, written only where there is none (If-None-Match, which
   * RGW honours); then the mount root and the quota side by side. Here the record comes before them,
   * so a request that finds one (a retry, perhaps after a crash between the steps) checks it against
   * the request and then makes sure of the root and the quota itself.
   */
  private async createEmpty(store: S3Api, l: Location, req: csi.CreateVolumeRequest, p: S3Params, ctx: RpcContext): Promise<VolumeRecord> {
    const bucket = bucketOf(l);
    // Everything that can refuse the request comes before the bucket, which nothing would remove.
    const rec = newRecord(req, p, sizeFromRange(req.capacity_range, DEFAULT_SIZE, 1));
    await store.createBucket(bucket);
    if (await store.putJsonIfAbsent(bucket, recordKey(l), rec)) {
      await settleAll([store.put(bucket, dataPrefix(l), ''), this.quota.apply(l, rec.capacity, ctx.log, store)]);
      return rec;
    }
    const found = await store.getJson<VolumeRecord>(bucket, recordKey(l));
    if (!found) throw aborted(`volume "${req.name}" changed while it was being created; retry`);
    checkExisting(found, req, undefined);
    const root = async () => (await store.hasKey(bucket, dataPrefix(l))) || (await store.put(bucket, dataPrefix(l), ''));
    await settleAll([root(), this.quota.apply(l, found.capacity, ctx.log, store)]);
    return found;
  }

  /** Where a restore or clone copies from, checked, with the size the new volume gets. */
  private async contentSource(store: S3Api, l: Location, src: VolumeSource, size: number, inherit?: 'inherit'): Promise<{ tree: Tree; size: number }> {
    const sid = src.snapshot ? parseId(src.snapshot, 's') : parseId(src.volume!, 'v');
    const what = src.snapshot ? `snapshot ${src.snapshot}` : `source volume ${src.volume}`;
    const from = sid?.backend === 's3' ? locationOf(sid) : undefined;
    if (!from) throw notFound(`${what} not found`);
    if (from.cluster !== l.cluster) throw invalidArgument(`${what} is on cluster ${from.cluster}: S3 copies stay within one endpoint`);
    let sourceSize: number;
    if (src.snapshot) {
      const s = await store.getJson<SnapshotRecord>(bucketOf(from), recordKey(from));
      if (!s) throw notFound(`${what} not found`);
      if (s.state !== 'ready') throw aborted(`${what} is still being copied; retry when it is ready`);
      sourceSize = s.size;
    } else {
      const v = await store.getJson<VolumeRecord>(bucketOf(from), recordKey(from));
      if (!v || v.state !== 'ready') throw notFound(`${what} not found`);
      sourceSize = v.capacity;
    }
    if (!inherit && size < sourceSize) throw outOfRange(`requested size ${size} is smaller than the source (${sourceSize} bytes)`);
    return { tree: { bucket: bucketOf(from), prefix: dataPrefix(from) }, size: inherit ? sourceSize : size };
  }

  /** Runs (or joins, or resumes) the copy into a new volume; ABORTED while it is not finished. */
  private async fill(store: S3Api, l: Location, rec: VolumeRecord, ctx: RpcContext): Promise<VolumeRecord> {
    const from = rec.copyFrom!;
    const bucket = bucketOf(l);
    const state = await this.jobs.run(
      idOf(l),
      async (cancelled) => {
        await copyTree(store, from, { bucket, prefix: dataPrefix(l) }, cancelled);
        const done: VolumeRecord = { ...rec, state: 'ready' };
        delete done.copyFrom;
        await this.quota.apply(l, rec.capacity, ctx.log);
        await this.putRecord(store, l, rec.capacity, recordKey(l), done, ctx);
      },
      COPY_WAIT_MS,
    );
    if (state === 'running') throw aborted('volume is still being filled from its source; retry');
    const now = await store.getJson<VolumeRecord>(bucket, recordKey(l));
    if (!now) throw aborted('volume vanished while being filled; retry');
    return now;
  }

  async deleteVolume(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<void> {
    const l = locationOf(id);
    if (!l) return;
    const store = this.store(l.cluster, secrets);
    const bucket = bucketOf(l);
    await this.jobs.cancel(idOf(l));
    // The volume's RGW user goes after its bucket: a retry after a crash anywhere still finds it to remove.
    if (!l.shared && (await removeEmptyBucket(store, l))) return this.keys.remove(l, []);
    const rec = await store.getJson<VolumeRecord>(bucket, recordKey(l));
    if (rec) {
      for await (const page of store.list(bucket, copyingPrefix(l))) {
        for (const o of page) {
          const name = o.key.slice(copyingPrefix(l).length);
          const hash = /^csi-snap-([0-9a-f]{32})$/.exec(name)?.[1];
          const snap: Location | undefined = hash ? { kind: 's', cluster: l.cluster, hash, shared: l.shared } : undefined;
          const srec = snap && (await store.getJson<SnapshotRecord>(bucketOf(snap), recordKey(snap)));
          if (srec?.state === 'copying' && srec.source === idOf(l)) throw failedPrecondition(`snapshot ${name} is still being copied from this volume; delete it or retry when it is ready`);
          // A marker whose copy finished, or whose snapshot was never recorded, was left by a crash.
          await store.deleteKey(bucket, o.key);
        }
      }
      if (rec.state !== 'deleting') await this.putRecord(store, l, rec.capacity, recordKey(l), { ...rec, state: 'deleting' }, ctx);
    }
    // Keys go before the attachments, through which a prefix's node users are found.
    await this.keys.remove(l, (await this.attachments(store, l)).keys());
    ctx.log.debug({ objects: await removeAll(store, l) }, 'volume objects removed');
  }

  /** Writes one of Strata's records into a volume's bucket, also when its app has filled the volume. */
  private putRecord(store: S3Api, l: Location, capacity: number, key: string, value: unknown, ctx: RpcContext): Promise<void> {
    return this.quota.despiteQuota(l, capacity, () => store.putJson(bucketOf(l), key, value), ctx.log);
  }

  private async readyVolume(store: S3Api, l: Location, what: string): Promise<VolumeRecord> {
    const rec = await store.getJson<VolumeRecord>(bucketOf(l), recordKey(l));
    if (!rec || rec.state !== 'ready') throw notFound(`${what} not found`);
    return rec;
  }

  /** One object per attached node under .strata/attach/, by node id. */
  private async attachments(store: S3Api, l: Location): Promise<Map<string, Attachment>> {
    const out = new Map<string, Attachment>();
    for await (const page of store.list(bucketOf(l), attachPrefix(l))) {
      for (const o of page) {
        const a = await store.getJson<Attachment>(bucketOf(l), o.key);
        if (a) out.set(nodeOfAttachKey(l, o.key) ?? `(undecodable ${o.key})`, a);
      }
    }
    return out;
  }

  async publish(id: ObjectId, req: csi.ControllerPublishVolumeRequest, ctx: RpcContext): Promise<Record<string, string>> {
    const l = this.location(id);
    const store = this.store(l.cluster, req.secrets);
    const rec = await this.readyVolume(store, l, `volume ${req.volume_id}`);
    const mode = modeOf(req.volume_capability);
    if (decidePublish(await this.attachments(store, l), req.node_id, mode, req.readonly) === 'add') {
      // Keys of nodes the volume is no longer published to (an unpublish cut short) go before a new node comes.
      await this.keys.revokeOthers(l, async () => [...(await this.attachments(store, l)).keys(), req.node_id], ctx.log);
      await this.putRecord(store, l, rec.capacity, attachKey(l, req.node_id), { mode, readonly: req.readonly }, ctx);
    }
    // On RGW the node mounts with a key of its own on the volume's user, handed over in the publish
    // context, made after the attachment (see revokeOthers); elsewhere it mounts with the provisioner's keys.
    const key = await this.keys.issue(l, req.node_id, rec.params.mounter, store, ctx.log);
    return key ? { accessKeyID: key.accessKeyID, secretAccessKey: key.secretAccessKey } : {};
  }

  async unpublish(id: ObjectId, nodeId: string, secrets: Record<string, string>, ctx: RpcContext): Promise<void> {
    const l = locationOf(id);
    if (!l) return;
    const store = this.store(l.cluster, secrets);
    // The node's keys go before its attachment: a node that never unmounted (force detach) gets 403
    // from then on, and a retry after a crash finds the attachment and removes them again.
    if (nodeId) {
      await this.keys.revokeNode(l, nodeId, ctx.log);
      return store.deleteKey(bucketOf(l), attachKey(l, nodeId));
    }
    await this.keys.revokeAll(l, (await this.attachments(store, l)).keys(), ctx.log);
    for await (const page of store.list(bucketOf(l), attachPrefix(l))) for (const o of page) await store.deleteKey(bucketOf(l), o.key);
  }

  async getVolume(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<PublishedVolume | undefined> {
    const l = locationOf(id);
    if (!l) return undefined;
    const store = this.readStore(l.cluster, secrets, ctx);
    if (!store) return undefined;
    const rec = await store.getJson<VolumeRecord>(bucketOf(l), recordKey(l));
    if (!rec) return undefined;
    return {
      volume: this.toVolume(l, rec),
      publishedNodes: [...(await this.attachments(store, l)).keys()].sort(),
      abnormal: rec.state === 'ready' ? undefined : `volume is ${rec.state === 'copying' ? 'still being filled from its source' : 'being deleted'}`,
    };
  }

  /** Names of kind `kind` in every bucket the identity sees (the request's, else the config's): own buckets, and prefixes of shared ones. */
  private async scan(cluster: string, kind: 'v' | 's', secrets: Record<string, string>, ctx: RpcContext): Promise<{ store?: S3Api; locations: Location[] }> {
    const store = this.readStore(cluster, secrets, ctx);
    if (!store) return { locations: [] };
    const match = kind === 'v' ? isVolumeName : isSnapshotName;
    const hashOf = (n: string) => n.slice(n.lastIndexOf('-') + 1);
    const out: Location[] = [];
    for (const b of await store.listBuckets()) {
      if (match(b)) out.push({ kind, cluster, hash: hashOf(b) });
      else if (!isVolumeName(b) && !isSnapshotName(b)) {
        for (const p of await store.subPrefixes(b, '')) {
          const n = p.slice(0, -1);
          if (match(n)) out.push({ kind, cluster, hash: hashOf(n), shared: b });
        }
      }
    }
    return { store, locations: out };
  }

  async listVolumeIds(cluster: string, ctx: RpcContext): Promise<string[]> {
    return (await this.scan(cluster, 'v', {}, ctx)).locations.map(idOf).sort();
  }

  async getCapacity(_clusterId: string, params: Record<string, string>): Promise<number> {
    // Parameters are checked as CreateVolume checks them, though an S3 store reports no free space: capacity is what each volume records.
    parseS3Params(params);
    return 0;
  }

  async expand(id: ObjectId, req: csi.ControllerExpandVolumeRequest, ctx: RpcContext): Promise<csi.ControllerExpandVolumeResponse> {
    const l = this.location(id);
    const store = this.store(l.cluster, req.secrets);
    const rec = await this.readyVolume(store, l, `volume ${req.volume_id}`);
    const size = sizeFromRange(req.capacity_range, rec.capacity, 1);
    if (size > rec.capacity) {
      // Quota first: a full volume is the usual reason to grow it, and its record write needs the room.
      await this.quota.apply(l, size, ctx.log);
      await this.putRecord(store, l, size, recordKey(l), { ...rec, capacity: size }, ctx);
    }
    return { capacity_bytes: Math.max(size, rec.capacity), node_expansion_required: false };
  }

  async createSnapshot(sourceId: ObjectId, req: csi.CreateSnapshotRequest, ctx: RpcContext): Promise<csi.Snapshot> {
    const src = this.location(sourceId);
    const store = this.store(src.cluster, req.secrets);
    // A snapshot lives where its volume does: in the same shared bucket, or in a bucket of its own.
    const l: Location = { kind: 's', cluster: src.cluster, hash: nameHash(this.cfg.driverName, req.name), shared: src.shared };
    const sourceVolumeId = idOf(src);
    let rec = await store.getJson<SnapshotRecord>(bucketOf(l), recordKey(l));
    if (rec && rec.source !== sourceVolumeId) throw alreadyExists(`snapshot "${req.name}" exists for another source volume`);
    if (!rec) {
      const vol = await this.readyVolume(store, src, `source volume ${req.source_volume_id}`);
      if (!l.shared) await store.createBucket(bucketOf(l));
      rec = { v: 1, kind: 'snapshot', name: req.name, source: sourceVolumeId, size: vol.capacity, state: 'copying', createdAt: new Date().toISOString() };
      // The marker keeps the source from being deleted under the copy.
      await this.quota.despiteQuota(src, vol.capacity, () => store.put(bucketOf(src), copyingPrefix(src) + objectName(l), ''), ctx.log);
      await store.putJson(bucketOf(l), recordKey(l), rec);
    }
    if (rec.state === 'copying') rec = await this.continueSnapshot(store, l, rec, COPY_WAIT_MS, ctx);
    return toSnapshot(idOf(l), rec, rec.state === 'ready');
  }

  /** Runs, joins or resumes a snapshot's copy; returns the record as it stands after `waitMs`. */
  private async continueSnapshot(store: S3Api, l: Location, rec: SnapshotRecord, waitMs: number, ctx: RpcContext): Promise<SnapshotRecord> {
    const src = locationOf(parseId(rec.source, 'v')!)!;
    const state = await this.jobs.run(
      idOf(l),
      async (cancelled) => {
        const t0 = Date.now();
        const r = await copyTree(store, { bucket: bucketOf(src), prefix: dataPrefix(src) }, { bucket: bucketOf(l), prefix: dataPrefix(l) }, cancelled);
        await store.putJson(bucketOf(l), recordKey(l), { ...rec, state: 'ready', objects: r.objects, bytes: r.bytes } satisfies SnapshotRecord);
        await store.deleteKey(bucketOf(src), copyingPrefix(src) + objectName(l));
        ctx.log.info({ snapshot: rec.name, ...r, ms: Date.now() - t0 }, 'snapshot copy complete');
      },
      waitMs,
    );
    if (state === 'running') return rec;
    return (await store.getJson<SnapshotRecord>(bucketOf(l), recordKey(l))) ?? rec;
  }

  async deleteSnapshot(id: ObjectId, secrets: Record<string, string>, _ctx: RpcContext): Promise<void> {
    const l = locationOf(id);
    if (!l) return;
    const store = this.store(l.cluster, secrets);
    await this.jobs.cancel(idOf(l));
    const rec = await store.getJson<SnapshotRecord>(bucketOf(l), recordKey(l));
    await removeAll(store, l);
    const src = rec && parseId(rec.source, 'v');
    const srcLoc = src && locationOf(src);
    if (srcLoc) await store.deleteKey(bucketOf(srcLoc), copyingPrefix(srcLoc) + objectName(l));
  }

  async getSnapshot(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<csi.Snapshot | undefined> {
    const l = locationOf(id);
    if (!l) return undefined;
    const store = this.readStore(l.cluster, secrets, ctx);
    if (!store) return undefined;
    let rec = await store.getJson<SnapshotRecord>(bucketOf(l), recordKey(l));
    if (!rec) return undefined;
    // The snapshotter polls with ListSnapshots: after a restart, that is what resumes the copy.
    if (rec.state === 'copying') rec = await this.continueSnapshot(store, l, rec, 0, ctx);
    return toSnapshot(idOf(l), rec, rec.state === 'ready');
  }

  async listSnapshotIds(cluster: string, source: ObjectId | undefined, secrets: Record<string, string>, ctx: RpcContext): Promise<string[]> {
    const { store, locations } = await this.scan(cluster, 's', secrets, ctx);
    if (!source || !store) return locations.map(idOf).sort();
    const want = locationOf(source) && idOf(locationOf(source)!);
    const ids: string[] = [];
    for (const l of locations) {
      const rec = await store.getJson<SnapshotRecord>(bucketOf(l), recordKey(l));
      if (rec?.source === want) ids.push(idOf(l));
    }
    return ids.sort();
  }
}

/**
 * The usual volume at its deletion: a bucket of its own that holds its mount
 * root and Strata's records and no data. Nothing in it can be half-deleted
 * into something else (a crash midway leaves no data for a same-named volume
 * to inherit, and the retry finishes), so its objects go in one request,
 * records last, and the bucket with them: three requests in all. Anything
 * else (data, markers of snapshots being copied from it, more than one listing
 * page) is left untouched for the careful way, which answers false.
 */
async function removeEmptyBucket(store: S3Api, l: Location): Promise<boolean> {
  const bucket = bucketOf(l);
  const pages = store.list(bucket, '');
  const page = await pages.next();
  const keys = page.done ? [] : page.value.map((o) => o.key);
  // A page may end short of LIST_PAGE keys with more to come (S3 allows it; RGW 16 does it for small pages when
  // an unfinished multipart upload sits among the keys): keys not seen may be data. Asking for the next page sends
  // no request when there is none.
  if (keys.length >= LIST_PAGE || !(await pages.next()).done) return false;
  const records = keys.filter((k) => k === recordKey(l) || k.startsWith(attachPrefix(l)));
  if (keys.some((k) => k !== dataPrefix(l) && !records.includes(k))) return false;
  await store.deleteBatch(bucket, [...keys.filter((k) => !records.includes(k)), ...records.filter((k) => k !== recordKey(l)), ...records.filter((k) => k === recordKey(l))]);
  try {
    await store.deleteBucket(bucket);
  } catch (e) {
    // Something was written meanwhile (BucketNotEmpty): the careful way takes it from here.
    if (stopReason()) throw e;
    return false;
  }
  return true;
}

/**
 * Removes a volume's or snapshot's objects, then its own bucket. Data first,
 * records last: a removal that stops halfway still has its record, so it is
 * seen (and retried) as what it was. Returns the number of objects removed.
 */
async function removeAll(store: S3Api, l: Location): Promise<number> {
  const bucket = bucketOf(l);
  const n = (await store.deletePrefix(bucket, dataPrefix(l))) + (await store.deletePrefix(bucket, rootOf(l)));
  if (!l.shared) await store.deleteBucket(bucket);
  return n;
}

/** A volume found under the request's name is the one asked for, or the request is refused. */
function checkExisting(rec: VolumeRecord, req: csi.CreateVolumeRequest, wantSrc: VolumeSource | undefined): void {
  if (rec.name !== req.name) throw alreadyExists(`volume location of "${req.name}" is taken by "${rec.name}"`);
  if ((rec.source?.snapshot ?? rec.source?.volume) !== (wantSrc?.snapshot ?? wantSrc?.volume)) throw alreadyExists(`volume "${req.name}" exists with a different content source`);
  if (!sizeFits(rec.capacity, req.capacity_range)) throw alreadyExists(`volume "${req.name}" exists with size ${rec.capacity}, which does not match the request`);
  if (rec.state === 'deleting') throw aborted(`volume "${req.name}" is being deleted; retry`);
}

function newRecord(req: csi.CreateVolumeRequest, p: S3Params, capacity: number, source?: VolumeSource, copyFrom?: Tree): VolumeRecord {
  return {
    v: 1,
    kind: 'volume',
    name: req.name,
    capacity,
    state: copyFrom ? 'copying' : 'ready',
    source,
    copyFrom,
    params: { mounter: p.mounter, uid: p.uid, gid: p.gid, mode: p.mode, mountOptions: p.mountOptions },
    createdAt: new Date().toISOString(),
  };
}

/** Waits for every one of `work`, then fails with the first failure: nothing is left running when the call answers. */
async function settleAll(work: Array<Promise<unknown> | undefined>): Promise<void> {
  const failed = (await Promise.allSettled(work)).find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}
