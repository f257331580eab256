import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { lstat, open, readFile, realpath, rmdir, stat, statfs, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { aborted, internal } from '../errors.js';
import { ExecError, run, runAllowFail } from '../util/exec.js';
import { fuseDaemonPid } from './fuse-process.js';
import { bind, EBUSY, umount2 } from './syscalls.js';
import { findMount, readMountInfo, type MountEntry } from './mountinfo.js';

/**
 * Mounts, file systems and loop devices, each one command with an argument
 * array and a timeout. Nothing here knows about CSI or backends.
 */

const T = 30_000;

export async function mount(source: string, target: string, fsType: string, options: string[], log?: Logger): Promise<void> {
  const args = ['-t', fsType];
  if (options.length) args.push('-o', options.join(','));
  await run('mount', [...args, source, target], { timeoutMs: T, log });
}

/** Bind-mounts and, when asked, makes the bind read-only (a second remount step the kernel requires). */
export async function bindMount(source: string, target: string, readonly: boolean, extra: string[] = [], log?: Logger): Promise<void> {
  await bind(source, target, T, log);
  if (readonly || extra.length) {
    // "ro" last: a flag of the request ("rw") must not undo a read-only publish.
    const opts = ['remount', 'bind', ...extra, ...(readonly ? ['ro'] : [])];
    try {
      await run('mount', ['-o', opts.join(','), target], { timeoutMs: T, log });
    } catch (e) {
      await unmount(target, log);
      throw e;
    }
  }
}

/**
 * Whether a mount point answers. A FUSE mount whose daemon is gone stays in
 * mountinfo, but the kernel answers every call on it with ENOTCONN. A daemon
 * that is alive but stuck never answers: after `waitMs` the mount is "hung",
 * and until that probe returns no second one is sent to the same path, so a
 * stuck mount holds at most one of libuv's few worker threads. The probe is
 * statfs, which the kernel always forwards to the daemon: a stat of the mount
 * root is answered from the kernel's attribute cache, even seconds after the
 * daemon stopped answering.
 */
export async function mountHealth(p: string, entries?: MountEntry[], waitMs = 5_000): Promise<'unmounted' | 'dead' | 'hung' | 'ok'> {
  if (!(await findMount(p, entries))) return 'unmounted';
  const key = path.resolve(p);
  let probe = probes.get(key);
  if (!probe) {
    probe = statfs(key).then(
      () => 'ok' as const,
      (e: NodeJS.ErrnoException) => {
        if (DEAD.has(e.code ?? '')) return 'dead' as const;
        throw e;
      },
    );
    probes.set(key, probe);
    void probe.finally(() => probes.delete(key)).catch(() => {});
  }
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<'hung'>((res) => (timer = setTimeout(() => res('hung'), waitMs)));
  let health: 'ok' | 'dead' | 'hung';
  try {
    health = await Promise.race([probe, hung]);
  } finally {
    clearTimeout(timer);
  }
  return health === 'hung' && (await abortOrphaned(p, entries ?? (await readMountInfo()))) ? 'dead' : health;
}

export const FUSE_DAEMONS = ['ceph-fuse', 's3fs', 'rclone', 'rbd-fuse'];

/**
 * A FUSE mount that does not answer and whose daemon is gone: a helper the
 * daemon forked (ceph-fuse's `mount -o remount`) inherited /dev/fuse and
 * outlived it when the plugin was killed mid-stage, so the connection stays
 * open with nobody to answer, and every access waits for ever. Its connection
 * is aborted (fusectl), which makes it dead: unmounted and staged again. A
 * daemon that is alive but stopped names one of the connection's mount points
 * in its arguments, and its mount is left alone.
 */
async function abortOrphaned(p: string, entries: MountEntry[]): Promise<boolean> {
  const m = await findMount(p, entries);
  if (!m?.fsType.startsWith('fuse')) return false;
  const points = new Set(entries.filter((e) => e.majorMinor === m.majorMinor).map((e) => e.mountPoint));
  if ([...points].some((pt) => fuseDaemonPid(FUSE_DAEMONS, pt) !== undefined)) return false;
  try {
    writeFileSync(`/sys/fs/fuse/connections/${m.majorMinor.split(':')[1]}/abort`, '1');
    return true;
  } catch {
    return false;
  }
}

const probes = new Map<string, Promise<'ok' | 'dead'>>();
const DEAD = new Set(['ENOTCONN', 'ECONNABORTED']);

/** Detaches a mount without asking its file system anything (no probe, no flush); a path that is not a mount point is fine. */
export async function unmountLazy(target: string, log?: Logger): Promise<void> {
  try {
    await umount2(target, true, T, log);
  } catch (e) {
    if (await findMount(target)) throw e;
  }
}

/** Unmounts if mounted; a path that is not a mount point is fine. */
export async function unmount(target: string, log?: Logger): Promise<void> {
  // Until nothing is mounted there: a healed target is a stack, a live mount on dead ones.
  for (let i = 0, layers = 0; i < 8; ) {
    const entries = await readMountInfo();
    if (!(await findMount(target, entries))) return;
    if (++layers > 64) break;
    // Nothing can be flushed through a dead FUSE mount, and pods holding files
    // open in it would keep a plain umount busy forever: detach it lazily.
    const lazy = (await mountHealth(target, entries)) === 'dead';
    try {
      await umount2(target, lazy, T, log);
    } catch (e) {
      if (!(await findMount(target))) continue;
      if (e instanceof ExecError && e.exitCode === EBUSY && i < 7) {
        i++;
        await new Promise((res) => setTimeout(res, 100 * i));
        continue;
      }
      throw e;
    }
  }
  if (await findMount(target)) throw new ExecError('umount', 1, `${target} is still mounted`, false);
}

/** The file-system type on a device, or undefined when blkid finds none (a blank device). */
export async function detectFs(device: string, log?: Logger): Promise<string | undefined> {
  const r = await runAllowFail('blkid', ['-p', '-o', 'value', '-s', 'TYPE', device], { timeoutMs: T, log });
  if (r.exitCode === 0 && r.stdout.trim()) return r.stdout.trim();
  if (r.exitCode === 2 || (r.exitCode === 0 && !r.stdout.trim())) return undefined;
  throw new ExecError('blkid', r.exitCode, r.stderr, false);
}

export function mkfsCommand(fsType: string, device: string): [string, string[]] {
  switch (fsType) {
    case 'ext4':
      // nodiscard: discard through loop over FUSE is unsupported and only slows mkfs.
      return ['mkfs.ext4', ['-q', '-F', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1', '-m', '0', device]];
    case 'xfs':
      return ['mkfs.xfs', ['-q', '-K', device]];
    default:
      throw internal(`cannot create a ${fsType} file system`);
  }
}

export async function mkfs(fsType: string, device: string, log?: Logger): Promise<void> {
  const [file, args] = mkfsCommand(fsType, device);
  await run(file, args, { timeoutMs: 90_000, log });
}

/** Grows a mounted file system to its device's size. */
export function growFsCommand(fsType: string, device: string, mountPoint: string): [string, string[]] {
  if (fsType === 'xfs') return ['xfs_growfs', [mountPoint]];
  if (fsType.startsWith('ext')) return ['resize2fs', [device]];
  throw internal(`cannot grow a ${fsType} file system`);
}

export async function growFs(fsType: string, device: string, mountPoint: string, log?: Logger): Promise<void> {
  const [file, args] = growFsCommand(fsType, device, mountPoint);
  await run(file, args, { timeoutMs: 90_000, log });
}

/**
 * Size an ext2/3/4 file system claims, from its superblock (1 KiB at offset
 * 1 KiB); undefined when the bytes are not an ext superblock.
 */
export function extFsBytesFromSuperblock(sb: Buffer): number | undefined {
  if (sb.length < 0x154 || sb.readUInt16LE(0x38) !== 0xef53) return undefined;
  const blockSize = 1024 << sb.readUInt32LE(0x18);
  const is64bit = (sb.readUInt32LE(0x60) & 0x80) !== 0;
  const blocks = sb.readUInt32LE(0x04) + (is64bit ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
  return blocks * blockSize;
}

/** Read in-process: staging runs this on every mount, and a dumpe2fs spawn costs more than the read. */
export async function extFsBytes(device: string): Promise<number> {
  const fh = await open(device, 'r');
  try {
    const sb = Buffer.alloc(1024);
    await fh.read(sb, 0, 1024, 1024);
    const bytes = extFsBytesFromSuperblock(sb);
    if (bytes === undefined) throw internal(`${device} has no ext superblock`);
    return bytes;
  } finally {
    await fh.close();
  }
}

/**
 * Whether the file system on `device` is smaller than the device: read from an ext superblock
 * in-process, where resize2fs would read the device only to find nothing to do (a NodeExpand after
 * the stage already grew it; once it hung for 90 s doing that on a loaded machine). Other file
 * systems' tools decide for themselves.
 */
export async function fsSmallerThanDevice(fsType: string, device: string, log?: Logger): Promise<boolean> {
  if (!fsType.startsWith('ext')) return true;
  return (await extFsBytes(device)) < (await deviceSize(device, log));
}

/**
 * Grows an unmounted ext file system to its device. Done at staging, where
 * the volume is not yet mounted, because online ext4 growth needs
 * CAP_SYS_RESOURCE; resize2fs insists on a fresh check first.
 */
export async function growExtOffline(device: string, log?: Logger): Promise<void> {
  const fsck = await runAllowFail('e2fsck', ['-f', '-p', device], { timeoutMs: 90_000, log });
  // 0: clean, 1: errors fixed. Anything else means the file system needs a human.
  if (fsck.exitCode > 1) throw new ExecError('e2fsck', fsck.exitCode, fsck.stderr || fsck.stdout, false);
  await run('resize2fs', [device], { timeoutMs: 90_000, log });
}

/** A block device's size from sysfs (no spawn), falling back to blockdev for odd device names. */
export async function deviceSize(device: string, log?: Logger): Promise<number> {
  try {
    const name = path.basename(await realpath(device));
    return Number(await readFile(`/sys/class/block/${name}/size`, 'utf8')) * 512;
  } catch {
    return Number((await run('blockdev', ['--getsize64', device], { timeoutMs: T, log })).stdout.trim());
  }
}

// Loop devices, for backends whose data appears as a file (rbd-fuse).
// Found through sysfs, not `losetup -j`: losetup stats every loop device's
// backing file, and one file on a hung FUSE mount would block every stage on
// the node.
// `deleted`: also a device whose file the kernel marks deleted, as a FUSE file is once its daemon died.
export function loopFind(file: string, deleted = false): string | undefined {
  let names: string[];
  try {
    names = readdirSync('/sys/block').filter((d) => d.startsWith('loop'));
  } catch {
    return undefined;
  }
  for (const name of names) {
    try {
      const backing = readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim();
      if (backing === file || (deleted && backing === `${file} (deleted)`)) return `/dev/${name}`;
    } catch {
      /* unbound loop device */
    }
  }
  return undefined;
}

/** What a loop device reads (the path the kernel gives its file) and whether it is marked to clear at its last close; undefined when unbound. */
export function loopBacking(device: string): { file: string; autoclear: boolean } | undefined {
  const dir = `/sys/block/${path.basename(device)}/loop`;
  try {
    return { file: readFileSync(`${dir}/backing_file`, 'utf8').trim(), autoclear: readFileSync(`${dir}/autoclear`, 'utf8').trim() === '1' };
  } catch {
    return undefined;
  }
}

/** Detaches a loop device; one still open (a file system mounted on it) is only marked to clear at its last close. */
export async function loopRelease(device: string, log?: Logger): Promise<void> {
  const r = await runAllowFail('losetup', ['-d', device], { timeoutMs: T, log });
  // ENXIO: it was already cleared.
  if (r.exitCode !== 0 && loopBacking(device) && !loopBacking(device)!.autoclear) throw new ExecError('losetup -d', r.exitCode, r.stderr, false);
}

export async function loopAttach(file: string, log?: Logger): Promise<string> {
  return loopFind(file) ?? (await run('losetup', ['-f', '--show', file], { timeoutMs: T, log })).stdout.trim();
}

export async function loopDetachAll(file: string, log?: Logger): Promise<void> {
  for (let i = 0, dev = loopFind(file, true); dev; dev = loopFind(file, true), i++) {
    // On a device still open, losetup -d only marks it to clear at the last close: wait, but not forever.
    if (i >= 50) throw aborted(`loop device ${dev} over ${file} is still in use; retry`);
    if (i > 0) await new Promise((res) => setTimeout(res, 100));
    const r = await runAllowFail('losetup', ['-d', dev], { timeoutMs: T, log });
    // ENXIO: it cleared between the look and the detach.
    if (r.exitCode !== 0 && loopFind(file, true) === dev) throw new ExecError('losetup -d', r.exitCode, r.stderr, false);
  }
}

export async function loopRefresh(device: string, log?: Logger): Promise<void> {
  await run('losetup', ['-c', device], { timeoutMs: T, log });
}

export interface FsUsage {
  bytesTotal: number;
  bytesAvailable: number;
  bytesUsed: number;
  inodesTotal: number;
  inodesFree: number;
  inodesUsed: number;
}

export async function fsUsage(p: string): Promise<FsUsage> {
  const s = await statfs(p);
  const total = s.blocks * s.bsize;
  const free = s.bfree * s.bsize;
  return {
    bytesTotal: total,
    bytesAvailable: s.bavail * s.bsize,
    bytesUsed: total - free,
    inodesTotal: s.files,
    inodesFree: s.ffree,
    inodesUsed: s.files - s.ffree,
  };
}

export async function pathKind(p: string): Promise<'dir' | 'file' | 'block' | 'missing' | 'other'> {
  try {
    const s = await stat(p);
    return s.isDirectory() ? 'dir' : s.isBlockDevice() ? 'block' : s.isFile() ? 'file' : 'other';
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'missing';
    throw e;
  }
}

/**
 * Removes a mount point the node made, once nothing is mounted on it: an
 * empty directory, or the empty file a raw-block bind sat on. Anything else
 * (a directory or file with content, a symlink, a device node) is not ours
 * and is left where it is. Returns what it did.
 */
export async function removeMountPoint(p: string): Promise<'removed' | 'missing' | 'kept'> {
  let s;
  try {
    s = await lstat(p);
  } catch (e) {
    // ENOTDIR: a parent in the path is a file, so nothing can be there.
    if (['ENOENT', 'ENOTDIR'].includes((e as NodeJS.ErrnoException).code ?? '')) return 'missing';
    throw e;
  }
  try {
    // rmdir itself refuses a directory with content, so there is no window between looking and removing.
    if (s.isDirectory()) await rmdir(p);
    else if (s.isFile() && s.size === 0) await unlink(p);
    else return 'kept';
    return 'removed';
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'missing';
    if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'EBUSY') return 'kept';
    throw e;
  }
}
