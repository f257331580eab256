import type { RpcContext } from '../csi/handler.js';
import type { ObjectId } from '../csi/ids.js';
import type * as csi from '../csi/types.js';
import type { VolumeUsage } from '../csi/gen/csi/v1/VolumeUsage.js';

/**
 * What a storage backend implements. The gRPC layer (src/csi) validates the
 * generic shape of each request, resolves ids and dispatches here; backends
 * own everything storage specific and throw CsiErrors for the rest.
 */

/** Staged raw-block volumes are bound to this file inside the staging directory. */
export const STAGED_BLOCK_FILE = 'dev';

export interface PublishedVolume {
  volume: csi.Volume;
  publishedNodes: string[];
  abnormal?: string;
}

export interface Page<T> {
  items: T[];
  nextToken: string;
}

export interface ControllerBackend {
  createVolume(req: csi.CreateVolumeRequest, ctx: RpcContext): Promise<csi.Volume>;
  deleteVolume(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<void>;
  publish(id: ObjectId, req: csi.ControllerPublishVolumeRequest, ctx: RpcContext): Promise<Record<string, string>>;
  unpublish(id: ObjectId, nodeId: string, secrets: Record<string, string>, ctx: RpcContext): Promise<void>;
  /** Undefined when the volume does not exist. */
  getVolume(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<PublishedVolume | undefined>;
  /** Every volume id this backend holds on a cluster, sorted, for ListVolumes paging. */
  listVolumeIds(cluster: string, ctx: RpcContext): Promise<string[]>;
  validateCapabilities(caps: csi.VolumeCapability[]): string | undefined;
  getCapacity(cluster: string, params: Record<string, string>, ctx: RpcContext): Promise<number>;
  expand(id: ObjectId, req: csi.ControllerExpandVolumeRequest, ctx: RpcContext): Promise<csi.ControllerExpandVolumeResponse>;
  createSnapshot(sourceId: ObjectId, req: csi.CreateSnapshotRequest, ctx: RpcContext): Promise<csi.Snapshot>;
  deleteSnapshot(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<void>;
  /** Undefined when the snapshot does not exist. */
  getSnapshot(id: ObjectId, secrets: Record<string, string>, ctx: RpcContext): Promise<csi.Snapshot | undefined>;
  /** Snapshot ids, sorted; of one source volume when given. */
  listSnapshotIds(cluster: string, source: ObjectId | undefined, secrets: Record<string, string>, ctx: RpcContext): Promise<string[]>;
}

export interface NodeBackend {
  /** Whether its volumes can be used as raw block devices (only RBD's can; the others are file systems). */
  readonly rawBlock: boolean;
  /**
   * Whether the stage gives the volume_mount_group (a pod's fsGroup) to the mount as options (S3's
   * FUSE mounts: their files' owners are the daemon's to report). Otherwise publish walks the
   * volume and changes its group as kubelet would (src/mount/ownership.ts).
   */
  readonly mountGroupByOptions?: boolean;
  stage(id: ObjectId, req: csi.NodeStageVolumeRequest, ctx: RpcContext): Promise<void>;
  /** `staged` is the stage request the node recorded, when it has one (its secrets reach the store). */
  unstage(id: ObjectId, stagingPath: string, ctx: RpcContext, staged?: csi.NodeStageVolumeRequest): Promise<void>;
  /**
   * Backends that fence: whether a staged volume is still this node's. False
   * once the controller fenced the node or gave the volume to another: the
   * node then removes its mounts and never heals them.
   */
  owned?(id: ObjectId, staged: csi.NodeStageVolumeRequest, ctx: RpcContext): Promise<boolean>;
  /**
   * Backends whose kernel mount reads through a FUSE daemon (RBD: a loop
   * device over an rbd-fuse file): whether that daemon is gone, and staging
   * again on top of the dead mount, which stays mounted below the new one.
   */
  deadStage?(id: ObjectId, staged: csi.NodeStageVolumeRequest): Promise<boolean>;
  restage?(id: ObjectId, staged: csi.NodeStageVolumeRequest, ctx: RpcContext): Promise<void>;
  expand(id: ObjectId, req: csi.NodeExpandVolumeRequest, ctx: RpcContext): Promise<number>;
  /** Usage from the store itself, where the mount's own numbers mean nothing (S3); undefined: use statfs. */
  usage?(id: ObjectId, volumePath: string, ctx: RpcContext): Promise<VolumeUsage[] | undefined>;
}
