import type { NodeBackend } from '../backends/types.js';
import { invalidArgument, notFound } from '../errors.js';
import { pathProblem } from '../mount/checks.js';
import { pathKind } from '../mount/mounter.js';
import type { NodeVolumes } from '../node/volumes.js';
import { isReadOnlyMode, modeOf, mountGroupOf, requireCapability, sizeFromRange } from './capabilities.js';
import type { NodeHandlers } from './gen/csi/v1/Node.js';
import { wrap, wrapChecked, type RpcRuntime } from './handler.js';
import { parseId, type Backend } from './ids.js';
import type * as csi from './types.js';

/**
 * The Node service: each RPC's request checked (ids, paths, capabilities),
 * its lock taken, and the work handed to the node's volumes (src/node/).
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

export function nodeService(rt: RpcRuntime, backends: NodeBackends, me: NodeIdentity, volumes: NodeVolumes): NodeHandlers {
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
      async (req, ctx, { id, backend }) => {
        await volumes.stage(id, backend, req, ctx);
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
        await volumes.unstage(id, backend, req.volume_id, staging, ctx);
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
          // The pod's fsGroup (VOLUME_MOUNT_GROUP): S3 mounts took it at stage, the others are walked.
          return { target, staging, cap, group: backend.mountGroupByOptions ? undefined : mountGroupOf(cap) };
        },
        lockKeys: (r) => [r.volume_id, `target:${r.target_path}`],
      },
      async (req, ctx, { target, staging, cap, group }) => {
        await volumes.publish({ volumeId: req.volume_id, staging, target, capability: cap, readonly: req.readonly || isReadOnlyMode(modeOf(cap)), group }, ctx);
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
        await volumes.unpublish(req.volume_id, target, ctx);
        return {};
      },
    ),

    NodeGetVolumeStats: wrap(rt, 'NodeGetVolumeStats', async (req, ctx) => {
      required(req.volume_id, 'volume_id');
      const p = existingVolumePath(required(req.volume_path, 'volume_path'));
      // An id that cannot be ours has no volume at any path: its stats are nobody's.
      const { id, backend } = resolve(req.volume_id);
      volumes.requireStaged(req.volume_id);
      const { usage, condition } = await volumes.stats(id, backend, p, ctx);
      return { usage, volume_condition: condition };
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
        volumes.requireStaged(req.volume_id);
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
