import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathProblem } from '../mount/checks.js';
import type * as csi from '../csi/types.js';

/**
 * Which volume each staging path holds, and what the node needs to remount a
 * FUSE volume whose daemon died with the node plugin: the stage request as
 * kubelet sent it (secrets included, which kubelet never sends again; kept
 * for FUSE stages only) and the pod targets bound from it. One 0600 file per
 * staging path in the node's state directory; removed at NodeUnstage.
 * Node-local on purpose: a mount is a fact of this node only.
 */

export interface PublishedTarget {
  readonly: boolean;
  flags: string[];
}

export interface StageRecord {
  v: 1;
  request: csi.NodeStageVolumeRequest;
  targets: Record<string, PublishedTarget>;
  /** Not a FUSE mount (kernel, or a loop device's file system): it outlives the plugin; only a backend that stages it over a FUSE daemon (rbd-fuse) heals it. */
  kernel?: boolean;
}

/** A record the healer may act on: its paths are clean, as the RPCs that wrote it checked them to be. */
function read(file: string): StageRecord | undefined {
  try {
    const r = JSON.parse(readFileSync(file, 'utf8')) as StageRecord;
    if (r.v !== 1 || typeof r.request?.staging_target_path !== 'string' || pathProblem(r.request.staging_target_path)) return undefined;
    return Object.keys(r.targets ?? {}).some((t) => pathProblem(t)) ? undefined : r;
  } catch {
    return undefined;
  }
}

export class StageRecords {
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, 'staged');
  }

  private file(staging: string): string {
    return path.join(this.dir, `${createHash('sha256').update(path.resolve(staging)).digest('hex').slice(0, 32)}.json`);
  }

  private write(r: StageRecord): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const f = this.file(r.request.staging_target_path);
    // Written whole then renamed: a plugin killed mid-write leaves the old record, never half of one.
    writeFileSync(`${f}.tmp`, JSON.stringify(r), { mode: 0o600 });
    renameSync(`${f}.tmp`, f);
  }

  get(staging: string): StageRecord | undefined {
    return read(this.file(staging));
  }

  all(): StageRecord[] {
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((n) => n.endsWith('.json'));
    } catch {
      return [];
    }
    return names.map((n) => read(path.join(this.dir, n))).filter((r): r is StageRecord => !!r);
  }

  /** A new stage: any targets of an older record at this path are kept (kubelet may restage under live pods). */
  /** `keepSecrets`: the node will need the stage's credentials again (a FUSE remount, a fencing check). */
  staged(request: csi.NodeStageVolumeRequest, fuse: boolean, keepSecrets = fuse): void {
    const old = this.get(request.staging_target_path);
    const targets = old?.request.volume_id === request.volume_id ? old.targets : {};
    const kept = keepSecrets ? request : { ...request, secrets: {} };
    this.write(fuse ? { v: 1, request: kept, targets } : { v: 1, request: kept, targets, kernel: true });
  }

  published(volumeId: string, staging: string, target: string, t: PublishedTarget): void {
    const r = this.get(staging);
    if (!r || r.request.volume_id !== volumeId) return;
    r.targets[path.resolve(target)] = t;
    this.write(r);
  }

  unpublished(volumeId: string, target: string): void {
    const t = path.resolve(target);
    for (const r of this.all()) {
      if (r.request.volume_id !== volumeId || !(t in r.targets)) continue;
      delete r.targets[t];
      this.write(r);
    }
  }

  unstaged(staging: string): void {
    rmSync(this.file(staging), { force: true });
  }
}
