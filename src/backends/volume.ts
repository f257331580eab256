import type * as csi from '../csi/types.js';

/** Where a volume's content came from, as the backends record it. */
export interface VolumeSource {
  snapshot?: string;
  volume?: string;
}

/** The CSI Volume every backend returns: its context, content source and the cluster's topology. */
export function toCsiVolume(id: string, size: number, context: Record<string, string>, source: VolumeSource | undefined, topology: Record<string, string> | undefined): csi.Volume {
  const vol: csi.Volume = { volume_id: id, capacity_bytes: size, volume_context: context };
  if (source?.snapshot) vol.content_source = { snapshot: { snapshot_id: source.snapshot } };
  else if (source?.volume) vol.content_source = { volume: { volume_id: source.volume } };
  if (topology) vol.accessible_topology = [{ segments: topology }];
  return vol;
}
