/** Short names for the generated message types the handlers use (decoded "__Output" forms for requests). */
export type { CreateVolumeRequest__Output as CreateVolumeRequest } from './gen/csi/v1/CreateVolumeRequest.js';
export type { Volume } from './gen/csi/v1/Volume.js';
export type { VolumeCapability__Output as VolumeCapability } from './gen/csi/v1/VolumeCapability.js';
export type { ControllerPublishVolumeRequest__Output as ControllerPublishVolumeRequest } from './gen/csi/v1/ControllerPublishVolumeRequest.js';
export type { ControllerExpandVolumeRequest__Output as ControllerExpandVolumeRequest } from './gen/csi/v1/ControllerExpandVolumeRequest.js';
export type { ControllerExpandVolumeResponse } from './gen/csi/v1/ControllerExpandVolumeResponse.js';
export type { CreateSnapshotRequest__Output as CreateSnapshotRequest } from './gen/csi/v1/CreateSnapshotRequest.js';
export type { Snapshot } from './gen/csi/v1/Snapshot.js';
export type { NodeStageVolumeRequest__Output as NodeStageVolumeRequest } from './gen/csi/v1/NodeStageVolumeRequest.js';
export type { NodeExpandVolumeRequest__Output as NodeExpandVolumeRequest } from './gen/csi/v1/NodeExpandVolumeRequest.js';
export type { NodePublishVolumeRequest__Output as NodePublishVolumeRequest } from './gen/csi/v1/NodePublishVolumeRequest.js';
export type { VolumeContentSource__Output as VolumeContentSource } from './gen/csi/v1/VolumeContentSource.js';
export type { VolumeUsage } from './gen/csi/v1/VolumeUsage.js';
