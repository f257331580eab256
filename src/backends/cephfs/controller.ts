import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { Config } from '../../config/config.js';
import { CephClusters } from '../../ceph/clusters.js';
import type { RpcContext } from '../../csi/handler.js';
import { MAX_ID_BYTES, encodeId, nameHash, parseId, type ObjectId } from '../../csi/ids.js';
import { GiB, MiB, isBlock, modeOf, sizeFits, sizeFromRange } from '../../csi/capabilities.js';
import type * as csi from '../../csi/types.js';
import { aborted, alreadyExists, failedPrecondition, internal, invalidArgument, notFound, outOfRange } from '../../errors.js';
import { ATTACH_PREFIX, attachKey, attachmentsIn, decidePublish } from '../attachments.js';
import type { ControllerBackend, PublishedVolume } from '../types.js';
import { toCsiVolume } from '../volume.js';
import { parseRecord } from '../../util/json.js';
import { all } from '../../util/settle.js';
import { asciiJson } from '../../csi/grammar.js';
import { toSnapshot, type SnapshotMeta } from '../snapshots.js';
import { CephFsCli } from './fs-cli.js';
import { EAGAIN, EEXIST, EINVAL, ENOENT, isErrno, type SubvolumeApi, type SubvolumeConnector } from './subvolume-api.js';
import { parseCephfsParams } from './params.js';

/**
 * CephFS volumes are subvolumes csi-vol-<hash of the request name> in a
 * subvolume group, with the capacity as quota and their own RADOS namespace.
 * Snapshots are subvolume snapshots csi-snap-<hash>; restores and clones use
 * the mgr's asynchronous clone, answered with ABORTED ("in progress") until
 * complete, as sidecars retry. What the controller must remember (name,
 * source, attachments) is subvolume and snapshot metadata.
 */

const META_VOLUME = 'strata.volume';
const META_SNAPSHOT = 'strata.snapshot';
const DEFAULT_SIZE = GiB;
/** How long CreateVolume waits for a clone before answering "still in progress" (clones take 4-7 s), and how often it asks. */
export interface CloneWait {
  totalMs: number;
  pollMs: number;
}
const CLONE_WAIT: CloneWait = { totalMs: 20_000, pollMs: 250 };

interface VolumeMeta {
  v: 1;
  name: string;
  source?: { snapshot?: string; volume?: string };
  createdAt: string;
}

/**
 * Metadata values as the mgr can keep them: it stores subvolume metadata in a
 * ConfigParser file, where a "%" is read as interpolation and the set fails
 * with a traceback (a volume named "a%00" could never be created). JSON reads
 * the escaped form back unchanged.
 */
const metaValue = (v: unknown): string => asciiJson(v).replace(/%/g, '\\u0025');

function fitsSource(size: number, sourceSize: number): void {
  if (size < sourceSize) throw outOfRange(`requested size ${size} is smaller than the source (${sourceSize} bytes)`);
}

/** The Ceph user that may reach only this subvolume (shared by every node: volumes published before per-node users). */
export const volumeUser = (subvolume: string) => `strata-${subvolume}`;

/**
 * The Ceph user one node mounts this subvolume with. One per node, so that
 * fencing a node (evicting its sessions, removing its user) never touches
 * another node's mounts, and a key the old node kept opens nothing.
 */
export const nodeUser = (subvolume: string, nodeId: string) => `strata-${subvolume}-${createHash('sha256').update(nodeId).digest('hex').slice(0, 16)}`;
export const isNodeUserOf = (subvolume: string, user: string): boolean => new RegExp(`^strata-${subvolume}-[0-9a-f]{16}$`).test(user);

export class CephfsController implements ControllerBackend {
  private readonly clusters: CephClusters;
  constructor(
    private readonly cfg: Config,
    private readonly connect: SubvolumeConnector = (conn, fs, group, log) => new CephFsCli(conn, fs, group, log),
    private readonly cloneWait: CloneWait = CLONE_WAIT,
  ) {
    this.clusters = new CephClusters(cfg);
  }

  private cli(clusterId: string, fs: string, group: string, secrets: Record<string, string> | undefined, log: Logger): SubvolumeApi {
    return this.connect(this.clusters.conn(clusterId, secrets), fs, group, log);
  }

  private cliFor(id: ObjectId, secrets: Record<string, string> | undefined, log: Logger): { fs: SubvolumeApi; name: string; snap?: string } {
    const [fsName, group, name, snap] = id.location as [string, string, string, string | undefined];
    return { fs: this.cli(id.cluster, fsName, group, secrets, log), name, snap };
  }

  validateCapabilities(caps: csi.VolumeCapability[]): string | undefined {
    if (caps.some((c) => isBlock(c))) return 'CephFS volumes are file systems: raw block access is not available';
    return undefined;
  }

  async createVolume(req: csi.CreateVolumeRequest, ctx: RpcContext): Promise<csi.Volume> {
    const p = parseCephfsParams(req.parameters);
    const size = sizeFromRange(req.capacity_range, DEFAULT_SIZE, MiB);
    const name = `csi-vol-${nameHash(this.cfg.driverName, req.name)}`;
    const id = encodeId({ kind: 'v', backend: 'cephfs', cluster: p.clusterID, location: [p.fsName, p.subvolumeGroup, name] });
    const fs = this.cli(p.clusterID, p.fsName, p.subvolumeGroup, req.secrets, ctx.log);
    const src = req.volume_content_source;
    const wantSrc = src?.snapshot?.snapshot_id ?? src?.volume?.volume_id;
    if (!wantSrc) {
      const vm: VolumeMeta = { v: 1, name: req.name, createdAt: new Date().toISOString() };
      if ((await this.createBlank(fs, p, name, size, vm)) === 'made') return this.toVolume(id, p.clusterID, size, vm, p);
    }
    // The lookup is a getpath, half the mgr's work of an info. A clone target answers EAGAIN.
    const found = !wantSrc || (await fs.getpath(name).then((at) => at !== undefined, (e: unknown) => (isErrno(e, EAGAIN) ? true : Promise.reject(e))));
    let info = found ? await fs.info(name) : undefined;
    if (!info) {
      // Found a moment ago and gone now: a DeleteVolume of the same name ran meanwhile.
      if (!wantSrc) throw aborted(`subvolume ${name} was removed while being looked up; retry`);
      // A pool layout the file system lacks would fail the clone after a clone's temporary snapshot is made.
      if (p.pool) await this.dataPools(fs, p);
      await this.startClone(fs, p.clusterID, src!, name, size, p.pool);
      info = await fs.info(name);
      if (!info) throw internal(`subvolume ${name} vanished while being created`);
    }
    if (info.state !== 'complete') {
      // A failed clone of a volume takes its temporary snapshot with it: a retry makes another.
      info = await this.awaitClone(fs, name, ctx, src?.volume ? () => this.dropCloneSnapshot(fs, p.clusterID, wantSrc!, name) : undefined);
    }

    const meta = await fs.metaList(name);
    const prev = parseRecord<VolumeMeta>(meta[META_VOLUME]);
    if (prev) {
      const prevSrc = prev.source?.snapshot ?? prev.source?.volume;
      if (prevSrc !== wantSrc) throw alreadyExists(`volume "${req.name}" exists with a different content source`);
      if (!sizeFits(info.bytesQuota, req.capacity_range) || (!req.capacity_range && info.bytesQuota !== DEFAULT_SIZE && !wantSrc)) {
        throw alreadyExists(`volume "${req.name}" exists with size ${info.bytesQuota}, which does not match the request`);
      }
      return this.toVolume(id, p.clusterID, info.bytesQuota, prev, p);
    }
    // First completion (or a retry after a crash before the record): clones carry their source's quota.
    if (info.bytesQuota !== size) await fs.resize(name, size);
    for (const k of Object.keys(meta)) if (k.startsWith('strata.')) await fs.metaRemove(name, k);
    const vm: VolumeMeta = { v: 1, name: req.name, createdAt: new Date().toISOString() };
    if (src?.snapshot) vm.source = { snapshot: wantSrc };
    else if (src?.volume) vm.source = { volume: wantSrc };
    if (src?.volume) await this.dropCloneSnapshot(fs, p.clusterID, wantSrc!, name);
    await fs.metaSet(name, META_VOLUME, metaValue(vm));
    return this.toVolume(id, p.clusterID, size, vm, p);
  }

  /**
   * A blank volume: the lookup, the subvolume (its size as quota, no metadata yet) and its record in
   * one round trip ('made'), or 'found' (a retry, a clone target) to be checked against the request.
   */
  private async createBlank(fs: SubvolumeApi, p: ReturnType<typeof parseCephfsParams>, name: string, size: number, vm: VolumeMeta): Promise<'found' | 'made'> {
    try {
      return await fs.createIfMissing(name, size, p.pool, META_VOLUME, metaValue(vm));
    } catch (e) {
      // The mgr answers a file system or pool layout the cluster lacks as a missing group (ENOENT) or a bad argument (EINVAL).
      if (!isErrno(e, ENOENT) && !isErrno(e, EINVAL)) throw e;
      await this.dataPools(fs, p);
      if (!isErrno(e, ENOENT)) throw e;
      // The group is made on first use; checking for it on every create would cost a command each time.
      await fs.ensureGroup();
      return fs.createIfMissing(name, size, p.pool, META_VOLUME, metaValue(vm));
    }
  }

  /** Starts the mgr clone for a restore (from a snapshot) or a clone (from a volume, via a temporary snapshot). */
  private async startClone(fs: SubvolumeApi, clusterId: string, src: csi.VolumeContentSource, target: string, size: number, pool?: string): Promise<void> {
    let from: { name: string; snap: string; size: number };
    if (src.snapshot) {
      const sid = this.sameFs(parseId(src.snapshot.snapshot_id, 's'), clusterId, fs, `snapshot ${src.snapshot.snapshot_id} not found`);
      const [, , name, snap] = sid.location as [string, string, string, string];
      const rec = await this.snapshotRecord(fs, name, snap);
      if (!rec) throw notFound(`snapshot ${src.snapshot.snapshot_id} not found`);
      from = { name, snap, size: rec.size };
      fitsSource(size, from.size);
    } else {
      const vid = this.sameFs(parseId(src.volume!.volume_id, 'v'), clusterId, fs, `source volume ${src.volume!.volume_id} not found`);
      const name = vid.location[2]!;
      const info = await fs.info(name);
      if (!info || info.state !== 'complete') throw notFound(`source volume ${src.volume!.volume_id} not found`);
      from = { name, snap: target, size: info.bytesQuota };
      // Before the temporary snapshot: a refused clone is not retried, and the snapshot would stay on the source until it is deleted.
      fitsSource(size, from.size);
      try {
        await fs.snapCreate(name, target);
      } catch (e) {
        if (!isErrno(e, EEXIST)) throw e;
      }
    }
    await fs.clone(from.name, from.snap, target, pool);
  }

  /** A snapshot's record: in its metadata, or in config-key once its subvolume was removed. */
  private async snapshotRecord(fs: SubvolumeApi, name: string, snap: string): Promise<SnapshotMeta | undefined> {
    const m = await fs.snapMetaList(name, snap);
    const raw = m?.[META_SNAPSHOT] ?? (m ? undefined : await fs.retainedGet(name, snap));
    return parseRecord<SnapshotMeta>(raw);
  }

  private sameFs(id: ObjectId | undefined, clusterId: string, fs: SubvolumeApi, missing: string): ObjectId {
    if (!id || id.backend !== 'cephfs') throw notFound(missing);
    if (id.cluster !== clusterId || id.location[0] !== fs.fs || id.location[1] !== fs.group) {
      throw invalidArgument('a CephFS volume can only be restored or cloned within its file system and subvolume group');
    }
    return id;
  }

  private async dropCloneSnapshot(fs: SubvolumeApi, clusterId: string, sourceVolumeId: string, target: string): Promise<void> {
    const vid = parseId(sourceVolumeId, 'v');
    if (vid && vid.cluster === clusterId) await fs.snapRemove(vid.location[2]!, target);
  }

  /** Waits for a clone; one that failed is removed, with what `dropSource` removes on its source. */
  private async awaitClone(fs: SubvolumeApi, name: string, ctx: RpcContext, dropSource?: () => Promise<void>) {
    const deadline = Date.now() + this.cloneWait.totalMs;
    for (;;) {
      const st = await fs.cloneState(name);
      if (!st || st.state === 'complete') break;
      if (st.state === 'failed' || st.state === 'canceled') {
        await fs.remove(name, false, true);
        await dropSource?.();
        throw internal(`cloning into ${name} ${st.state}${st.reason ? `: ${st.reason}` : ''}; it was removed, and a retry starts over`);
      }
      if (Date.now() > deadline) throw aborted(`volume is still being cloned (${st.state}); retry`);
      await sleep(this.cloneWait.pollMs);
    }
    const info = await fs.info(name);
    if (!info) throw internal(`subvolume ${name} vanished after cloning`);
    ctx.log.debug({ name }, 'clone complete');
    return info;
  }

  private toVolume(id: string, clusterID: string, size: number, meta: VolumeMeta, p?: { mounter?: string; kernelMountOptions: string[]; fuseMountOptions: string[] }): csi.Volume {
    const ctx: Record<string, string> = { clusterID };
    if (p?.mounter) ctx.mounter = p.mounter;
    if (p?.kernelMountOptions.length) ctx.kernelMountOptions = p.kernelMountOptions.join(',');
    if (p?.fuseMountOptions.length) ctx.fuseMountOptions = p.fuseMountOptions.join(',');
    return toCsiVolume(id, size, ctx, meta.source, this.clusters.cluster(clusterID).topology);
  }

  async deleteVolume(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<void> {
    const { fs, name } = this.cliFor(id, secrets, ctx.log);
    const info = await fs.info(name);
    if (!info || info.state === 'snapshot-retained') return;
    if (info.state !== 'complete') {
      // A clone target: the mgr refuses to remove one still running (EAGAIN, even with --force) until it is canceled.
      await fs.cloneCancel(name);
      await fs.remove(name, false, true);
      return;
    }
    // The users and the snapshots are independent of each other, and each snapshot of the others:
    // side by side. Only the removal waits for all of them, so a crash before it leaves the
    // subvolume to a retry that finds the same work (repeatable) to do.
    const [, kept] = await all([
      (async () => {
        // Only users that exist are deauthorized: a deauthorize of an unknown user costs the mgr
        // a command under its global lock and leaves an empty auth file ($<user>.meta) in
        // /volumes. The shared user of older volumes is asked of the mon, which knows it
        // even when the mgr's record of it is partial; an identity that may not ask deauthorizes it as before.
        const [listed, shared] = await all([fs.authorizedUsers(name), fs.userExists(volumeUser(name))]);
        const users = new Set(listed.filter((u) => isNodeUserOf(name, u)));
        if (shared !== false || listed.includes(volumeUser(name))) users.add(volumeUser(name));
        await all([...users].map((user) => fs.deauthorize(name, user)));
      })(),
      (async () => {
        const snaps = await fs.snapList(name);
        const records = await all(snaps.map((snap) => fs.snapMetaList(name, snap)));
        return all(
          snaps.map(async (snap, i) => {
            const rec = records[i]?.[META_SNAPSHOT];
            if (rec) await fs.retainedSet(name, snap, rec);
            // No record: the temporary source of a clone, or a snapshot whose create a
            // crash cut short and no one retried. Nothing refers to it; retained, it would leak.
            else await fs.snapRemove(name, snap);
            return !!rec;
          }),
        );
      })(),
    ]);
    await fs.remove(name, kept.some(Boolean));
  }

  async publish(id: ObjectId, req: csi.ControllerPublishVolumeRequest, ctx: RpcContext): Promise<Record<string, string>> {
    const { fs, name } = this.cliFor(id, req.secrets, ctx.log);
    const info = await fs.info(name);
    if (!info || info.state !== 'complete') throw notFound(`volume ${req.volume_id} not found`);
    const mode = modeOf(req.volume_capability);
    const attachments = attachmentsIn(await fs.metaList(name));
    if (decidePublish(attachments, req.node_id, mode, req.readonly) === 'add') {
      // Users of nodes the volume is no longer published to (an unpublish cut short) go before a new node comes.
      const current = new Set([...attachments.keys()].map((n) => nodeUser(name, n)));
      for (const user of await fs.authorizedUsers(name)) if (isNodeUserOf(name, user) && !current.has(user) && user !== nodeUser(name, req.node_id)) await this.fence(fs, name, user, ctx);
      await fs.metaSet(name, attachKey(req.node_id), metaValue({ mode, readonly: req.readonly }));
    }
    // The node mounts with a key for this subvolume and this node alone, handed over in the publish
    // context with the subvolume's path (which the node checks against the id).
    const user = nodeUser(name, req.node_id);
    return { userID: user, userKey: await fs.authorize(name, user), subvolumePath: info.path };
  }

  async unpublish(id: ObjectId, nodeId: string, secrets: Record<string, string>, ctx: RpcContext): Promise<void> {
    const { fs, name } = this.cliFor(id, secrets, ctx.log);
    const info = await fs.info(name);
    if (!info || info.state !== 'complete') return;
    // The node's sessions are evicted and its user removed before the attachment goes: a node that
    // never unmounted (force detach) is cut off, and a retry after a crash finds the attachment and fences again.
    const users = nodeId ? [nodeUser(name, nodeId)] : (await fs.authorizedUsers(name)).filter((u) => isNodeUserOf(name, u));
    for (const user of users) await this.fence(fs, name, user, ctx);
    const keys = nodeId ? [attachKey(nodeId)] : Object.keys(await fs.metaList(name)).filter((k) => k.startsWith(ATTACH_PREFIX));
    for (const k of keys) await fs.metaRemove(name, k);
  }

  /** Evicts a node user's sessions (the MDS blocklists them) and removes the user, so its key opens nothing again. Idempotent. */
  private async fence(fs: SubvolumeApi, name: string, user: string, ctx: RpcContext): Promise<void> {
    await fs.evict(name, user);
    await fs.deauthorize(name, user);
    ctx.log.debug({ subvolume: name, user }, 'node user evicted and removed');
  }

  async getVolume(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<PublishedVolume | undefined> {
    const { fs, name } = this.cliFor(id, secrets, ctx.log);
    if (!name?.startsWith('csi-vol-')) return undefined;
    const info = await fs.info(name);
    if (!info || info.state === 'snapshot-retained') return undefined;
    const meta = info.state === 'complete' ? await fs.metaList(name) : {};
    const vm = parseRecord<VolumeMeta>(meta[META_VOLUME]);
    return {
      volume: this.toVolume(encodeId(id), id.cluster, info.bytesQuota, vm ?? { v: 1, name: '', createdAt: '' }),
      publishedNodes: [...attachmentsIn(meta).keys()].sort(),
      abnormal: vm ? undefined : `subvolume is ${info.state === 'complete' ? 'missing its Strata record: creation did not finish' : `being cloned (${info.state})`}`,
    };
  }

  /** Every subvolume group of every file system, so volumes of any StorageClass are listed. */
  private async groups(clusterId: string, secrets: Record<string, string>, ctx: RpcContext): Promise<SubvolumeApi[]> {
    const admin = this.cli(clusterId, '', '', secrets, ctx.log);
    const out: SubvolumeApi[] = [];
    for (const f of await admin.fsNames()) {
      for (const g of await this.cli(clusterId, f, '', secrets, ctx.log).groupNames()) out.push(this.cli(clusterId, f, g, secrets, ctx.log));
    }
    return out;
  }

  async listVolumeIds(clusterId: string, ctx: RpcContext): Promise<string[]> {
    const ids: string[] = [];
    for (const fs of await this.groups(clusterId, {}, ctx)) {
      for (const n of await fs.list()) {
        if (n.startsWith('csi-vol-')) ids.push(encodeId({ kind: 'v', backend: 'cephfs', cluster: clusterId, location: [fs.fs, fs.group, n] }));
      }
    }
    return ids.sort();
  }

  async getCapacity(clusterId: string, params: Record<string, string>, ctx: RpcContext): Promise<number> {
    // A StorageClass's parameters are checked as CreateVolume checks them; with none beyond backend and clusterID there is no file system to ask.
    const named = Object.keys(params).some((k) => k !== 'backend' && k !== 'clusterID' && !k.startsWith('csi.storage.k8s.io/'));
    const p = named ? parseCephfsParams(params) : undefined;
    if (!p) return 0;
    const fs = this.cli(clusterId, p.fsName, p.subvolumeGroup, {}, ctx.log);
    const pools = await this.dataPools(fs, p);
    const pool = p.pool ?? pools[0];
    return pool ? ((await fs.poolAvailable(pool)) ?? 0) : 0;
  }

  /** The file system's data pools; INVALID_ARGUMENT when the class names a file system or pool layout the cluster lacks. */
  private async dataPools(fs: SubvolumeApi, p: { clusterID: string; fsName: string; pool?: string }): Promise<string[]> {
    const pools = await fs.dataPools();
    if (!pools) throw invalidArgument(`parameter "fsName": cluster ${p.clusterID} has no file system "${p.fsName}"`);
    if (p.pool && !pools.includes(p.pool)) throw invalidArgument(`parameter "pool": "${p.pool}" is not a data pool of file system "${p.fsName}"`);
    return pools;
  }

  async expand(id: ObjectId, req: csi.ControllerExpandVolumeRequest, ctx: RpcContext): Promise<csi.ControllerExpandVolumeResponse> {
    const { fs, name } = this.cliFor(id, req.secrets, ctx.log);
    const required = Number(req.capacity_range?.required_bytes ?? 0);
    // With required_bytes (the resizer always sends it) the lookup and the resize it decides go in one round trip.
    const info = required > 0 ? await fs.grow(name, sizeFromRange(req.capacity_range, 0, MiB)) : await fs.info(name);
    if (!info || info.state !== 'complete') throw notFound(`volume ${req.volume_id} not found`);
    const size = sizeFromRange(req.capacity_range, info.bytesQuota, MiB);
    // Only a larger size is sent: `--no-shrink` refuses only a size below the bytes used, and sets any other smaller size.
    if (required <= 0 && size > info.bytesQuota) await fs.resize(name, size);
    // The quota is enforced by the MDS and clients at once: no node step.
    return { capacity_bytes: Math.max(size, info.bytesQuota), node_expansion_required: false };
  }

  async createSnapshot(sourceId: ObjectId, req: csi.CreateSnapshotRequest, ctx: RpcContext): Promise<csi.Snapshot> {
    const { fs, name } = this.cliFor(sourceId, req.secrets, ctx.log);
    const snap = `csi-snap-${nameHash(this.cfg.driverName, req.name)}`;
    const sourceVolumeId = encodeId(sourceId);
    const location = [fs.fs, fs.group, name, snap];
    // Long file-system and group names leave no room for a snapshot id in the 128 bytes CSI allows: say so, or that the source is not there.
    if (Buffer.byteLength(['s1', 's', 'cephfs', sourceId.cluster, ...location].join(':')) > MAX_ID_BYTES) {
      if (!(await fs.info(name))) throw notFound(`source volume ${sourceVolumeId} not found`);
      throw failedPrecondition(`volume ${sourceVolumeId} has file-system and group names too long for a snapshot id of at most ${MAX_ID_BYTES} bytes`);
    }
    const snapshotId = encodeId({ kind: 's', backend: 'cephfs', cluster: sourceId.cluster, location });
    // The three reads are independent: side by side, the call waits for one round trip instead of three.
    const [m, info, claim] = await Promise.all([fs.snapMetaList(name, snap), fs.info(name), fs.claimGet(snap)]);
    // A live source keeps its snapshots' records in their metadata; only a removed one's are in config-key.
    const raw = m?.[META_SNAPSHOT] ?? (m || info?.state === 'complete' ? undefined : await fs.retainedGet(name, snap));
    const existing = parseRecord<SnapshotMeta>(raw);
    if (existing) return toSnapshot(snapshotId, existing);
    if (!info || info.state !== 'complete') throw notFound(`source volume ${sourceVolumeId} not found`);
    // Snapshot names are global to the driver: the same name on another volume is a conflict.
    // The claim is written before the snapshot, so a crash in between leaves a claim a retry reuses.
    if (claim !== snapshotId) {
      if (claim && (await this.claimHolds(claim, req.secrets, ctx))) throw alreadyExists(`snapshot "${req.name}" exists for another source volume`);
      await fs.claimSet(snap, snapshotId);
    }
    try {
      await fs.snapCreate(name, snap);
    } catch (e) {
      if (!isErrno(e, EEXIST)) throw e;
    }
    const meta: SnapshotMeta = { v: 1, name: req.name, source: sourceVolumeId, size: info.bytesQuota, createdAt: new Date().toISOString() };
    await fs.snapMetaSet(name, snap, META_SNAPSHOT, metaValue(meta));
    return toSnapshot(snapshotId, meta);
  }

  /** Whether a name claim still belongs to a snapshot (a DeleteSnapshot cut short can leave a stale one). */
  private async claimHolds(claim: string, secrets: Record<string, string>, ctx: RpcContext): Promise<boolean> {
    const other = parseId(claim, 's');
    if (!other || other.backend !== 'cephfs') return false;
    return !!(await this.getSnapshot(other, secrets, ctx));
  }

  async deleteSnapshot(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<void> {
    const { fs, name, snap } = this.cliFor(id, secrets, ctx.log);
    if (!snap?.startsWith('csi-snap-')) return;
    await fs.snapRemove(name, snap);
    // The rest is bookkeeping, each part repeatable by a retry and independent of the others: side by side.
    await all([
      fs.retainedRemove(name, snap),
      (async () => {
        if ((await fs.claimGet(snap)) === encodeId(id)) await fs.claimRemove(snap);
      })(),
      (async () => {
        // A subvolume kept only for its snapshots goes with the last of them.
        const info = await fs.info(name);
        if (info?.state === 'snapshot-retained' && !(await fs.snapList(name)).length) await fs.remove(name, false);
      })(),
    ]);
  }

  async getSnapshot(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<csi.Snapshot | undefined> {
    const { fs, name, snap } = this.cliFor(id, secrets, ctx.log);
    if (!snap?.startsWith('csi-snap-')) return undefined;
    const rec = await this.snapshotRecord(fs, name, snap);
    return rec ? toSnapshot(encodeId(id), rec) : undefined;
  }

  async listSnapshotIds(clusterId: string, source: ObjectId | undefined, secrets: Record<string, string>, ctx: RpcContext): Promise<string[]> {
    const ids: string[] = [];
    const groups = source ? [this.cliFor(source, secrets, ctx.log).fs] : await this.groups(clusterId, secrets, ctx);
    for (const fs of groups) {
      const names = source ? [source.location[2]!] : (await fs.list()).filter((n) => n.startsWith('csi-vol-'));
      for (const n of names) {
        for (const s of await fs.snapList(n)) {
          if (s.startsWith('csi-snap-')) ids.push(encodeId({ kind: 's', backend: 'cephfs', cluster: clusterId, location: [fs.fs, fs.group, n, s] }));
        }
      }
    }
    return ids.sort();
  }
}

