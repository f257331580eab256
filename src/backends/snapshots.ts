import type * as csi from '../csi/types.js';

/** The snapshot record backends keep beside their snapshots (image or subvolume-snapshot metadata). */
export interface SnapshotMeta {
  v: 1;
  name: string;
  source: string;
  size: number;
  createdAt: string;
}

/** Ceph snapshots are complete when taken (ready at once); S3 snapshots are ready once their copy is done. */
export function toSnapshot(snapshotId: string, m: Pick<SnapshotMeta, 'source' | 'size' | 'createdAt'>, ready = true): csi.Snapshot {
  const ms = Date.parse(m.createdAt);
  return {
    snapshot_id: snapshotId,
    source_volume_id: m.source,
    size_bytes: m.size,
    ready_to_use: ready,
    creation_time: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 },
  };
}
