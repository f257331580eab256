import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { CsiClients } from './driver.js';
import type { VolumeCapability } from '../../src/csi/gen/csi/v1/VolumeCapability.js';
import type { Volume } from '../../src/csi/gen/csi/v1/Volume.js';

/** Small helpers that walk a volume through the CSI calls a CO makes. */

export const MiB = 1024 * 1024;

export type MountMode = 'SINGLE_NODE_WRITER' | 'MULTI_NODE_READER_ONLY' | 'SINGLE_NODE_READER_ONLY' | 'MULTI_NODE_MULTI_WRITER';

export function mountCap(fsType = '', mode: MountMode = 'SINGLE_NODE_WRITER'): VolumeCapability {
  return { mount: { fs_type: fsType, mount_flags: [] }, access_mode: { mode } };
}

export function blockCap(mode: 'SINGLE_NODE_WRITER' | 'MULTI_NODE_MULTI_WRITER' = 'SINGLE_NODE_WRITER'): VolumeCapability {
  return { block: {}, access_mode: { mode } };
}

export interface Attached {
  staging: string;
  target: string;
}

/** ControllerPublish, NodeStage, NodePublish: what kubelet and the attacher do before a pod starts. `context` is the publish context the node got. */
export async function attach(c: CsiClients, volume: string | Volume, nodeId: string, dir: string, cap: VolumeCapability, secrets: Record<string, string>, readonly = false): Promise<Attached & { context: Record<string, string> }> {
  const staging = path.join(dir, 'staging');
  const target = path.join(dir, 'target');
  mkdirSync(staging, { recursive: true });
  // kubelet passes the volume context CreateVolume returned (it lives in the PV).
  const volumeId = typeof volume === 'string' ? volume : volume.volume_id!;
  const volume_context = typeof volume === 'string' ? {} : (volume.volume_context ?? {});
  const pub = await c.controller.ControllerPublishVolume({ volume_id: volumeId, node_id: nodeId, volume_capability: cap, readonly, secrets, volume_context });
  await c.node.NodeStageVolume({ volume_id: volumeId, staging_target_path: staging, volume_capability: cap, secrets, publish_context: pub!.publish_context, volume_context });
  await c.node.NodePublishVolume({ volume_id: volumeId, staging_target_path: staging, target_path: target, volume_capability: cap, readonly, volume_context, publish_context: pub!.publish_context });
  return { staging, target, context: pub!.publish_context ?? {} };
}

/** The reverse, as when the pod goes away. */
export async function detach(c: CsiClients, volumeId: string, nodeId: string, a: Attached, secrets: Record<string, string>): Promise<void> {
  await c.node.NodeUnpublishVolume({ volume_id: volumeId, target_path: a.target });
  await c.node.NodeUnstageVolume({ volume_id: volumeId, staging_target_path: a.staging });
  await c.controller.ControllerUnpublishVolume({ volume_id: volumeId, node_id: nodeId, secrets });
}

/** Writes random bytes, fsyncs them, and returns their sha256. */
export function writeRandom(file: string, bytes: number, offset = 0): string {
  const data = randomBytes(bytes);
  const fd = openSync(file, file.startsWith('/dev/') ? 'r+' : 'w');
  try {
    writeSync(fd, data, 0, data.length, offset);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return sha256(data);
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

export function fileSha(file: string): string {
  return sha256(readFileSync(file));
}

export function readRange(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const n = readSync(fd, buf, got, length - got, offset + got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}
