import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import type { Config } from '../../config/config.js';
import { findCluster } from '../../config/config.js';
import { KeyFiles, resolveCephIdentity, type CephIdentity } from '../../ceph/credentials.js';
import { CEPH_TIMEOUTS } from '../../ceph/conn.js';
import { isReadOnlyMode, modeOf } from '../../csi/capabilities.js';
import type { RpcContext } from '../../csi/handler.js';
import type { ObjectId } from '../../csi/ids.js';
import type * as csi from '../../csi/types.js';
import { failedPrecondition, internal, invalidArgument, isCsiError, notFound } from '../../errors.js';
import { findMount } from '../../mount/mountinfo.js';
import { fsUsage } from '../../mount/mounter.js';
import { ExecError, run, runAllowFail } from '../../util/exec.js';
import { fuseDaemonPid, unmountFuse } from '../../mount/fuse-process.js';
import { settlesWithin } from '../../util/settle.js';
import { isNodeUserOf } from './controller.js';
import type { NodeBackend } from '../types.js';
import { parseCephfsParams, type CephfsMounter } from './params.js';

/**
 * Node side of CephFS: mount the subvolume's path once per node at the
 * staging path, with the volume's own Ceph user (from the publish context),
 * through the kernel client where the kernel has it, else ceph-fuse.
 */

export interface CephfsMountSpec {
  monitors: string[];
  identity: CephIdentity;
  /** The file system of the id: without it a client mounts the cluster's default one. */
  fsName: string;
  path: string;
  target: string;
  readonly: boolean;
  options: string[];
}

export function kernelCephAvailable(): boolean {
  try {
    return /\tceph$/m.test(readFileSync('/proc/filesystems', 'utf8'));
  } catch {
    return false;
  }
}

/** `mount -t ceph`: the key travels as secretfile, never in the options text. */
export function kernelMountCommand(s: CephfsMountSpec): [string, string[]] {
  const opts = [`name=${s.identity.id}`, `secretfile=${s.identity.keyFile}`, `mds_namespace=${s.fsName}`, ...(s.readonly ? ['ro'] : []), ...s.options];
  return ['mount', ['-t', 'ceph', `${s.monitors.join(',')}:${s.path}`, s.target, '-o', opts.join(',')]];
}

export function fuseMountCommand(s: CephfsMountSpec): [string, string[]] {
  const args = ['-c', '/dev/null', '-m', s.monitors.join(','), '--id', s.identity.id, '--keyfile', s.identity.keyFile, ...CEPH_TIMEOUTS, '--client_fs', s.fsName, '-r', s.path];
  // Per-mount admin sockets and pid files would collide between volumes (one user per volume avoids most of it).
  args.push('--admin_socket', '', '--pid_file', '');
  const o = [...(s.readonly ? ['ro'] : []), ...s.options];
  if (o.length) args.push('-o', o.join(','));
  args.push(s.target);
  return ['ceph-fuse', args];
}

export class CephfsNode implements NodeBackend {
  readonly rawBlock = false;
  private readonly keyFiles = new KeyFiles();

  constructor(private readonly cfg: Config) {}

  async stage(id: ObjectId, req: csi.NodeStageVolumeRequest, ctx: RpcContext): Promise<void> {
    const staging = req.staging_target_path;
    const [fsName] = id.location as [string];
    // ControllerPublish gives the path; volumes made by earlier versions also have it in their volume context.
    const path = subvolumePathOf(id, req.publish_context.subvolumePath ?? req.volume_context.subvolumePath);
    const opts = stageOptions(id, req);
    if (await findMount(staging)) return;
    const cluster = findCluster(this.cfg, id.cluster);
    if (!cluster?.ceph) throw notFound(`cluster "${id.cluster}" is not configured for Ceph`);
    // The volume's own user from ControllerPublish; the node-stage secrets only when there is none.
    const creds = req.publish_context.userID ? { userID: req.publish_context.userID, userKey: req.publish_context.userKey ?? '' } : req.secrets;
    const identity = resolveCephIdentity(cluster, creds, this.keyFiles);
    const kernel = opts.mounter === 'kernel' || (opts.mounter !== 'fuse' && kernelCephAvailable());
    const spec: CephfsMountSpec = {
      monitors: cluster.ceph.monitors,
      identity,
      fsName,
      path,
      target: staging,
      readonly: isReadOnlyMode(modeOf(req.volume_capability)),
      options: [...(req.volume_capability?.mount?.mount_flags ?? []), ...(kernel ? opts.kernelMountOptions : opts.fuseMountOptions)],
    };
    const reserved = spec.options.find((o) => RESERVED_OPTION.test(o));
    if (reserved) throw invalidArgument(`mount option ${JSON.stringify(reserved)} is set by the driver, not the request`);
    mkdirSync(staging, { recursive: true });
    const [file, args] = kernel ? kernelMountCommand(spec) : fuseMountCommand(spec);
    try {
      await run(file, args, { timeoutMs: 60_000, log: ctx.log });
    } catch (e) {
      // ceph-fuse says why only after its banner lines, so look at all of stderr.
      const stderr = e instanceof ExecError ? e.stderr : String(e);
      const why = /(permission denied|operation not permitted|rejected)[^\n]*/i.exec(stderr);
      if (why) throw failedPrecondition(`Ceph refused ${spec.identity.id} the mount of ${path}: ${why[0]}`);
      if (/No such file or directory/i.test(stderr)) throw notFound(`volume ${req.volume_id} not found: ${path} does not exist in ${fsName}`);
      throw e;
    }
    if (!(await findMount(staging))) throw internal(`${file} returned but ${staging} is not mounted`);
  }

  async unstage(id: ObjectId, staging: string, ctx: RpcContext, staged?: csi.NodeStageVolumeRequest): Promise<void> {
    const pid = fuseDaemonPid('ceph-fuse', staging);
    // ceph-fuse flushes its caches on the way out: unstaged means the daemon is gone (a kernel mount has none).
    const unmounting = unmountFuse(staging, 'ceph-fuse', 30_000, ctx.log, { pid });
    // The cluster is asked whether this node was fenced only when the daemon is slow to go: a clean
    // unstage costs no Ceph round trip (a process of the ceph CLI would add 0.2 s to every detach).
    if (pid && staged && !(await settlesWithin(unmounting, FENCED_CHECK_AFTER_MS)) && (await this.userRemoved(id, staged, ctx))) {
      // Fenced: its sessions were evicted and its client blocklisted, so it has nothing it could still
      // flush, and its flush can wait on the MDS for good. Stopping it ends the unmount.
      ctx.log.warn({ pid }, 'this node was fenced from the volume: its ceph-fuse is stopped');
      process.kill(pid, 'SIGKILL');
    }
    await unmounting;
  }

  /**
   * Still this node's while its own Ceph user exists: fencing evicts the
   * node's sessions and removes that user. Stages with another user (the
   * node-stage secret, or a volume user shared by all nodes) are never fenced.
   */
  async owned(id: ObjectId, staged: csi.NodeStageVolumeRequest, ctx: RpcContext): Promise<boolean> {
    return !(await this.userRemoved(id, staged, ctx));
  }

  /** True only when Ceph refuses the stage's node user outright; unknown (a cluster that does not answer) is false. */
  private async userRemoved(id: ObjectId, staged: csi.NodeStageVolumeRequest, ctx: RpcContext): Promise<boolean> {
    const user = staged.publish_context?.userID;
    const key = staged.publish_context?.userKey;
    const [, , subvolume] = id.location as [string, string, string];
    if (!user || !key || !isNodeUserOf(subvolume, user)) return false;
    const cluster = findCluster(this.cfg, id.cluster);
    if (!cluster?.ceph) return false;
    const identity = resolveCephIdentity(cluster, { userID: user, userKey: key }, this.keyFiles);
    const r = await runAllowFail('ceph', ['-c', '/dev/null', '-m', cluster.ceph.monitors.join(','), '--id', identity.id, '--keyfile', identity.keyFile, ...CEPH_TIMEOUTS, '--connect-timeout', '10', 'fsid'], { timeoutMs: 20_000, log: ctx.log });
    return r.exitCode !== 0 && /permission denied|EACCES|authenticat/i.test(r.stderr);
  }

  async expand(_id: ObjectId, req: csi.NodeExpandVolumeRequest): Promise<number> {
    // Quotas apply at once; report what the mount shows.
    if (!existsSync(req.volume_path)) throw notFound(`${req.volume_path} does not exist`);
    return (await fsUsage(req.volume_path)).bytesTotal;
  }
}

/** How long a ceph-fuse may take to flush and exit before the node asks whether it was fenced. */
const FENCED_CHECK_AFTER_MS = 2_000;

// What the driver sets itself (who mounts, with which key, which file system): never from a request.
const RESERVED_OPTION = /^(name|secret|secretfile|mds_namespace|fs|client_fs|key|keyfile|keyring|conf|id)(=|$)/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The subvolume path the publish context names (the volume context, for
 * volumes made by earlier versions), checked against the id: it
 * must be the path `ceph fs subvolume getpath` gives for the id's subvolume
 * (/volumes/<group>/<subvolume>/<uuid>), so that no context can point a
 * volume at another directory, or at the root of the file system.
 */
export function subvolumePathOf(id: ObjectId, given: string | undefined): string {
  const [, group, name] = id.location as [string, string, string];
  if (!given) throw invalidArgument('publish_context.subvolumePath is required (the publish context ControllerPublishVolume returned)');
  const prefix = `/volumes/${group}/${name}/`;
  if (!given.startsWith(prefix) || !UUID.test(given.slice(prefix.length))) {
    throw invalidArgument(`subvolumePath ${JSON.stringify(given.slice(0, 256))} is not the path of subvolume ${name} in group ${group}`);
  }
  return given;
}

/** The options a volume context may add, read with the StorageClass's own grammar. */
export function stageOptions(id: ObjectId, req: Pick<csi.NodeStageVolumeRequest, 'volume_context'>): { mounter?: CephfsMounter; kernelMountOptions: string[]; fuseMountOptions: string[] } {
  const [fsName, subvolumeGroup] = id.location as [string, string];
  const vc = req.volume_context ?? {};
  const given: Record<string, string> = { clusterID: id.cluster, fsName, subvolumeGroup };
  for (const k of ['mounter', 'kernelMountOptions', 'fuseMountOptions'] as const) if (vc[k]) given[k] = vc[k];
  try {
    return parseCephfsParams(given);
  } catch (e) {
    if (isCsiError(e)) throw invalidArgument(`volume_context: ${e.message}`);
    throw e;
  }
}

