import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { cephArgs, cephArgsEnv, type CephConn } from '../../ceph/conn.js';
import { isInside } from '../../mount/checks.js';
import { findMount, type MountEntry } from '../../mount/mountinfo.js';
import { loopAttach, loopBacking, loopDetachAll, loopFind, mountHealth } from '../../mount/mounter.js';
import { run, runAllowFail } from '../../util/exec.js';
import { fuseDaemonPid, unmountFuse, waitExit } from '../../mount/fuse-process.js';
import type { RbdMounter } from './params.js';

/**
 * Turning an RBD image into a block device on this node, three ways:
 * krbd (`rbd device map`, the production default), rbd-nbd, or rbd-fuse with
 * a loop device over the image file for hosts without the kernel modules.
 * The command builders are pure so tests can check the exact kernel-path
 * commands on machines that cannot run them.
 */

export interface ImageRef {
  cluster: string;
  pool: string;
  /** The image's RADOS namespace; undefined for the pool's default one. */
  namespace?: string;
  image: string;
}

/** The image as `rbd` names it: pool/image, or pool/namespace/image. */
export const imageSpec = (ref: ImageRef): string => [ref.pool, ...(ref.namespace ? [ref.namespace] : []), ref.image].join('/');

const T = 60_000;

export function kernelAvailable(kind: 'krbd' | 'rbd-nbd'): boolean {
  return kind === 'krbd' ? existsSync('/sys/bus/rbd') : existsSync('/sys/module/nbd') || existsSync('/dev/nbd0');
}

/** krbd where the kernel has it, else rbd-fuse, unless the StorageClass chose. */
export function chooseMounter(requested: string | undefined): RbdMounter {
  if (requested === 'krbd' || requested === 'rbd-nbd' || requested === 'rbd-fuse') return requested;
  return kernelAvailable('krbd') ? 'krbd' : 'rbd-fuse';
}

const deviceType = (m: 'krbd' | 'rbd-nbd') => (m === 'krbd' ? 'krbd' : 'nbd');

export function mapCommand(m: 'krbd' | 'rbd-nbd', ref: ImageRef, conn: CephConn): [string, string[]] {
  return ['rbd', [...cephArgs(conn), 'device', 'map', '-t', deviceType(m), imageSpec(ref)]];
}

export function unmapCommand(m: 'krbd' | 'rbd-nbd', device: string): [string, string[]] {
  return ['rbd', ['device', 'unmap', '-t', deviceType(m), device]];
}

export function listMappedCommand(m: 'krbd' | 'rbd-nbd'): [string, string[]] {
  return ['rbd', ['device', 'list', '-t', deviceType(m), '--format', 'json']];
}

export function fuseCommand(ref: ImageRef, mountPoint: string, conn: CephConn): { file: string; args: string[]; env: Record<string, string> } {
  // rbd-fuse has no --id/--keyfile flags; CEPH_ARGS carries them (FACTS pitfall 21).
  const namespace = ref.namespace ? ['-s', ref.namespace] : [];
  return { file: 'rbd-fuse', args: ['-c', '/dev/null', '-p', ref.pool, ...namespace, '-r', ref.image, mountPoint], env: { CEPH_ARGS: cephArgsEnv(conn) } };
}

export class RbdAttacher {
  constructor(private readonly stateDir: string) {}

  /**
   * Where rbd-fuse serves the image: named by a hash, so that no part of an
   * id can steer the path out of the state directory, and no two images
   * (cluster "a.b" pool "c", cluster "a" pool "b.c") share a directory. An
   * image in the default namespace keeps the name it had before namespaces.
   */
  fuseDir(ref: ImageRef): string {
    const parts = [ref.cluster, ref.pool, ...(ref.namespace ? [ref.namespace] : []), ref.image];
    const name = createHash('sha256').update(parts.join('\0')).digest('hex').slice(0, 32);
    return path.join(this.stateDir, 'rbd-fuse', name);
  }

  async attach(m: RbdMounter, ref: ImageRef, conn: CephConn, log: Logger): Promise<string> {
    if (m === 'rbd-fuse') return this.attachFuse(ref, conn, log);
    const existing = await this.findMapped(m, ref, log);
    if (existing) return existing;
    const [file, args] = mapCommand(m, ref, conn);
    return (await run(file, args, { timeoutMs: T, log })).stdout.trim();
  }

  private async attachFuse(ref: ImageRef, conn: CephConn, log: Logger): Promise<string> {
    const dir = this.fuseDir(ref);
    mkdirSync(dir, { recursive: true });
    if (!(await findMount(dir))) {
      const c = fuseCommand(ref, dir, conn);
      await run(c.file, c.args, { timeoutMs: T, env: c.env, log });
    }
    return loopAttach(path.join(dir, ref.image), log);
  }

  /** The device this node has for the image, whichever way it was attached. */
  async findDevice(ref: ImageRef, log: Logger): Promise<string | undefined> {
    const dir = this.fuseDir(ref);
    if (await findMount(dir)) {
      const dev = loopFind(path.join(dir, ref.image));
      if (dev) return dev;
    }
    for (const m of ['krbd', 'rbd-nbd'] as const) {
      const dev = await this.findMapped(m, ref, log);
      if (dev) return dev;
    }
    return undefined;
  }

  private async findMapped(m: 'krbd' | 'rbd-nbd', ref: ImageRef, log: Logger): Promise<string | undefined> {
    if (!kernelAvailable(m)) return undefined;
    const [file, args] = listMappedCommand(m);
    const r = await runAllowFail(file, args, { timeoutMs: T, log });
    if (r.exitCode !== 0 || !r.stdout.trim()) return undefined;
    const list = JSON.parse(r.stdout) as Array<{ pool: string; namespace?: string; name: string; device: string }>;
    return list.find((d) => d.pool === ref.pool && (d.namespace || undefined) === ref.namespace && d.name === ref.image)?.device;
  }

  /** The file rbd-fuse shows the image as, which the loop device reads. */
  imageFile(ref: ImageRef): string {
    return path.join(this.fuseDir(ref), ref.image);
  }

  /**
   * Whether a loop device over the image reads through an rbd-fuse that is
   * gone: its FUSE mount is dead or missing, or was detached and replaced
   * (the kernel then names the file from the detached mount's root), or the
   * device was marked to clear by a heal that began. Any other backing file
   * is not this attacher's, and a daemon that is alive but stuck is left alone.
   */
  async loopDead(device: string, ref: ImageRef, entries?: MountEntry[]): Promise<boolean> {
    const b = loopBacking(device);
    if (!b) return true;
    const file = this.imageFile(ref);
    const detached = b.file === `/${ref.image}` || b.file === `/${ref.image} (deleted)`;
    if (b.file !== file && b.file !== `${file} (deleted)` && !detached) return false;
    if (detached || b.autoclear) return true;
    const health = await mountHealth(this.fuseDir(ref), entries);
    return health === 'dead' || health === 'unmounted';
  }

  /** Whether an rbd-fuse daemon serves the image here. */
  async fuseRunning(ref: ImageRef): Promise<boolean> {
    return fuseDaemonPid('rbd-fuse', this.fuseDir(ref)) !== undefined;
  }

  /** Stops the image's rbd-fuse at once, without a flush: only for a fenced client, which cannot flush anything. */
  async killFuse(ref: ImageRef, log: Logger): Promise<void> {
    const pid = fuseDaemonPid('rbd-fuse', this.fuseDir(ref));
    if (!pid) return;
    process.kill(pid, 'SIGKILL');
    await waitExit(pid, 10_000, 'rbd-fuse');
    log.warn({ pid }, 'fenced rbd-fuse stopped');
  }

  /** Undoes attach whichever way it was done: loop, FUSE process, kernel mapping. */
  async detach(ref: ImageRef, log: Logger): Promise<void> {
    const dir = this.fuseDir(ref);
    if (await findMount(dir)) await loopDetachAll(path.join(dir, ref.image), log);
    // rbd-fuse closes the image on the way out; a dead client's lock can hold that up to the 30 s watch timeout.
    // Lazily, without the usual statfs probe: a fenced rbd-fuse answers statfs only once its blocklist entry
    // expires, and with the loop device gone nothing else uses the mount.
    await unmountFuse(dir, 'rbd-fuse', 45_000, log, { lazy: true });
    if (!isInside(this.stateDir, dir)) throw new Error(`rbd-fuse directory ${dir} is outside the state directory`);
    if (existsSync(dir)) rmdirSync(dir);
    for (const m of ['krbd', 'rbd-nbd'] as const) {
      const dev = await this.findMapped(m, ref, log);
      if (dev) {
        const [file, args] = unmapCommand(m, dev);
        await run(file, args, { timeoutMs: T, log });
      }
    }
  }
}

