import type * as csi from '../csi/types.js';

/** The snapshot record backends keep beside their snapshots (image or subvolume-snapshot metadata). */
export interface SnapshotMeta {
  v: 1;
  name: string;
  source: string;
  size: number;
  createdAt: string;
}

/** Both Ceph backends' snapshots are complete when taken, so they are ready at once. */
export function toSnapshot(snapshotId: string, m: SnapshotMeta): csi.Snapshot {
  const ms = Date.parse(m.createdAt);
  return {
    snapshot_id: snapshotId,
    source_volume_id: m.source,
    size_bytes: m.size,
    ready_to_use: true,
    creation_time: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 },
  };
}
