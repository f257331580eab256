import { mkdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { STAGED_BLOCK_FILE, type NodeBackend } from '../backends/types.js';
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from '../errors.js';
import { findMount, isReadOnly } from '../mount/mountinfo.js';
import { bindMount, deviceSize, fsUsage, mountHealth, pathKind, unmount } from '../mount/mounter.js';
import { isReadOnlyMode, modeOf, requireCapability } from './capabilities.js';
import type { NodeHandlers } from './gen/csi/v1/Node.js';
import type { VolumeUsage } from './gen/csi/v1/VolumeUsage.js';
import { wrap, type RpcRuntime } from './handler.js';
import { parseId, type Backend } from './ids.js';
import type { Healer } from './healer.js';
import type { StageRecords } from './stage-records.js';

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

function absolute(p: string, field: string): string {
  if (!path.isAbsolute(p) || p.split('/').includes('..')) throw invalidArgument(`${field} must be an absolute path without ".."`);
  return p;
}

/** A volume_path the CO says holds a volume: one that is not absolute cannot, so it is NOT_FOUND. */
function existingVolumePath(p: string): string {
  if (!path.isAbsolute(p) || p.split('/').includes('..')) throw notFound(`volume path ${p} does not exist`);
  return p;
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

  return {
    NodeStageVolume: wrap(
      rt,
      'NodeStageVolume',
      async (req, ctx) => {
        required(req.volume_id, 'volume_id');
        absolute(required(req.staging_target_path, 'staging_target_path'), 'staging_target_path');
        requireCapability(req.volume_capability);
        const { id, backend } = resolve(req.volume_id);
        const staging = req.staging_target_path;
        if ((await mountHealth(staging)) === 'dead') {
          ctx.log.warn('staging mount is dead (its FUSE daemon is gone): mounting it again');
          await unmount(staging, ctx.log);
        }
        await backend.stage(id, req, ctx);
        // Kernel mounts outlive the plugin; FUSE daemons may not, so keep what a remount needs.
        if ((await findMount(staging))?.fsType.startsWith('fuse')) records.staged(req);
        return {};
      },
      { lockKeys: byVolume },
    ),

    NodeUnstageVolume: wrap(
      rt,
      'NodeUnstageVolume',
      async (req, ctx) => {
        required(req.volume_id, 'volume_id');
        absolute(required(req.staging_target_path, 'staging_target_path'), 'staging_target_path');
        const id = parseId(req.volume_id, 'v');
        const backend = id && backends[id.backend];
        if (id && backend) await backend.unstage(id, req.staging_target_path, ctx);
        records.unstaged(req.staging_target_path);
        return {};
      },
      { lockKeys: byVolume },
    ),

    NodePublishVolume: wrap(
      rt,
      'NodePublishVolume',
      async (req, ctx) => {
        required(req.volume_id, 'volume_id');
        const target = absolute(required(req.target_path, 'target_path'), 'target_path');
        const staging = absolute(required(req.staging_target_path, 'staging_target_path'), 'staging_target_path');
        const cap = requireCapability(req.volume_capability);
        resolve(req.volume_id);
        const readonly = req.readonly || isReadOnlyMode(modeOf(cap));
        const source = cap.block ? path.join(staging, STAGED_BLOCK_FILE) : staging;
        const record = records.get(staging);
        if (record?.request.volume_id === req.volume_id) await healer.heal(record, ctx);
        if (!(await findMount(source))) throw failedPrecondition(`volume ${req.volume_id} is not staged at ${staging}`);
        if ((await mountHealth(target)) === 'dead') await unmount(target, ctx.log);
        const existing = await findMount(target);
        if (existing) {
          if (isReadOnly(existing) !== readonly) throw alreadyExists(`${target} is already published with a different read-only setting`);
          return {};
        }
        if (cap.block) {
          mkdirSync(path.dirname(target), { recursive: true });
          if ((await pathKind(target)) === 'missing') writeFileSync(target, '');
        } else {
          mkdirSync(target, { recursive: true });
        }
        await bindMount(source, target, readonly, cap.mount?.mount_flags ?? [], ctx.log);
        records.published(req.volume_id, staging, target, { readonly, flags: cap.mount?.mount_flags ?? [] });
        return {};
      },
      { lockKeys: (r) => [r.volume_id, `target:${r.target_path}`] },
    ),

    NodeUnpublishVolume: wrap(
      rt,
      'NodeUnpublishVolume',
      async (req, ctx) => {
        required(req.volume_id, 'volume_id');
        const target = absolute(required(req.target_path, 'target_path'), 'target_path');
        await unmount(target, ctx.log);
        records.unpublished(req.volume_id, target);
        // Never recursive: files under an unmounted target are not ours to delete.
        const kind = await pathKind(target);
        if (kind === 'dir') rmdirSync(target);
        else if (kind !== 'missing') rmSync(target, { force: true });
        return {};
      },
      { lockKeys: (r) => [r.volume_id, `target:${r.target_path}`] },
    ),

    NodeGetVolumeStats: wrap(rt, 'NodeGetVolumeStats', async (req, ctx) => {
      required(req.volume_id, 'volume_id');
      const p = existingVolumePath(required(req.volume_path, 'volume_path'));
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

    NodeExpandVolume: wrap(
      rt,
      'NodeExpandVolume',
      async (req, ctx) => {
        required(req.volume_id, 'volume_id');
        const p = existingVolumePath(required(req.volume_path, 'volume_path'));
        const { id, backend } = resolve(req.volume_id);
        if ((await pathKind(p)) === 'missing') throw notFound(`volume path ${p} does not exist`);
        return { capacity_bytes: await backend.expand(id, req, ctx) };
      },
      { lockKeys: byVolume },
    ),

    NodeGetCapabilities: wrap(rt, 'NodeGetCapabilities', async () => ({
      capabilities: (['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION'] as const).map((type) => ({ rpc: { type } })),
    })),

    NodeGetInfo: wrap(rt, 'NodeGetInfo', async () => ({
      node_id: me.nodeId,
      max_volumes_per_node: me.maxVolumes ?? 0,
      accessible_topology: me.topology ? { segments: me.topology } : null,
    })),
  };
}
