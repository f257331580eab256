import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Config } from '../../config/config.js';
import { CephClusters } from '../../ceph/clusters.js';
import type { CephConn } from '../../ceph/conn.js';
import { isReadOnlyMode, isSingleNode, modeOf } from '../../csi/capabilities.js';
import type { RpcContext } from '../../csi/handler.js';
import type { ObjectId } from '../../csi/ids.js';
import type * as csi from '../../csi/types.js';
import { aborted, failedPrecondition, internal, invalidArgument, notFound } from '../../errors.js';
import { deviceInUse, findMount, readMountInfo, type MountEntry } from '../../mount/mountinfo.js';
import { bindMount, detectFs, deviceSize, fsSmallerThanDevice, growExtOffline, growFs, loopBacking, loopRefresh, loopRelease, mkfs, mount, mountHealth, pathKind, removeMountPoint, unmount } from '../../mount/mounter.js';
import type { NodeBackend } from '../types.js';
import { RbdAttacher, chooseMounter, type ImageRef } from './attach.js';
import { FS_TYPES, MOUNTERS, type FsType, type RbdMounter } from './params.js';
import { LibRbd } from './librbd.js';
import { ENOENT, isErrno, poolSpec, tryReloadWatches, type RbdApi } from './rbd-api.js';
import { located } from './location.js';
import { blocklist, clientKey, clientsIn, ownInstances, parseClientRecord, type ClientRecord } from './fence.js';
import { asciiJson } from '../../csi/grammar.js';

/**
 * Node side of RBD: attach the image, make a file system only on a blank
 * device, mount it at the staging path (or, for raw block, bind the device to
 * <staging>/dev). Everything is found again from mountinfo, losetup and the
 * kernel's mapping list, so a restarted node plugin picks up where it was.
 */

import { STAGED_BLOCK_FILE as BLOCK_FILE } from '../types.js';

export class RbdNode implements NodeBackend {
  readonly rawBlock = true;
  private readonly clusters: CephClusters;
  readonly attacher: RbdAttacher;

  constructor(
    cfg: Config,
    stateDir: string,
    private readonly nodeId: string,
  ) {
    this.clusters = new CephClusters(cfg);
    this.attacher = new RbdAttacher(stateDir);
  }

  private ref(id: ObjectId): ImageRef {
    const { pool, namespace, image } = located(id);
    return { cluster: id.cluster, pool, namespace, image };
  }

  async stage(id: ObjectId, req: csi.NodeStageVolumeRequest, ctx: RpcContext): Promise<void> {
    const cap = req.volume_capability!;
    const staging = req.staging_target_path;
    const target = cap.block ? path.join(staging, BLOCK_FILE) : staging;
    const opts = stageOptions(req);
    const ref = this.ref(id);
    const conn = this.clusters.conn(id.cluster, req.secrets);
    const rbd = new LibRbd(conn, ctx.log);
    if (await findMount(target)) {
      // Already staged, unless the mount is from before this node was fenced (and the volume
      // published to it again): a blocklisted client has lost its watch, so none is found.
      if (await this.recordClients(rbd, ref, undefined, ctx)) {
        if (await this.deadStage(id, req)) await this.restage(id, req, ctx);
        return;
      }
      ctx.log.warn('the staged mount is from before this node was fenced: staging the volume afresh');
      await this.unstage(id, staging, ctx, req);
    }
    const mode = modeOf(cap);
    const ours = await this.attacher.findDevice(ref, ctx.log);
    // Clients that had the image open before this node attached: none of them is this node's.
    let before: string[] | undefined;
    if (!ours) {
      // One command checks that the image exists and, for single-node modes,
      // is the node-side fence: an image already open elsewhere (a node the
      // controller thinks is gone, or a stale attachment) is not opened again.
      const watchers = await rbd.watchers(spec(ref), ref.image);
      if (watchers === undefined) throw notFound(`volume ${req.volume_id} not found`);
      // A stage cut short between rbd-fuse and losetup left our own rbd-fuse mount, whose watch is the one seen.
      const own = (await findMount(this.attacher.fuseDir(ref))) ? 1 : 0;
      if (!own) before = watchers;
      if (watchers.length > own && isSingleNode(mode)) {
        // A watch left by a client killed while registering it would otherwise refuse the volume here for good.
        await tryReloadWatches(rbd, spec(ref), { image: ref.image }, ctx.log);
        throw failedPrecondition(`volume is in use elsewhere (watcher ${watchers[0]}); refusing a second single-node attachment`);
      }
    }
    const device = ours ?? (await this.attacher.attach(chooseMounter(opts.mounter), ref, conn, ctx.log));
    // The record is needed before a pod writes, which is after NodePublish: it is written while the
    // file system is made and mounted, and the stage answers only once it is in place.
    const place = async (): Promise<void> => {
      mkdirSync(staging, { recursive: true });
      if (cap.block) {
        // Never truncates: a file already there keeps its bytes (and is not removed at unstage).
        writeFileSync(target, '', { flag: 'a' });
        await bindMount(device, target, false, [], ctx.log);
        return;
      }
      const readonly = isReadOnlyMode(mode);
      const wanted = opts.fsType;
      let fs = await detectFs(device, ctx.log);
      const fresh = !fs;
      if (!fs) {
        if (readonly) throw failedPrecondition('a blank volume cannot be staged read-only: it has no file system yet');
        await mkfs(wanted, device, ctx.log);
        fs = wanted;
      } else if (fs !== wanted) {
        ctx.log.warn({ found: fs, wanted }, 'volume already has a different file system; mounting it as it is');
      }
      // A volume restored or cloned into a bigger size carries its source's
      // smaller file system: grow it now, as the spec asks of staging.
      const growExt = !readonly && fs.startsWith('ext') && !fresh && (await fsSmallerThanDevice(fs, device, ctx.log));
      if (growExt) await growExtOffline(device, ctx.log);
      await mount(device, staging, fs, stageMountOptions(fs, readonly, cap.mount?.mount_flags ?? []), ctx.log);
      // xfs grows only while mounted; xfs_growfs is a no-op when there is nothing to add.
      if (!readonly && fs === 'xfs') await growFs('xfs', device, staging, ctx.log);
    };
    try {
      const [placed, recorded] = await Promise.allSettled([place(), this.recordClients(rbd, ref, before, ctx)]);
      for (const r of [placed, recorded]) if (r.status === 'rejected') throw r.reason;
      // A device left by a stage cut short whose client has since been fenced: undone here, attached afresh on retry.
      if (recorded.status === 'fulfilled' && !recorded.value && ours) throw aborted('the attachment left by an earlier stage was fenced; retry');
    } catch (e) {
      await unmount(cap.block ? target : staging, ctx.log).catch((d) => ctx.log.warn({ err: String(d) }, 'cleanup after failed stage'));
      await this.attacher.detach(ref, ctx.log).catch((d) => ctx.log.warn({ err: String(d) }, 'cleanup after failed stage'));
      if (!ours) await rbd.metaRemove(spec(ref), ref.image, clientKey(this.nodeId)).catch((d) => ctx.log.warn({ err: String(d) }, 'cleanup after failed stage'));
      throw e;
    }
  }

  /**
   * Records in the image's metadata the client instances this node opened it
   * with (see fence.ts). A restage over an attachment already there keeps a
   * record it finds; without one, every watcher no other node claims is ours,
   * and none at all means that attachment's client was fenced (false).
   */
  private async recordClients(rbd: RbdApi, ref: ImageRef, before: string[] | undefined, ctx: RpcContext): Promise<boolean> {
    const key = clientKey(this.nodeId);
    let others: string[][] = [];
    if (!before) {
      const meta = await rbd.metaList(spec(ref), ref.image);
      if (meta[key] !== undefined) return true;
      others = [...clientsIn(meta)].filter(([n]) => n !== this.nodeId).map(([, a]) => a);
    }
    const addrs = ownInstances((await rbd.watchers(spec(ref), ref.image)) ?? [], before ?? [], others);
    // Over an attachment already there, no watcher of ours means a fenced client: nothing to record.
    if (!addrs.length && !before) return false;
    if (!addrs.length) ctx.log.warn('no client of this node shows on the image; a fence can only take its unclaimed watchers');
    await rbd.metaSet(spec(ref), ref.image, key, asciiJson({ v: 1, addrs } satisfies ClientRecord));
    return addrs.length > 0;
  }

  /** Whether the staged file system (or bound device) reads through an rbd-fuse that is gone. */
  async deadStage(id: ObjectId, staged: csi.NodeStageVolumeRequest): Promise<boolean> {
    const entries = await readMountInfo();
    const device = stagedDevice(stagedAt(staged), entries);
    return !!device && (await this.attacher.loopDead(device, this.ref(id), entries));
  }

  /**
   * Stages again, on top of the dead stack, a volume whose rbd-fuse died (the
   * node plugin's container restarted): rbd-fuse again, a new loop device,
   * and the file system mounted over the dead one at the staging path, where
   * running pods' targets can be bound over theirs (a container sees mounts
   * made on its target, not a target remounted). The dead mount can never
   * write again (its loop device fails every I/O), which is what lets xfs
   * mount the same file system twice (nouuid). Each step finds what an earlier
   * heal cut short did, so a retry converges.
   */
  async restage(id: ObjectId, staged: csi.NodeStageVolumeRequest, ctx: RpcContext): Promise<void> {
    const ref = this.ref(id);
    const cap = staged.volume_capability!;
    const at = stagedAt(staged);
    const dir = this.attacher.fuseDir(ref);
    const conn = this.clusters.conn(id.cluster, staged.secrets);
    const rbd = new LibRbd(conn, ctx.log);
    const dead = stagedDevice(at, await readMountInfo());
    // Marked to clear at its last close: the dead file system on it, unmounted with the stack at
    // NodeUnstage, releases it, though the device is no longer found by its file once the dead FUSE
    // mount is detached. A bound device node holds nothing open: only a device still over the
    // image's file is released (the number of one cleared already may serve another volume).
    if (dead && (!cap.block || loopBacking(dead)?.file.startsWith(this.attacher.imageFile(ref)))) await loopRelease(dead, ctx.log);
    const health = await mountHealth(dir);
    if (health === 'hung') throw aborted('the new rbd-fuse of this volume does not answer; retry');
    let before: string[] | undefined;
    if (health !== 'ok') {
      await this.releaseDeadClient(conn, rbd, ref, ctx);
      await unmount(dir, ctx.log);
      before = (await rbd.watchers(spec(ref), ref.image)) ?? [];
    }
    const device = await this.attacher.attach('rbd-fuse', ref, conn, ctx.log);
    // Before the file system is mounted: from then on the volume looks healthy, and the
    // controller's fence must find the new client in the record.
    await this.rerecord(rbd, ref, before, ctx);
    if (cap.block) {
      await bindMount(device, at, false, [], ctx.log);
      return;
    }
    const fs = await detectFs(device, ctx.log);
    if (!fs) throw internal(`the image of volume ${staged.volume_id} shows no file system after rbd-fuse restarted`);
    await mount(device, at, fs, stageMountOptions(fs, isReadOnlyMode(modeOf(cap)), cap.mount?.mount_flags ?? []), ctx.log);
  }

  /**
   * Frees the image's exclusive lock from this node's own rbd-fuse that died:
   * its watch would hold the lock ~30 s more, and every write of the new one
   * would wait. It is this node's (its record says so) and can never answer
   * again (its FUSE connection is gone), so it is blocklisted, as a fence
   * would; a key not allowed to do that waits for the watch to time out.
   */
  private async releaseDeadClient(conn: CephConn, rbd: RbdApi, ref: ImageRef, ctx: RpcContext): Promise<void> {
    const mine = parseClientRecord((await rbd.metaList(spec(ref), ref.image))[clientKey(this.nodeId)])?.addrs ?? [];
    const held = async () => ((await rbd.watchers(spec(ref), ref.image)) ?? []).filter((w) => mine.includes(w));
    let left = await held();
    if (!left.length) return;
    try {
      await blocklist(conn, left, ctx.log);
      await tryReloadWatches(rbd, spec(ref), { image: ref.image }, ctx.log);
    } catch (e) {
      ctx.log.warn({ err: String(e) }, 'could not blocklist the dead rbd-fuse client; waiting for its watch to time out');
    }
    for (const end = Date.now() + 45_000; (left = await held()).length; await sleep(500)) {
      if (Date.now() > end) throw aborted('the dead rbd-fuse client of this node still holds the image; retry');
    }
  }

  /** The record of this node's clients after a heal: the new rbd-fuse's instance, not the dead one's. */
  private async rerecord(rbd: RbdApi, ref: ImageRef, before: string[] | undefined, ctx: RpcContext): Promise<void> {
    const others = [...clientsIn(await rbd.metaList(spec(ref), ref.image))].filter(([n]) => n !== this.nodeId).map(([, a]) => a);
    const addrs = ownInstances((await rbd.watchers(spec(ref), ref.image)) ?? [], before ?? [], others);
    if (!addrs.length) ctx.log.warn('the new rbd-fuse client does not show on the image; a fence can only take its unclaimed watchers');
    await rbd.metaSet(spec(ref), ref.image, clientKey(this.nodeId), asciiJson({ v: 1, addrs } satisfies ClientRecord));
  }

  async unstage(id: ObjectId, staging: string, ctx: RpcContext, staged?: csi.NodeStageVolumeRequest): Promise<void> {
    const ref = this.ref(id);
    // NodeUnstage carries no secrets: without a stage record (or a default identity) the cluster is not asked.
    let rbd: RbdApi | undefined;
    try {
      rbd = new LibRbd(this.clusters.conn(id.cluster, staged?.secrets), ctx.log);
    } catch (e) {
      ctx.log.debug({ err: String(e) }, 'no Ceph identity for this unstage: fencing state not checked');
    }
    if (rbd && (await this.fenced(rbd, ref, ctx))) {
      // A blocklisted rbd-fuse has nothing it could still flush, and some of its calls wait until its
      // entry expires: I/O through it would hold the loop device and the unmounts. It goes first.
      ctx.log.warn('this node was fenced from the volume: its rbd-fuse is stopped before the unmounts');
      await this.attacher.killFuse(ref, ctx.log);
    }
    const blockFile = path.join(staging, BLOCK_FILE);
    if (await findMount(blockFile)) await unmount(blockFile, ctx.log);
    await unmount(staging, ctx.log);
    // Looked at once nothing is mounted at the staging path: through a healed stack's dead layer it would fail.
    await removeMountPoint(blockFile);
    // Asked to unstage at a path where the volume is not staged: its device serves the stage elsewhere and stays.
    const device = await this.attacher.findDevice(ref, ctx.log);
    if (device && deviceInUse(device, await readMountInfo())) {
      ctx.log.warn({ device }, 'the volume is staged at another path on this node: its device is kept');
      return;
    }
    await this.attacher.detach(ref, ctx.log);
    // Only once the client is gone: a clean detach leaves the controller nothing to fence.
    // A record left by a failure here names a client that no longer exists; fencing it harms nothing.
    try {
      await rbd?.metaRemove(spec(ref), ref.image, clientKey(this.nodeId));
    } catch (e) {
      ctx.log.warn({ err: String(e) }, 'could not remove this node\'s client record; the controller may fence a client that is already gone');
    }
  }

  /**
   * Whether this node's client of the image was fenced: its record is gone and
   * no watcher that another node does not claim is left (a blocklisted client
   * loses its watch at once; a live one, even staged by a version that kept no
   * record, still has it). Unknown (cluster unreachable) counts as not fenced.
   */
  private async fenced(rbd: RbdApi, ref: ImageRef, ctx: RpcContext): Promise<boolean> {
    if (!(await this.attacher.fuseRunning(ref))) return false;
    try {
      const meta = await rbd.metaList(spec(ref), ref.image);
      if (meta[clientKey(this.nodeId)] !== undefined) return false;
      const others = [...clientsIn(meta)].filter(([n]) => n !== this.nodeId).map(([, a]) => a);
      return ownInstances((await rbd.watchers(spec(ref), ref.image)) ?? [], [], others).length === 0;
    } catch (e) {
      if (isErrno(e, ENOENT)) return true;
      ctx.log.warn({ err: String(e) }, 'could not tell whether this node was fenced; unstaging as usual');
      return false;
    }
  }

  /** Still this node's while the image holds its client record: fencing removes it, and so does a clean unstage. */
  async owned(id: ObjectId, staged: csi.NodeStageVolumeRequest, ctx: RpcContext): Promise<boolean> {
    const ref = this.ref(id);
    try {
      const meta = await new LibRbd(this.clusters.conn(id.cluster, staged.secrets), ctx.log).metaList(spec(ref), ref.image);
      return meta[clientKey(this.nodeId)] !== undefined;
    } catch (e) {
      if (isErrno(e, ENOENT)) return false;
      throw e;
    }
  }

  async expand(id: ObjectId, req: csi.NodeExpandVolumeRequest, ctx: RpcContext): Promise<number> {
    const device = await this.attacher.findDevice(this.ref(id), ctx.log);
    // The spec's code for a volume the node cannot find: any id of ours names some image, staged here or not.
    if (!device) throw notFound(`volume ${req.volume_id} is not staged on this node`);
    // A loop device keeps its old size until told to look again; kernel mappings update themselves.
    if (device.startsWith('/dev/loop')) await loopRefresh(device, ctx.log);
    // The CO may omit the capability; a published raw-block volume is a device node.
    const isBlock = !!req.volume_capability?.block || (await pathKind(req.volume_path)) === 'block';
    if (!isBlock) {
      const m = (await findMount(req.volume_path)) ?? (req.staging_target_path ? await findMount(req.staging_target_path) : undefined);
      if (!m) throw failedPrecondition(`${req.volume_path} is not mounted`);
      if (m.fsType !== 'fuse' && !m.fsType.startsWith('fuse.') && (await fsSmallerThanDevice(m.fsType, device, ctx.log))) await growFs(m.fsType, device, m.mountPoint, ctx.log);
    }
    return deviceSize(device, ctx.log);
  }
}

/** The image's pool and namespace as RbdApi takes them. */
const spec = (ref: ImageRef): string => poolSpec(ref.pool, ref.namespace);

/** Where a stage mounted the volume: the staging directory, or the device file in it for raw block. */
const stagedAt = (req: csi.NodeStageVolumeRequest): string => (req.volume_capability?.block ? path.join(req.staging_target_path, BLOCK_FILE) : req.staging_target_path);

/** The loop device under the topmost mount at `p`: a file system's source, or a device node bound there. */
function stagedDevice(p: string, entries: MountEntry[]): string | undefined {
  const target = path.resolve(p);
  const top = entries.filter((m) => m.mountPoint === target).at(-1);
  if (top?.source.startsWith('/dev/loop')) return top.source;
  return top && /^\/loop\d+$/.test(top.root) ? `/dev${top.root}` : undefined;
}

/**
 * What a stage may choose besides the image, which comes from the id alone:
 * the attach method and file system, from the volume context (the
 * StorageClass's choice) or the capability, each one of the known values.
 */
export function stageOptions(req: Pick<csi.NodeStageVolumeRequest, 'volume_context' | 'volume_capability'>): { mounter?: RbdMounter; fsType: FsType } {
  const vc = req.volume_context ?? {};
  const mounter = vc.mounter || undefined;
  if (mounter !== undefined && !MOUNTERS.includes(mounter as RbdMounter)) throw invalidArgument(`volume_context.mounter must be one of ${MOUNTERS.join(', ')}`);
  const fsType = req.volume_capability?.mount?.fs_type || vc.fsType || 'ext4';
  if (!FS_TYPES.includes(fsType as FsType)) throw invalidArgument(`file-system type ${JSON.stringify(fsType.slice(0, 32))} is not one of ${FS_TYPES.join(', ')}`);
  return { mounter: mounter as RbdMounter | undefined, fsType: fsType as FsType };
}

/**
 * Options for mounting a staged file system. xfs gets nouuid: a restore or
 * clone carries its source's file-system UUID, and xfs refuses to mount a
 * second file system with a UUID already mounted on the node. Read-only
 * stagings skip journal replay, which would write to the device.
 */
export function stageMountOptions(fs: string, readonly: boolean, flags: string[]): string[] {
  const opts = [...flags];
  if (fs === 'xfs' && !opts.includes('nouuid')) opts.push('nouuid');
  if (readonly) opts.push('ro', fs === 'xfs' ? 'norecovery' : 'noload');
  return opts;
}
