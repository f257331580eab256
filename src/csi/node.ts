import { lstatSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { STAGED_BLOCK_FILE, type NodeBackend } from '../backends/types.js';
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from '../errors.js';
import { pathProblem } from '../mount/checks.js';
import { findMount, isReadOnly } from '../mount/mountinfo.js';
import { bindMount, deviceSize, fsUsage, mountHealth, pathKind, removeMountPoint, unmount } from '../mount/mounter.js';
import { applyMountGroup } from '../mount/ownership.js';
import { isReadOnlyMode, modeOf, mountGroupOf, requireCapability, sizeFromRange } from './capabilities.js';
import type { NodeHandlers } from './gen/csi/v1/Node.js';
import type { VolumeUsage } from './gen/csi/v1/VolumeUsage.js';
import { wrap, wrapChecked, type RpcRuntime } from './handler.js';
import { parseId, type Backend } from './ids.js';
import type { Healer } from './healer.js';
import type { StageRecords } from './stage-records.js';
import type * as csi from './types.js';

/**
 * The Node service. Staging is backend specific; publishing is the same for
 * every backend (a bind mount of the staged file system, or of the staged
 * device file for raw block), as are stats and path checks.
 */

export type NodeBackends = Partial<Record<Backend, NodeBackend>>;

export interface NodeIdentity {
  nodeId: string;
  topology?: Record<string, string>;
  maxVolumes?: number;
}


const required = (v: string | undefined, field: string): string => {
  if (!v) throw invalidArgument(`${field} is required`);
  return v;
};

/** A path the node will mount on or remove: exactly the one the CO named, or INVALID_ARGUMENT. */
function cleanPath(p: string, field: string): string {
  const why = pathProblem(p);
  if (why) throw invalidArgument(`${field} ${JSON.stringify(p.slice(0, 256))} ${why}`);
  return p;
}

/** A volume_path the CO says holds a volume: one that is not a clean absolute path cannot, so it is NOT_FOUND. */
function existingVolumePath(p: string): string {
  if (pathProblem(p)) throw notFound(`volume path ${JSON.stringify(p.slice(0, 256))} does not exist`);
  return p;
}

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

/** Remembering FUSE stages and healing them (see healer.ts). */
export interface NodeHealing {
  records: StageRecords;
  healer: Healer;
}

export function nodeService(rt: RpcRuntime, backends: NodeBackends, me: NodeIdentity, healing: NodeHealing): NodeHandlers {
  const { records, healer } = healing;
  const byVolume = <R extends { volume_id: string }>(r: R) => [r.volume_id];
  const resolve = (volumeId: string) => {
    const id = parseId(volumeId, 'v');
    const backend = id && backends[id.backend];
    if (!id || !backend) throw notFound(`volume ${volumeId} not found`);
    return { id, backend };
  };

  /** What every volume RPC checks first: the id must be one of ours, and the capability one its backend serves. */
  const volumeOf = (volumeId: string | undefined, cap?: csi.VolumeCapability | null) => {
    const { id, backend } = resolve(required(volumeId, 'volume_id'));
    if (cap?.block && !backend.rawBlock) throw invalidArgument(`${id.backend} volumes are file systems: raw block access is not available`);
    return { id, backend };
  };

  /** The staging path of a stage or unstage, checked after the volume id is known to be there. */
  const stagingOf = (req: { volume_id: string; staging_target_path: string }) => {
    required(req.volume_id, 'volume_id');
    return cleanPath(required(req.staging_target_path, 'staging_target_path'), 'staging_target_path');
  };

  /** The volume a staging path's record names when it is another than `volumeId`: that path is not this request's to use. */
  const otherVolumeAt = (staging: string, volumeId: string) => {
    const held = records.get(staging)?.request.volume_id;
    return held !== undefined && held !== volumeId ? held : undefined;
  };

  return {
    NodeStageVolume: wrapChecked(
      rt,
      'NodeStageVolume',
      {
        check: (req) => {
          const staging = stagingOf(req);
          const cap = requireCapability(req.volume_capability);
          return { ...volumeOf(req.volume_id, cap), staging };
        },
        lockKeys: byVolume,
      },
      async (req, ctx, { id, backend, staging }) => {
        const other = otherVolumeAt(staging, req.volume_id);
        if (other && (await findMount(staging))) throw failedPrecondition(`staging_target_path ${staging} holds volume ${other}`);
        const health = await mountHealth(staging);
        if (health === 'dead') {
          ctx.log.warn('staging mount is dead (its FUSE daemon is gone): mounting it again');
          await unmount(staging, ctx.log);
        }
        // Looked at only when nothing is mounted there: a stat of a stuck FUSE mount would never return.
        if (health === 'dead' || health === 'unmounted') requireMountPoint(staging, 'staging_target_path', 'dir');
        await backend.stage(id, req, ctx);
        // Every stage is recorded, so publish can tell which volume a staging path holds. A FUSE stage
        // keeps its secrets (its daemon may die with the plugin, and kubelet never sends them again), as
        // does a stage of a fencing backend (unstage and the healer ask the cluster whether it is still ours).
        const fuse = !!(await findMount(staging))?.fsType.startsWith('fuse');
        records.staged(req, fuse, fuse || !!backend.owned);
        return {};
      },
    ),

    NodeUnstageVolume: wrapChecked(
      rt,
      'NodeUnstageVolume',
      {
        // An id that cannot be ours was never staged by this node: nothing on disk is touched for it.
        check: (req) => ({ staging: stagingOf(req), ...volumeOf(req.volume_id) }),
        lockKeys: byVolume,
      },
      async (req, ctx, { id, backend, staging }) => {
        const record = records.get(staging)?.request;
        if (record && record.volume_id !== req.volume_id) throw failedPrecondition(`staging_target_path ${staging} holds volume ${record.volume_id}, not ${req.volume_id}`);
        await backend.unstage(id, staging, ctx, record);
        records.unstaged(staging);
        return {};
      },
    ),

    NodePublishVolume: wrapChecked(
      rt,
      'NodePublishVolume',
      {
        check: (req) => {
          required(req.volume_id, 'volume_id');
          const target = cleanPath(required(req.target_path, 'target_path'), 'target_path');
          const staging = cleanPath(required(req.staging_target_path, 'staging_target_path'), 'staging_target_path');
          const cap = requireCapability(req.volume_capability);
          const { backend } = volumeOf(req.volume_id, cap);
          return { target, staging, cap, backend };
        },
        lockKeys: (r) => [r.volume_id, `target:${r.target_path}`],
      },
      async (req, ctx, { target, staging, cap, backend }) => {
        const readonly = req.readonly || isReadOnlyMode(modeOf(cap));
        const source = cap.block ? path.join(staging, STAGED_BLOCK_FILE) : staging;
        // The stage record says which volume the staging path holds: a mount there alone could be anyone's.
        const record = records.get(staging);
        if (record?.request.volume_id !== req.volume_id) throw failedPrecondition(`volume ${req.volume_id} is not staged at ${staging}`);
        if (!record.kernel) await healer.heal(record, ctx);
        if (!(await findMount(source))) throw failedPrecondition(`volume ${req.volume_id} is not staged at ${staging}${cap.block ? ' as a raw block device' : ''}`);
        if ((await mountHealth(target)) === 'dead') await unmount(target, ctx.log);
        const existing = await findMount(target);
        if (existing) {
          if (isReadOnly(existing) !== readonly) throw alreadyExists(`${target} is already published with a different read-only setting`);
          return {};
        }
        requireMountPoint(target, 'target_path', cap.block ? 'file' : 'dir');
        if (cap.block) {
          mkdirSync(path.dirname(target), { recursive: true });
          // Never truncates: a file already there keeps its bytes (and is not removed at unpublish).
          writeFileSync(target, '', { flag: 'a' });
        } else {
          mkdirSync(target, { recursive: true });
        }
        // The pod's fsGroup (kubelet delegates it, VOLUME_MOUNT_GROUP), on the staged volume before
        // the bind: a publish cut short is not taken for done, and its retry walks again.
        const group = mountGroupOf(cap);
        if (group !== undefined && !readonly && !cap.block && !backend.mountGroupByOptions) await applyMountGroup(source, group, ctx.log);
        await bindMount(source, target, readonly, cap.mount?.mount_flags ?? [], ctx.log);
        records.published(req.volume_id, staging, target, { readonly, flags: cap.mount?.mount_flags ?? [] });
        return {};
      },
    ),

    NodeUnpublishVolume: wrapChecked(
      rt,
      'NodeUnpublishVolume',
      {
        check: (req) => {
          required(req.volume_id, 'volume_id');
          const target = cleanPath(required(req.target_path, 'target_path'), 'target_path');
          // An id that cannot be ours was never published by this node: nothing on disk is touched for it.
          volumeOf(req.volume_id);
          return target;
        },
        lockKeys: (r) => [r.volume_id, `target:${r.target_path}`],
      },
      async (req, ctx, target) => {
        await unmount(target, ctx.log);
        records.unpublished(req.volume_id, target);
        // Only the mount point publish made (an empty directory or file) goes; content is never ours to delete.
        if ((await removeMountPoint(target)) === 'kept') ctx.log.warn({ target }, 'target_path holds something the node did not make: left in place');
        return {};
      },
    ),

    NodeGetVolumeStats: wrap(rt, 'NodeGetVolumeStats', async (req, ctx) => {
      required(req.volume_id, 'volume_id');
      const p = existingVolumePath(required(req.volume_path, 'volume_path'));
      // An id that cannot be ours has no volume at any path: its stats are nobody's.
      resolve(req.volume_id);
      // Probed before anything else touches the path: a stuck FUSE daemon would hang this call past kubelet's deadline.
      const health = await mountHealth(p);
      if (health === 'dead' || health === 'hung') {
        return { usage: [], volume_condition: { abnormal: true, message: `${p} does not answer: ${health === 'dead' ? 'its FUSE daemon is gone (ENOTCONN); the node remounts it' : 'no answer in 5 s'}` } };
      }
      const kind = await pathKind(p);
      if (kind === 'missing') throw notFound(`volume path ${p} does not exist`);
      if (health === 'unmounted') return { usage: [], volume_condition: { abnormal: true, message: `${p} is not mounted` } };
      try {
        const t = parseId(req.volume_id, 'v');
        const fromStore = t && (await backends[t.backend]?.usage?.(t, p, ctx));
        if (fromStore) return { usage: fromStore, volume_condition: { abnormal: false, message: 'volume is mounted; usage is read from the store' } };
        if (kind === 'file' || kind === 'block') {
          const total = await deviceSize(p, ctx.log);
          return { usage: [{ unit: 'BYTES', total }], volume_condition: { abnormal: false, message: 'device is attached' } };
        }
        const u = await fsUsage(p);
        const usage: VolumeUsage[] = [
          { unit: 'BYTES', total: u.bytesTotal, used: u.bytesUsed, available: u.bytesAvailable },
          { unit: 'INODES', total: u.inodesTotal, used: u.inodesUsed, available: u.inodesFree },
        ];
        return { usage, volume_condition: { abnormal: false, message: 'file system is mounted and answers' } };
      } catch (e) {
        // A FUSE daemon that died leaves ENOTCONN; a failed device gives EIO.
        return { usage: [], volume_condition: { abnormal: true, message: `${p} does not answer: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` } };
      }
    }),

    NodeExpandVolume: wrapChecked(
      rt,
      'NodeExpandVolume',
      {
        check: (req) => {
          required(req.volume_id, 'volume_id');
          const p = existingVolumePath(required(req.volume_path, 'volume_path'));
          if (req.staging_target_path) cleanPath(req.staging_target_path, 'staging_target_path');
          if (req.capacity_range) sizeFromRange(req.capacity_range, 0, 1);
          if (req.volume_capability) requireCapability(req.volume_capability);
          return { ...resolve(req.volume_id), p };
        },
        lockKeys: byVolume,
      },
      async (req, ctx, { id, backend, p }) => {
        if ((await pathKind(p)) === 'missing') throw notFound(`volume path ${p} does not exist`);
        return { capacity_bytes: await backend.expand(id, req, ctx) };
      },
    ),

    NodeGetCapabilities: wrap(rt, 'NodeGetCapabilities', async () => ({
      capabilities: (['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION', 'VOLUME_MOUNT_GROUP'] as const).map((type) => ({ rpc: { type } })),
    })),

    NodeGetInfo: wrap(rt, 'NodeGetInfo', async () => ({
      node_id: me.nodeId,
      max_volumes_per_node: me.maxVolumes ?? 0,
      accessible_topology: me.topology ? { segments: me.topology } : null,
    })),
  };
}
