import type { Logger } from 'pino';
import pLimit from 'p-limit';
import type { Config } from '../../config/config.js';
import { CephClusters } from '../../ceph/clusters.js';
import type { RpcContext } from '../../csi/handler.js';
import { MAX_ID_BYTES, encodeId, nameHash, parseId, rbdIdBytes, type ObjectId } from '../../csi/ids.js';
import { GiB, MiB, isBlock, isMultiNodeWriter, isSingleNode, modeOf, sizeFits, sizeFromRange, type AccessMode } from '../../csi/capabilities.js';
import type * as csi from '../../csi/types.js';
import { status } from '@grpc/grpc-js';
import { aborted, alreadyExists, failedPrecondition, invalidArgument, isCsiError, notFound, outOfRange } from '../../errors.js';
import type { ControllerBackend, PublishedVolume } from '../types.js';
import { toCsiVolume } from '../volume.js';
import { parseRecord } from '../../util/json.js';
import { asciiJson } from '../../csi/grammar.js';
import { toSnapshot, type SnapshotMeta } from '../snapshots.js';
import { ATTACH_PREFIX, attachKey, attachmentsIn, decidePublish, type Attachment } from '../attachments.js';
import { parseRbdParams, FS_TYPES, type RbdParams } from './params.js';
import { EBUSY, EEXIST, ENOENT, isErrno, poolSpec, tryReloadWatches, type CreateOptions, type RbdApi, type RbdConnector } from './rbd-api.js';
import { located, rbdLocation } from './location.js';
import { RBD_NAMESPACE } from '../../csi/grammar.js';
import { LibRbd } from './librbd.js';
import { Debounced, purgeTrash } from './trash.js';
import { outsideCall } from '../../util/call-context.js';
import type { CephConn } from '../../ceph/conn.js';
import { blocklist, clientKey, clientsIn, ownInstances } from './fence.js';

/**
 * RBD volumes are images named csi-vol-<hash of the request name>; snapshots
 * are clone-v2 children named csi-snap-<hash> carrying one snapshot "csi", so a
 * snapshot outlives its source and restores are plain clones. Everything the
 * controller needs to remember (request name, attachments, snapshot links)
 * lives in image metadata, never on local disk. A StorageClass's
 * radosNamespace puts all of this in that RADOS namespace of the pool (made
 * on first use), so a node key limited to the namespace reaches its images.
 */

const META_PREFIX = 'strata.';
const META_VOLUME = 'strata.volume';
const META_SNAPSHOT = 'strata.snapshot';
const SNAP_NAME = 'csi';
// Temporary snapshots on a source, named after the clone or snapshot image being made from it.
const TEMP_SNAPSHOT = /^csi-(vol|snap)-[0-9a-f]{32}$/;
const PURGE_RETRIES = 6;
const PURGE_RETRY_MS = 15_000;
const DEFAULT_SIZE = GiB;
// Snapshot images are never written or mapped: layering is all they need.
const SNAPSHOT_FEATURES = ['layering'];

interface VolumeMeta {
  v: 1;
  name: string;
  fsType?: string;
  mounter?: string;
  source?: { snapshot?: string; volume?: string };
  createdAt: string;
}


export class RbdController implements ControllerBackend {
  private readonly clusters: CephClusters;
  private readonly purger = new Debounced();

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    private readonly connect: RbdConnector = (conn, log) => new LibRbd(conn, log),
  ) {
    this.clusters = new CephClusters(cfg);
  }

  private api(clusterId: string, secrets: Record<string, string> | undefined, log?: Logger): RbdApi {
    return this.connect(this.clusters.conn(clusterId, secrets), log);
  }

  validateCapabilities(caps: csi.VolumeCapability[]): string | undefined {
    for (const cap of caps) {
      if (cap.mount) {
        if (isMultiNodeWriter(modeOf(cap))) return `RBD file-system volumes cannot be written from several nodes (${modeOf(cap)}); use block mode or CephFS`;
        const fs = cap.mount.fs_type;
        if (fs && !FS_TYPES.includes(fs as never)) return `fs_type "${fs}" is not supported (use ${FS_TYPES.join(' or ')})`;
      }
    }
    return undefined;
  }

  async createVolume(req: csi.CreateVolumeRequest, ctx: RpcContext): Promise<csi.Volume> {
    const params = parseRbdParams(req.parameters);
    const fsType = req.volume_capabilities.find((c) => c.mount?.fs_type)?.mount?.fs_type || params.fsType;
    const hasMount = req.volume_capabilities.some((c) => c.mount);
    const size = minimumForFs(sizeFromRange(req.capacity_range, DEFAULT_SIZE, MiB), hasMount ? fsType : undefined, req.capacity_range?.limit_bytes);
    const image = `csi-vol-${nameHash(this.cfg.driverName, req.name)}`;
    const id = encodeId({ kind: 'v', backend: 'rbd', cluster: params.clusterID, location: rbdLocation(params.pool, params.radosNamespace, image) });
    const pool = poolSpec(params.pool, params.radosNamespace);
    const rbd = this.api(params.clusterID, req.secrets, ctx.log);
    const src = req.volume_content_source;
    const source = src?.snapshot ? { snapshot: src.snapshot.snapshot_id } : src?.volume ? { volume: src.volume.volume_id } : undefined;
    const meta: VolumeMeta = { v: 1, name: req.name, fsType, mounter: params.mounter, createdAt: new Date().toISOString(), source };
    const record = asciiJson(meta);
    const create = { features: params.imageFeatures, dataPool: params.dataPool };
    const done = (bytes: number) => this.toVolume(id, params, image, bytes, meta);
    // Makes the image and writes its record last (its presence marks the volume complete, so a retry after a crash finishes the job); returns its size.
    const make = async (): Promise<number> => {
      if (src?.snapshot) return this.cloneFromSnapshot(rbd, params, src.snapshot.snapshot_id, image, size, create, record);
      if (src?.volume) return this.cloneFromVolume(rbd, params, src.volume.volume_id, image, size, create, record);
      await this.createImage(rbd, params, image, size, create);
      await rbd.metaSet(pool, image, META_VOLUME, record);
      return size;
    };

    // The common case, with no lookups first. EEXIST means a retry or a name
    // already taken; a source gone or grown since may be the retry of a volume
    // made from it before. The slow path sorts these out.
    try {
      return done(await make());
    } catch (e) {
      // librbd answers a pool or data pool the cluster lacks as it answers a missing image.
      if (isErrno(e, ENOENT)) await this.poolRoom(rbd, params);
      if (!isErrno(e, EEXIST) && !(src && (isCsiError(e, status.NOT_FOUND) || isCsiError(e, status.OUT_OF_RANGE)))) throw e;
    }
    let existing = await rbd.info(pool, image);
    let prev = existing ? await this.volumeMeta(rbd, pool, image) : undefined;
    // Image names are hashes of volume names: a record under another name was
    // inherited from a clone source by a create that crashed before stripping it.
    if (prev && prev.name !== req.name) prev = undefined;
    if (existing && !prev && (src || existing.parent)) {
      // A restore or clone without its record was cut short by a crash, maybe
      // before librbd linked it to its parent snapshot (whose removal would then
      // take the data): it is made again, never finished.
      await this.removeUnfinished(rbd, pool, image);
      existing = undefined;
    }
    if (!existing) {
      try {
        return done(await make());
      } catch (e) {
        if (!isErrno(e, EEXIST)) throw e;
      }
      // The name is taken, yet no image opens under it: a create cut short by a crash.
      await this.removeUnfinished(rbd, pool, image);
      return done(await make());
    }
    const prevSrc = prev?.source?.snapshot ?? prev?.source?.volume;
    const wantSrc = src?.snapshot?.snapshot_id ?? src?.volume?.volume_id;
    if (prev && prevSrc !== wantSrc) throw alreadyExists(`volume "${req.name}" exists with a different content source`);
    if (!sizeFits(existing.size, req.capacity_range) || (!req.capacity_range && existing.size !== DEFAULT_SIZE && !wantSrc)) {
      throw alreadyExists(`volume "${req.name}" exists with size ${existing.size}, which does not match the request`);
    }
    // Complete, or a blank image whose create stopped before its record: that is all it lacks.
    if (prev) return this.toVolume(id, params, image, existing.size, prev);
    await rbd.metaSet(pool, image, META_VOLUME, record);
    return done(existing.size);
  }

  /**
   * Creates a blank image. librbd answers ENOENT for a namespace that does
   * not exist yet: it is made (idempotently, so racing creates and retries
   * agree) and the create tried again. An identity whose caps do not allow
   * that gets FAILED_PRECONDITION saying what to create by hand.
   */
  private async createImage(rbd: RbdApi, params: RbdParams, image: string, size: number, create: CreateOptions): Promise<void> {
    const pool = poolSpec(params.pool, params.radosNamespace);
    try {
      await rbd.create(pool, image, size, create);
      return;
    } catch (e) {
      if (!params.radosNamespace || !isErrno(e, ENOENT)) throw e;
    }
    try {
      await rbd.namespaceCreate(params.pool, params.radosNamespace);
    } catch (e) {
      if (isErrno(e, ENOENT)) await this.poolRoom(rbd, params);
      if (!isCsiError(e, status.FAILED_PRECONDITION)) throw e;
      throw failedPrecondition(`RADOS namespace "${params.radosNamespace}" does not exist in pool "${params.pool}" and this identity may not create it: create it with \`rbd namespace create ${pool}\`, or give the provisioner's user caps on the whole pool (${e.message})`);
    }
    await rbd.create(pool, image, size, create);
  }

  /** A clone of the snapshot image's snapshot, grown to `size`, with only its own record; returns its size. */
  private async cloneFromSnapshot(rbd: RbdApi, params: RbdParams, snapshotId: string, image: string, size: number, create: CreateOptions, record: string): Promise<number> {
    const sid = parseId(snapshotId, 's');
    if (!sid || sid.backend !== 'rbd') throw notFound(`snapshot ${snapshotId} not found`);
    const { spec: spool, image: simage } = located(sid);
    const pool = poolSpec(params.pool, params.radosNamespace);
    if (sid.cluster !== params.clusterID || spool !== pool) {
      throw invalidArgument('a volume can only be restored into the cluster, pool and RADOS namespace of its snapshot');
    }
    const snapInfo = await rbd.info(spool, simage);
    if (!snapInfo) throw notFound(`snapshot ${snapshotId} not found`);
    if (size < snapInfo.size) throw outOfRange(`requested size ${size} is smaller than the snapshot (${snapInfo.size} bytes)`);
    await rbd.clone(pool, simage, SNAP_NAME, image, create);
    if (size > snapInfo.size) await rbd.grow(pool, image, size);
    await rbd.metaStrip(pool, image, META_PREFIX, { [META_VOLUME]: record });
    return size;
  }

  private async cloneFromVolume(rbd: RbdApi, params: RbdParams, volumeId: string, image: string, size: number, create: CreateOptions, record: string): Promise<number> {
    const vid = parseId(volumeId, 'v');
    if (!vid || vid.backend !== 'rbd') throw notFound(`source volume ${volumeId} not found`);
    const { spec: vpool, image: vimage } = located(vid);
    if (vid.cluster !== params.clusterID || vpool !== poolSpec(params.pool, params.radosNamespace)) {
      throw invalidArgument('a volume can only be cloned within its cluster, pool and RADOS namespace');
    }
    const srcInfo = await rbd.info(vpool, vimage);
    if (!srcInfo) throw notFound(`source volume ${volumeId} not found`);
    if (size < srcInfo.size) throw outOfRange(`requested size ${size} is smaller than the source volume (${srcInfo.size} bytes)`);
    // A data pool the cluster lacks would fail the clone after the temporary snapshot is made.
    if (params.dataPool) await this.poolRoom(rbd, params);
    // A temporary snapshot named after the new image; with clone v2 removing it
    // only moves it to the trash namespace until the clone no longer needs it.
    await rbd.snapCreate(vpool, vimage, image);
    try {
      await rbd.clone(vpool, vimage, image, image, create);
    } catch (e) {
      // Taken: a retry, whose temporary snapshot must not stay on the source.
      if (isErrno(e, EEXIST)) await rbd.snapRemove(vpool, vimage, image);
      throw vanishedSource(e, `${vpool}/${vimage}@${image}`);
    }
    await rbd.snapRemove(vpool, vimage, image);
    if (size > srcInfo.size) await rbd.grow(vpool, image, size);
    await rbd.metaStrip(vpool, image, META_PREFIX, { [META_VOLUME]: record });
    return size;
  }

  private toVolume(id: string, at: { clusterID: string; pool: string; radosNamespace?: string }, image: string, size: number, meta: VolumeMeta): csi.Volume {
    const { clusterID } = at;
    const ctx: Record<string, string> = { clusterID, pool: at.pool, imageName: image };
    if (at.radosNamespace) ctx.radosNamespace = at.radosNamespace;
    if (meta.fsType) ctx.fsType = meta.fsType;
    if (meta.mounter) ctx.mounter = meta.mounter;
    return toCsiVolume(id, size, ctx, meta.source, this.clusters.cluster(clusterID).topology);
  }

  private async volumeMeta(rbd: RbdApi, pool: string, image: string): Promise<VolumeMeta | undefined> {
    const all = await rbd.metaList(pool, image);
    return parseRecord<VolumeMeta>(all[META_VOLUME]);
  }

  /** Removes an image no one was ever handed (it has no record). A killed command's watch holds `rbd rm` up to 30 s. */
  private async removeUnfinished(rbd: RbdApi, pool: string, image: string): Promise<void> {
    try {
      await rbd.remove(pool, image);
    } catch (e) {
      if (isErrno(e, EBUSY)) throw aborted(`unfinished image ${pool}/${image} is still open by a killed command; retry`);
      throw e;
    }
  }

  async deleteVolume(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<void> {
    const { spec: pool, image } = located(id);
    await this.removeImage(this.api(id.cluster, secrets, ctx.log), id.cluster, pool, image, secrets, ctx);
  }

  /**
   * Removes an image, or moves it to the trash while clones still need its
   * snapshots. Trashed ancestors that nothing needs any more are purged in
   * the background, so the caller waits for one command only.
   */
  private async removeImage(rbd: RbdApi, clusterId: string, pool: string, image: string, secrets: Record<string, string>, ctx: RpcContext): Promise<void> {
    let result: 'removed' | 'has-snapshots' | 'trashed' | 'missing';
    try {
      result = await rbd.remove(pool, image);
      if (result === 'has-snapshots') {
        // Our images' only user snapshots are the temporary sources of clones and
        // snapshots; one still here was left by a crash (a clone that still
        // needs it keeps it in the trash namespace after removal).
        const leftovers = (await rbd.snapList(pool, image)).filter((s) => s.namespace === 'user' && TEMP_SNAPSHOT.test(s.name));
        for (const s of leftovers) await rbd.snapRemove(pool, image, s.name);
        if (leftovers.length) result = await rbd.remove(pool, image);
      }
      if (result === 'has-snapshots') {
        await rbd.trashMove(pool, image);
        result = 'trashed';
      }
    } catch (e) {
      if (!isErrno(e, EBUSY)) throw e;
      // A volume published somewhere is in use. Otherwise the watch is most likely a
      // killed command's (a crashed controller's), which the OSD drops within 30 s.
      // Snapshot images are never published (the attachments they show were copied from their source).
      // A removal cut short by a kill may have taken the image's id object already: no record is left to read, and the retry finishes it.
      const meta = image.startsWith('csi-vol-') ? await rbd.metaList(pool, image).catch((err: unknown) => (isErrno(err, ENOENT) ? {} : Promise.reject(err))) : {};
      if (attachmentsIn(meta).size) throw failedPrecondition(`volume is still in use: image ${pool}/${image} has watchers`);
      throw aborted(`image ${pool}/${image} is still open (a killed client's watch lasts up to 30 s); retry`);
    }
    ctx.log.debug({ image, result }, 'image removed');
    if (result !== 'missing') this.purge(clusterId, pool, secrets);
  }

  /**
   * Purges trashed images in the background. What a pass cannot take yet
   * (held by a killed command's watch for up to 30 s, or needed by clones
   * still being removed) is tried again a few times, so a crash does not
   * leave it until the next delete in the pool.
   */
  private purge(clusterId: string, pool: string, secrets: Record<string, string>, attempt = 0): void {
    // Outside the call that starts it, whose end would stop its commands and
    // remove its key file; each pass holds a key file of its own.
    outsideCall(() =>
      this.purger.schedule(
        `${clusterId}/${pool}`,
        async () => {
          const left = await purgeTrash(this.api(clusterId, secrets), pool, this.log);
          if (left && attempt < PURGE_RETRIES) setTimeout(() => this.purge(clusterId, pool, secrets, attempt + 1), PURGE_RETRY_MS).unref();
        },
        (e) => this.log.warn({ err: String(e), pool }, 'trash purge failed; the next delete retries'),
      ),
    );
  }

  async publish(id: ObjectId, req: csi.ControllerPublishVolumeRequest, ctx: RpcContext): Promise<Record<string, string>> {
    const { spec: pool, image } = located(id);
    const conn = this.clusters.conn(id.cluster, req.secrets);
    const rbd = this.connect(conn, ctx.log);
    const meta = await metaOf(rbd, pool, image);
    if (!meta) throw notFound(`volume ${req.volume_id} not found`);
    const mode = modeOf(req.volume_capability);
    const attachments = attachmentsIn(meta);
    if (decidePublish(attachments, req.node_id, mode, req.readonly) === 'exists') return {};
    // Clients of nodes the volume is no longer published to: a stage that raced an
    // unpublish, or an unpublish that did not fence. They go before the new node comes.
    const stale = [...clientsIn(meta).keys()].filter((n) => n !== req.node_id && !attachments.has(n));
    if (stale.length) await this.fence(conn, rbd, pool, image, meta, stale, false, ctx);
    await rbd.metaSet(pool, image, attachKey(req.node_id), asciiJson({ mode, readonly: req.readonly } satisfies Attachment));
    return {};
  }

  async unpublish(id: ObjectId, nodeId: string, secrets: Record<string, string>, ctx: RpcContext): Promise<void> {
    const { spec: pool, image } = located(id);
    const conn = this.clusters.conn(id.cluster, secrets);
    const rbd = this.connect(conn, ctx.log);
    const meta = await metaOf(rbd, pool, image);
    if (!meta) return;
    const attachments = attachmentsIn(meta);
    const nodes = nodeId ? [nodeId] : [...new Set([...attachments.keys(), ...clientsIn(meta).keys()])];
    // A single-node attachment leaves nobody else entitled to the image: any watcher no other node claims is the node's too.
    const sole = nodes.some((n) => isSingleNode((attachments.get(n)?.mode ?? '') as AccessMode)) && [...attachments.keys()].every((n) => nodes.includes(n));
    await this.fence(conn, rbd, pool, image, meta, nodes, sole, ctx);
    // Removed last: until then a retry after a crash still knows the node was attached.
    if (nodeId) return rbd.metaRemove(pool, image, attachKey(nodeId));
    for (const k of Object.keys(meta).filter((k) => k.startsWith(ATTACH_PREFIX))) await rbd.metaRemove(pool, image, k);
  }

  /**
   * Fences what `nodes` still have open on the image, then drops their client
   * records. A crash in between fences again on retry, which only renews the
   * entries. `strays` adds the watchers no other node recorded: a node killed
   * between opening the image and recording its instance (or staged by a
   * version that did not record) is fenced all the same.
   */
  private async fence(conn: CephConn, rbd: RbdApi, pool: string, image: string, meta: Record<string, string>, nodes: string[], strays: boolean, ctx: RpcContext): Promise<void> {
    const clients = clientsIn(meta);
    const attached = attachmentsIn(meta);
    // An instance a node that keeps the volume also recorded (two nodes staging a multi-node
    // volume at the same moment can each see both) is left alone: fencing must not cut off a
    // node the volume is still published to.
    const kept = new Set([...clients].filter(([n]) => !nodes.includes(n) && attached.has(n)).flatMap(([, a]) => a));
    const addrs = nodes.flatMap((n) => clients.get(n) ?? []);
    if (strays) {
      const claimed = [...clients].filter(([n]) => !nodes.includes(n)).map(([, a]) => a);
      addrs.push(...ownInstances((await rbd.watchers(pool, image)) ?? [], [], claimed));
    }
    // A blocklisted client's watch goes at once, unless the OSD keeps it without a timeout (see reloadWatches).
    if ((await blocklist(conn, addrs.filter((a) => !kept.has(a)), ctx.log.child({ image, nodes }))).length) await tryReloadWatches(rbd, pool, { image }, ctx.log);
    for (const n of nodes) if (clients.has(n)) await rbd.metaRemove(pool, image, clientKey(n));
  }

  async getVolume(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<PublishedVolume | undefined> {
    const at = located(id);
    const { spec: pool, image } = at;
    if (!image?.startsWith('csi-vol-')) return undefined;
    const rbd = this.api(id.cluster, secrets, ctx.log);
    const info = await rbd.info(pool, image);
    if (!info) return undefined;
    const meta = await rbd.metaList(pool, image);
    const vm = parseRecord<VolumeMeta>(meta[META_VOLUME]);
    const publishedNodes = [...attachmentsIn(meta).keys()].sort();
    return {
      volume: this.toVolume(encodeId(id), { clusterID: id.cluster, pool: at.pool, radosNamespace: at.namespace }, image, info.size, vm ?? { v: 1, name: '', createdAt: '' }),
      publishedNodes,
      abnormal: vm ? undefined : 'image has no Strata metadata: creation did not finish',
    };
  }

  async listVolumeIds(clusterId: string, ctx: RpcContext): Promise<string[]> {
    return this.listImages(clusterId, 'csi-vol-', 'v', {}, ctx);
  }

  private async listImages(clusterId: string, prefix: string, kind: 'v' | 's', secrets: Record<string, string>, ctx: RpcContext): Promise<string[]> {
    const rbd = this.api(clusterId, secrets, ctx.log);
    const pools = await rbd.rbdPools();
    const ids: string[] = [];
    for (const p of pools) {
      // Namespaces Strata could not have used (another grammar, or too long for an id) hold none of its volumes.
      const namespaces = [undefined, ...(await rbd.namespaces(p.name)).filter((ns) => RBD_NAMESPACE.test(ns) && rbdIdBytes(clusterId, p.name, ns) <= MAX_ID_BYTES)];
      for (const ns of namespaces) {
        for (const img of await rbd.list(poolSpec(p.name, ns))) {
          if (img.startsWith(prefix)) ids.push(encodeId({ kind, backend: 'rbd', cluster: clusterId, location: rbdLocation(p.name, ns, img) }));
        }
      }
    }
    return ids.sort();
  }

  async getCapacity(clusterId: string, params: Record<string, string>, ctx: RpcContext): Promise<number> {
    // A StorageClass's parameters are checked as CreateVolume checks them; with none beyond backend and clusterID, every pool counts.
    const named = Object.keys(params).some((k) => k !== 'backend' && k !== 'clusterID' && !k.startsWith('csi.storage.k8s.io/'));
    const p = named ? parseRbdParams(params) : undefined;
    const rbd = this.api(clusterId, {}, ctx.log);
    // A volume's data lands in the data pool when the class names one: that is the room it can fill.
    if (p) return this.poolRoom(rbd, p);
    // No pool named: the largest any RBD pool can take (pools share OSDs, so a sum would overstate).
    return Math.max(0, ...(await rbd.rbdPools()).map((p) => p.maxAvail));
  }

  /**
   * The bytes the class's data pool (or pool) can still take. A pool the
   * cluster does not have is the StorageClass's mistake: INVALID_ARGUMENT.
   */
  private async poolRoom(rbd: RbdApi, p: RbdParams): Promise<number> {
    const [room, dataRoom] = await Promise.all([rbd.poolAvailable(p.pool), p.dataPool ? rbd.poolAvailable(p.dataPool) : undefined]);
    if (room === undefined) throw invalidArgument(`parameter "pool": cluster ${p.clusterID} has no pool "${p.pool}"`);
    if (p.dataPool && dataRoom === undefined) throw invalidArgument(`parameter "dataPool": cluster ${p.clusterID} has no pool "${p.dataPool}"`);
    return dataRoom ?? room;
  }

  async expand(id: ObjectId, req: csi.ControllerExpandVolumeRequest, ctx: RpcContext): Promise<csi.ControllerExpandVolumeResponse> {
    const { spec: pool, image } = located(id);
    const rbd = this.api(id.cluster, req.secrets, ctx.log);
    const required = Number(req.capacity_range?.required_bytes ?? 0);
    // With required_bytes the size needs no lookup: one librbd call opens, compares and grows.
    const current = required > 0 ? await rbd.grow(pool, image, sizeFromRange(req.capacity_range, 0, MiB)) : (await rbd.info(pool, image))?.size;
    if (current === undefined) throw notFound(`volume ${req.volume_id} not found`);
    const size = sizeFromRange(req.capacity_range, current, MiB);
    if (required <= 0 && size > current) await rbd.grow(pool, image, size);
    return { capacity_bytes: Math.max(size, current), node_expansion_required: !isBlock(req.volume_capability) };
  }

  /**
   * A snapshot is a clone of a temporary snapshot of the source, with its own
   * snapshot "csi" to restore from. The path is optimistic (no lookups
   * first); a retry finds the clone existing and answers from its metadata,
   * which is written last and so marks completion.
   */
  async createSnapshot(sourceId: ObjectId, req: csi.CreateSnapshotRequest, ctx: RpcContext): Promise<csi.Snapshot> {
    const { pool: basePool, namespace, spec: pool, image: srcImage } = located(sourceId);
    const rbd = this.api(sourceId.cluster, req.secrets, ctx.log);
    const snapImage = `csi-snap-${nameHash(this.cfg.driverName, req.name)}`;
    const snapshotId = encodeId({ kind: 's', backend: 'rbd', cluster: sourceId.cluster, location: rbdLocation(basePool, namespace, snapImage) });
    const sourceVolumeId = encodeId(sourceId);
    const finished = async (): Promise<csi.Snapshot | undefined> => {
      const done = await this.snapshotMeta(rbd, pool, snapImage);
      // A record under another name would be one inherited from the source by a clone cut short by a crash.
      if (!done || done.name !== req.name) return undefined;
      if (done.source !== sourceVolumeId) throw alreadyExists(`snapshot "${req.name}" exists for another source volume`);
      return toSnapshot(snapshotId, done);
    };
    try {
      await rbd.snapCreate(pool, srcImage, snapImage);
    } catch (e) {
      if (!isErrno(e, ENOENT)) throw e;
      // The source is gone: only a retry of a finished snapshot can still succeed.
      const done = await finished();
      if (done) return done;
      throw notFound(`source volume ${sourceVolumeId} not found`);
    }
    try {
      await rbd.clone(pool, srcImage, snapImage, snapImage, { features: SNAPSHOT_FEATURES });
    } catch (e) {
      if (!isErrno(e, EEXIST)) throw vanishedSource(e, `${pool}/${srcImage}@${snapImage}`);
      // The name taken for another source: the temporary snapshot just made must not stay on this one.
      const done = await finished().catch(async (err: unknown) => {
        await rbd.snapRemove(pool, srcImage, snapImage);
        throw err;
      });
      if (done) {
        await rbd.snapRemove(pool, srcImage, snapImage);
        return done;
      }
      // A snapshot image without its record was cut short by a crash, maybe
      // before librbd linked it to the source's snapshot: it is made again.
      await rbd.snapRemove(pool, snapImage, SNAP_NAME);
      await this.removeUnfinished(rbd, pool, snapImage);
      await rbd.clone(pool, srcImage, snapImage, snapImage, { features: SNAPSHOT_FEATURES });
    }
    const [info] = await Promise.all([rbd.info(pool, snapImage), rbd.snapCreate(pool, snapImage, SNAP_NAME)]);
    if (!info) throw failedPrecondition(`snapshot image ${pool}/${snapImage} vanished while being created`);
    const meta: SnapshotMeta = { v: 1, name: req.name, source: sourceVolumeId, size: info.size, createdAt: new Date().toISOString() };
    await Promise.all([rbd.snapRemove(pool, srcImage, snapImage), rbd.metaSet(pool, snapImage, META_SNAPSHOT, asciiJson(meta))]);
    return toSnapshot(snapshotId, meta);
  }

  private async snapshotMeta(rbd: RbdApi, pool: string, image: string): Promise<SnapshotMeta | undefined> {
    try {
      const all = await rbd.metaList(pool, image);
      return parseRecord<SnapshotMeta>(all[META_SNAPSHOT]);
    } catch (e) {
      if (isErrno(e, ENOENT)) return undefined;
      throw e;
    }
  }

  async deleteSnapshot(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<void> {
    const { spec: pool, image } = located(id);
    if (!image?.startsWith('csi-snap-')) return;
    const rbd = this.api(id.cluster, secrets, ctx.log);
    await rbd.snapRemove(pool, image, SNAP_NAME);
    await this.removeImage(rbd, id.cluster, pool, image, secrets, ctx);
  }

  async getSnapshot(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<csi.Snapshot | undefined> {
    const { spec: pool, image } = located(id);
    if (!image?.startsWith('csi-snap-')) return undefined;
    const meta = await this.snapshotMeta(this.api(id.cluster, secrets, ctx.log), pool, image);
    return meta ? toSnapshot(encodeId(id), meta) : undefined;
  }

  async listSnapshotIds(clusterId: string, source: ObjectId | undefined, secrets: Record<string, string>, ctx: RpcContext): Promise<string[]> {
    const all = await this.listImages(clusterId, 'csi-snap-', 's', secrets, ctx);
    if (!source) return all;
    const want = encodeId(source);
    const limit = pLimit(8);
    const rbd = this.api(clusterId, secrets, ctx.log);
    const metas = await Promise.all(
      all.map((sid) =>
        limit(() => {
          const at = located(parseId(sid, 's')!);
          return this.snapshotMeta(rbd, at.spec, at.image);
        }),
      ),
    );
    return all.filter((_, i) => metas[i]?.source === want);
  }
}

/** The image's metadata, or undefined when there is no such image. */
async function metaOf(rbd: RbdApi, pool: string, image: string): Promise<Record<string, string> | undefined> {
  try {
    return await rbd.metaList(pool, image);
  } catch (e) {
    if (isErrno(e, ENOENT)) return undefined;
    throw e;
  }
}

/** mkfs.xfs refuses file systems under 300 MB; provision at least that, as the spec allows above required_bytes. */
export const XFS_MIN_BYTES = 300 * MiB;

export function minimumForFs(size: number, fsType: string | undefined, limit: number | undefined): number {
  if (fsType !== 'xfs' || size >= XFS_MIN_BYTES) return size;
  if (limit && limit < XFS_MIN_BYTES) throw outOfRange(`an xfs volume needs at least ${XFS_MIN_BYTES} bytes, more than limit_bytes ${limit}`);
  return XFS_MIN_BYTES;
}

/**
 * A clone whose temporary snapshot is gone the instant after it was made (or
 * found made): an attempt killed just before, whose last steps still reached
 * the OSDs, removed it. ABORTED, so the retry looks again and finds that
 * attempt's result, or makes the snapshot anew.
 */
function vanishedSource(e: unknown, snap: string): unknown {
  return isErrno(e, ENOENT) ? aborted(`temporary snapshot ${snap} was removed by an earlier attempt still finishing; retry`) : e;
}
