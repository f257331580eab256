import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../../config/config.js';
import { findCluster } from '../../config/config.js';
import { isReadOnlyMode, modeOf, mountGroupOf } from '../../csi/capabilities.js';
import type { VolumeUsage } from '../../csi/gen/csi/v1/VolumeUsage.js';
import type { RpcContext } from '../../csi/handler.js';
import { encodeId, type ObjectId } from '../../csi/ids.js';
import type * as csi from '../../csi/types.js';
import { failedPrecondition, internal, invalidArgument, isCsiError, notFound } from '../../errors.js';
import { fuseDaemonPid, unmountFuse, waitExit } from '../../mount/fuse-process.js';
import { findMount } from '../../mount/mountinfo.js';
import { ExecError, run } from '../../util/exec.js';
import type { NodeBackend } from '../types.js';
import type { VolumeRecord } from './controller.js';
import { resolveS3Credentials, s3Of, S3Stores } from './credentials.js';
import { bucketOf, dataPrefix, locationOf, recordKey, type Location } from './layout.js';
import { rcloneCommand, s3fsCommand, type S3MountSpec } from './mount-commands.js';
import { parseS3Params, type S3Params } from './params.js';
import type { S3Credentials } from './store.js';

/**
 * Node side of S3: one FUSE mount (s3fs or rclone) of the volume's prefix per
 * node at the staging path, published into pods by bind mounts. On Ceph RGW
 * the node mounts with its own key on the volume's user, from the publish
 * context (see volume-keys.ts); elsewhere with the node-stage secret or the
 * config's keys. The keys sit
 * in a 0600 file in the state directory for as long as the volume is staged
 * (s3fs reads it; stats use it), never in a command line.
 */

// Usage comes from listing the volume's objects: at most once per interval per volume.
const USAGE_REFRESH_MS = 30_000;

interface UsageEntry {
  at: number;
  value: Promise<VolumeUsage[]>;
}

export class S3Node implements NodeBackend {
  readonly rawBlock = false;
  readonly mountGroupByOptions = true;
  private readonly stores = new S3Stores();
  private readonly usageCache = new Map<string, UsageEntry>();
  private readonly dir: string;

  constructor(
    private readonly cfg: Config,
    stateDir: string,
  ) {
    this.dir = path.join(stateDir, 's3');
  }

  private keyFile(volumeId: string): string {
    return path.join(this.dir, `${createHash('sha256').update(volumeId).digest('hex').slice(0, 32)}.passwd`);
  }

  async stage(id: ObjectId, req: csi.NodeStageVolumeRequest, ctx: RpcContext): Promise<void> {
    const staging = req.staging_target_path;
    const l = this.location(id);
    const opts = stageOptions(id, l, req);
    if (await findMount(staging)) return;
    const s3 = s3Of(findCluster(this.cfg, id.cluster), id.cluster);
    const creds = resolveS3Credentials(s3, nodeKey(req) ?? req.secrets);
    // A made-up id in a shared bucket would mount an empty prefix: only a volume with a record is staged.
    if (!(await this.stores.get(s3, creds).getJson<VolumeRecord>(bucketOf(l), recordKey(l)))) throw notFound(`volume ${req.volume_id} not found`);
    const keyFile = this.keyFile(req.volume_id);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    writeFileSync(keyFile, `${creds.accessKeyID}:${creds.secretAccessKey}\n`, { mode: 0o600 });
    const mounter = opts.mounter;
    const spec: S3MountSpec = {
      mounter,
      endpoint: s3.endpoint,
      region: s3.region,
      bucket: bucketOf(l),
      prefix: dataPrefix(l),
      target: staging,
      readonly: isReadOnlyMode(modeOf(req.volume_capability)),
      uid: opts.uid,
      gid: opts.gid,
      mode: opts.mode,
      options: opts.mountOptions,
    };
    mkdirSync(staging, { recursive: true });
    try {
      if (mounter === 's3fs') {
        const [file, args] = s3fsCommand(spec, keyFile);
        await run(file, args, { timeoutMs: 30_000, log: ctx.log });
      } else {
        const [file, args, env] = rcloneCommand(spec);
        const secretEnv = { RCLONE_S3_ACCESS_KEY_ID: creds.accessKeyID, RCLONE_S3_SECRET_ACCESS_KEY: creds.secretAccessKey };
        // A CA bundle in the environment makes rclone 1.60 refuse to start (LoadCustomCABundleError).
        await run(file, args, { timeoutMs: 30_000, log: ctx.log, env: { ...env, ...secretEnv }, unsetEnv: ['AWS_CA_BUNDLE', 'RCLONE_CONFIG'] });
      }
    } catch (e) {
      rmSync(keyFile, { force: true });
      const why = e instanceof ExecError ? /(AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|NoSuchBucket|403 Forbidden|invalid credentials|does not exist)[^\n]*/i.exec(e.stderr) : null;
      if (why) throw failedPrecondition(`S3 refused the mount of ${spec.bucket}/${spec.prefix}: ${why[0]}`);
      throw e;
    }
    if (!(await findMount(staging))) throw internal(`${mounter} returned but ${staging} is not mounted`);
  }

  private location(id: ObjectId): Location {
    const l = locationOf(id);
    if (!l) throw notFound(`volume ${encodeId(id)} not found`);
    return l;
  }

  async unstage(id: ObjectId, staging: string, ctx: RpcContext, staged?: csi.NodeStageVolumeRequest): Promise<void> {
    this.location(id);
    const pid = fuseDaemonPid(['s3fs', 'rclone'], staging);
    if (pid && staged && !(await this.owned(id, staged, ctx))) {
      // Fenced: RGW refuses its key, so it has nothing it could still upload, and it would retry for a while.
      ctx.log.warn({ pid }, 'this node was fenced from the volume: its S3 mount daemon is stopped before the unmount');
      process.kill(pid, 'SIGKILL');
      await waitExit(pid, 10_000, 's3fs');
    }
    // Uploads finish before the FUSE daemon exits: unstaged means the daemon is gone.
    await unmountFuse(staging, ['s3fs', 'rclone'], 60_000, ctx.log, { pid });
    const vid = encodeId(id);
    rmSync(this.keyFile(vid), { force: true });
    this.usageCache.delete(vid);
  }

  async expand(id: ObjectId, req: csi.NodeExpandVolumeRequest, ctx: RpcContext): Promise<number> {
    // Capacity is the store's record; there is nothing to grow on the node.
    const usage = await this.usage(id, req.volume_path, ctx, req.volume_id);
    return Number(usage?.[0]?.total ?? 0);
  }

  /** Bytes and objects of the volume from the store, against its recorded capacity. */
  async usage(id: ObjectId, _volumePath: string, ctx: RpcContext, volumeId = encodeId(id)): Promise<VolumeUsage[] | undefined> {
    const cached = this.usageCache.get(volumeId);
    if (cached && Date.now() - cached.at < USAGE_REFRESH_MS) return cached.value;
    const creds = this.stagedCredentials(volumeId);
    const l = locationOf(id);
    if (!creds || !l) return undefined;
    const s3 = s3Of(findCluster(this.cfg, id.cluster), id.cluster);
    const store = this.stores.get(s3, creds);
    const value = (async (): Promise<VolumeUsage[]> => {
      const rec = await store.getJson<VolumeRecord>(bucketOf(l), recordKey(l));
      if (!rec) throw notFound(`volume ${volumeId} has no record in the store`);
      let bytes = 0;
      let objects = 0;
      for await (const page of store.list(bucketOf(l), dataPrefix(l))) {
        for (const o of page) {
          bytes += o.size;
          objects++;
        }
      }
      ctx.log.debug({ bytes, objects }, 'usage read from the store');
      return [
        { unit: 'BYTES', total: rec.capacity, used: bytes, available: Math.max(0, rec.capacity - bytes) },
        // S3 has no inode limit: objects are reported as used inodes, with no total.
        { unit: 'INODES', total: 0, used: objects, available: 0 },
      ];
    })();
    this.usageCache.set(volumeId, { at: Date.now(), value });
    value.catch(() => this.usageCache.delete(volumeId));
    return value;
  }

  /**
   * Still this node's while the store knows the node's own key from the
   * publish context: fencing removes it. Stages with the provisioner's keys
   * (shared buckets, stores without an rgwAdmin identity) are never fenced,
   * and a store that does not answer leaves the volume this node's.
   */
  async owned(id: ObjectId, staged: csi.NodeStageVolumeRequest, ctx: RpcContext): Promise<boolean> {
    const key = nodeKey(staged);
    const s3 = findCluster(this.cfg, id.cluster)?.s3;
    if (!key || !s3) return true;
    try {
      return await this.stores.get(s3, resolveS3Credentials(s3, key)).knowsKey();
    } catch (e) {
      ctx.log.debug({ err: (e as Error).message }, 'cannot tell whether the node key is still valid: the volume stays this node\'s');
      return true;
    }
  }

  private stagedCredentials(volumeId: string): S3Credentials | undefined {
    try {
      const line = readFileSync(this.keyFile(volumeId), 'utf8').trim();
      const i = line.indexOf(':');
      return i > 0 ? { accessKeyID: line.slice(0, i), secretAccessKey: line.slice(i + 1) } : undefined;
    } catch {
      return undefined;
    }
  }
}

/** The node's own key on the volume from ControllerPublish (Ceph RGW), when it has one. */
function nodeKey(req: Pick<csi.NodeStageVolumeRequest, 'publish_context'>): Record<string, string> | undefined {
  const { accessKeyID, secretAccessKey } = req.publish_context ?? {};
  return accessKeyID || secretAccessKey ? { accessKeyID: accessKeyID ?? '', secretAccessKey: secretAccessKey ?? '' } : undefined;
}

/**
 * What a stage mounts comes from the id: the bucket and prefix of its
 * location. The volume context may repeat them (CreateVolume put them there)
 * but not change them; it may add the StorageClass's options, read with the
 * StorageClass's own grammar, as are the capability's mount flags.
 *
 * The pod's fsGroup (volume_mount_group) becomes the mount's group, with
 * group write (mode 0775), unless the StorageClass set gid or mode: kubelet
 * then changes no owner, so a pod start never rewrites the bucket's objects.
 * The group is the first pod's on the node: it is the stage's, and later
 * pods of the volume on the node share the mount.
 */
export function stageOptions(id: ObjectId, l: Location, req: Pick<csi.NodeStageVolumeRequest, 'volume_context' | 'volume_capability'>): Omit<S3Params, 'clusterID' | 'bucket'> {
  const vc = req.volume_context ?? {};
  if (vc.bucket !== undefined && vc.bucket !== bucketOf(l)) throw invalidArgument(`volume_context.bucket ${JSON.stringify(vc.bucket.slice(0, 64))} is not the bucket of this volume`);
  if (vc.prefix !== undefined && vc.prefix !== dataPrefix(l)) throw invalidArgument(`volume_context.prefix ${JSON.stringify(vc.prefix.slice(0, 256))} is not the prefix of this volume`);
  const given: Record<string, string> = { clusterID: id.cluster };
  for (const k of ['mounter', 'uid', 'gid', 'mode'] as const) if (vc[k]) given[k] = vc[k];
  const options = [...(req.volume_capability?.mount?.mount_flags ?? []), ...(vc.mountOptions ? [vc.mountOptions] : [])].join(',');
  if (options) given.mountOptions = options;
  try {
    const { clusterID: _c, bucket: _b, ...opts } = parseS3Params(given);
    const group = mountGroupOf(req.volume_capability);
    if (group !== undefined) {
      opts.gid ??= group;
      opts.mode ??= 0o775;
    }
    return opts;
  } catch (e) {
    if (isCsiError(e)) throw invalidArgument(`volume_context: ${e.message}`);
    throw e;
  }
}
