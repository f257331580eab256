import { lstatSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { STAGED_BLOCK_FILE, type NodeBackend } from '../backends/types.js';
import type { RpcContext } from '../csi/handler.js';
import type { ObjectId } from '../csi/ids.js';
import type * as csi from '../csi/types.js';
import { alreadyExists, failedPrecondition, notFound } from '../errors.js';
import { findMount, isReadOnly } from '../mount/mountinfo.js';
import { bindMount, deviceSize, fsUsage, mountHealth, pathKind, removeMountPoint, unmount } from '../mount/mounter.js';
import { applyMountGroup } from '../mount/ownership.js';
import type { Healer } from './healer.js';
import type { StageRecords } from './stage-records.js';

/**
 * What the node does with a volume once the gRPC adapter has checked the
 * request: stage and unstage through the volume's backend, publish and
 * unpublish (a bind mount of the staged file system, or of the staged device
 * file for raw block, the same for every backend), and report usage. Every
 * stage is recorded, so the node knows which volume each staging path holds.
 */

/** What sits at `p` before the node mounts on it: nothing, or (a directory | a file) the node may use. */
function mountPointKind(p: string): 'missing' | 'dir' | 'file' | 'other' {
  try {
    const s = lstatSync(p);
    return s.isDirectory() ? 'dir' : s.isFile() ? 'file' : 'other';
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw e;
  }
}

/** A mount point must be what the access type needs; a symlink would move the mount elsewhere. */
function requireMountPoint(p: string, field: string, want: 'dir' | 'file'): void {
  const kind = mountPointKind(p);
  if (kind !== 'missing' && kind !== want) throw failedPrecondition(`${field} ${p} exists and is not a ${want === 'dir' ? 'directory' : 'regular file'}`);
}

export interface PublishRequest {
  volumeId: string;
  staging: string;
  target: string;
  capability: csi.VolumeCapability;
  readonly: boolean;
  /** A pod's fsGroup to give the volume's files (as kubelet would); undefined when none is asked or the mount took it. */
  group?: number;
}

export interface VolumeStats {
  usage: csi.VolumeUsage[];
  condition: { abnormal: boolean; message: string };
}

export class NodeVolumes {
  constructor(
    private readonly records: StageRecords,
    private readonly healer: Healer,
  ) {}

  /** The volume another stage left at `staging`, when it is another than `volumeId`. */
  otherVolumeAt(staging: string, volumeId: string): string | undefined {
    const held = this.records.get(staging)?.request.volume_id;
    return held !== undefined && held !== volumeId ? held : undefined;
  }

  async stage(id: ObjectId, backend: NodeBackend, req: csi.NodeStageVolumeRequest, ctx: RpcContext): Promise<void> {
    const staging = req.staging_target_path;
    const other = this.otherVolumeAt(staging, req.volume_id);
    if (other && (await findMount(staging))) throw failedPrecondition(`staging_target_path ${staging} holds volume ${other}`);
    const health = await mountHealth(staging);
    if (health === 'dead') {
      ctx.log.warn('staging mount is dead (its FUSE daemon is gone): mounting it again');
      await unmount(staging, ctx.log);
    }
    // Looked at only when nothing is mounted there: a stat of a stuck FUSE mount would never return.
    if (health === 'dead' || health === 'unmounted') requireMountPoint(staging, 'staging_target_path', 'dir');
    await backend.stage(id, req, ctx);
    // A FUSE stage keeps its secrets (its daemon may die with the plugin, and kubelet never sends them
    // again), as does a stage of a fencing backend (unstage and the healer ask the cluster whether it is still ours).
    const fuse = !!(await findMount(staging))?.fsType.startsWith('fuse');
    this.records.staged(req, fuse, fuse || !!backend.owned);
  }

  async unstage(id: ObjectId, backend: NodeBackend, volumeId: string, staging: string, ctx: RpcContext): Promise<void> {
    const record = this.records.get(staging)?.request;
    if (record && record.volume_id !== volumeId) throw failedPrecondition(`staging_target_path ${staging} holds volume ${record.volume_id}, not ${volumeId}`);
    await backend.unstage(id, staging, ctx, record);
    this.records.unstaged(staging);
  }

  async publish(p: PublishRequest, ctx: RpcContext): Promise<void> {
    const { volumeId, staging, target, capability: cap, readonly } = p;
    const source = cap.block ? path.join(staging, STAGED_BLOCK_FILE) : staging;
    // The stage record says which volume the staging path holds: a mount there alone could be anyone's.
    const record = this.records.get(staging);
    if (record?.request.volume_id !== volumeId) throw failedPrecondition(`volume ${volumeId} is not staged at ${staging}`);
    await this.healer.heal(record, ctx);
    if (!(await findMount(source))) throw failedPrecondition(`volume ${volumeId} is not staged at ${staging}${cap.block ? ' as a raw block device' : ''}`);
    if ((await mountHealth(target)) === 'dead') await unmount(target, ctx.log);
    const existing = await findMount(target);
    if (existing) {
      if (isReadOnly(existing) !== readonly) throw alreadyExists(`${target} is already published with a different read-only setting`);
      return;
    }
    requireMountPoint(target, 'target_path', cap.block ? 'file' : 'dir');
    if (cap.block) {
      mkdirSync(path.dirname(target), { recursive: true });
      // Never truncates: a file already there keeps its bytes (and is not removed at unpublish).
      writeFileSync(target, '', { flag: 'a' });
    } else {
      mkdirSync(target, { recursive: true });
    }
    // Before the bind: a publish cut short is not taken for done, and its retry walks again.
    // Read-only publishes are left as they are, as kubelet leaves them.
    if (p.group !== undefined && !readonly && !cap.block) await applyMountGroup(source, p.group, ctx.log);
    const flags = cap.mount?.mount_flags ?? [];
    await bindMount(source, target, readonly, flags, ctx.log);
    this.records.published(volumeId, staging, target, { readonly, flags });
  }

  async unpublish(volumeId: string, target: string, ctx: RpcContext): Promise<void> {
    await unmount(target, ctx.log);
    this.records.unpublished(volumeId, target);
    // Only the mount point publish made (an empty directory or file) goes; content is never ours to delete.
    if ((await removeMountPoint(target)) === 'kept') ctx.log.warn({ target }, 'target_path holds something the node did not make: left in place');
  }

  /**
   * Every stage is recorded, so a volume no record names is not on this node: NOT_FOUND for its
   * stats and expansion, also for a well-formed id of no volume at all (whatever is mounted at the
   * path the call names). NodePublish of such a volume stays FAILED_PRECONDITION: stage first.
   */
  requireStaged(volumeId: string): void {
    if (!this.records.all().some((r) => r.request.volume_id === volumeId)) throw notFound(`volume ${volumeId} is not staged on this node`);
  }

  /** Usage of a published or staged volume at `p`, and whether it answers; NOT_FOUND when nothing is there. */
  async stats(id: ObjectId, backend: NodeBackend | undefined, p: string, ctx: RpcContext): Promise<VolumeStats> {
    // Probed before anything else touches the path: a stuck FUSE daemon would hang this call past kubelet's deadline.
    const health = await mountHealth(p);
    if (health === 'dead' || health === 'hung') {
      return { usage: [], condition: { abnormal: true, message: `${p} does not answer: ${health === 'dead' ? 'its FUSE daemon is gone (ENOTCONN); the node remounts it' : 'no answer in 5 s'}` } };
    }
    const kind = await pathKind(p);
    if (kind === 'missing') throw notFound(`volume path ${p} does not exist`);
    if (health === 'unmounted') return { usage: [], condition: { abnormal: true, message: `${p} is not mounted` } };
    try {
      const fromStore = await backend?.usage?.(id, p, ctx);
      if (fromStore) return { usage: fromStore, condition: { abnormal: false, message: 'volume is mounted; usage is read from the store' } };
      if (kind === 'file' || kind === 'block') {
        const total = await deviceSize(p, ctx.log);
        return { usage: [{ unit: 'BYTES', total }], condition: { abnormal: false, message: 'device is attached' } };
      }
      const u = await fsUsage(p);
      return {
        usage: [
          { unit: 'BYTES', total: u.bytesTotal, used: u.bytesUsed, available: u.bytesAvailable },
          { unit: 'INODES', total: u.inodesTotal, used: u.inodesUsed, available: u.inodesFree },
        ],
        condition: { abnormal: false, message: 'file system is mounted and answers' },
      };
    } catch (e) {
      // A FUSE daemon that died leaves ENOTCONN; a failed device gives EIO.
      return { usage: [], condition: { abnormal: true, message: `${p} does not answer: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` } };
    }
  }
}
