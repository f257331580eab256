import { chmod, lchown, lstat, opendir } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { throwIfStopped } from '../util/call-context.js';

/**
 * A pod's fsGroup applied to a volume as kubelet applies it when it owns the change
 * (pkg/volume/volume_linux.go, fsGroupChangePolicy Always): every entry gets the group, files and
 * directories gain group read and write, directories also group search and set-group-id (new
 * files inherit the group). Symlinks get the group but keep their mode (a chmod would follow
 * them). The root comes last, so a walk cut short is never taken for a finished one. One
 * difference: an entry that already has the group is not chowned again, so it keeps a setuid or
 * setgid bit that kubelet's chown would have dropped.
 *
 * With VOLUME_MOUNT_GROUP kubelet leaves this to the driver: volumes whose file system keeps
 * owners (RBD, CephFS) are walked here; S3 mounts take the group as a mount option instead.
 */

const RW = 0o660;
const DIR_EXTRA = 0o2110;

/** Walks `root`; answers how many entries it saw and how many it changed. */
export async function applyMountGroup(root: string, gid: number, log: Logger): Promise<{ entries: number; changed: number }> {
  const t = Date.now();
  let entries = 0;
  let changed = 0;
  const visit = async (p: string): Promise<void> => {
    throwIfStopped();
    const st = await lstat(p);
    if (st.isDirectory()) {
      // Entries are read in pages, so a big directory is never held in memory whole.
      const dir = await opendir(p);
      for await (const e of dir) await visit(path.join(p, e.name));
    }
    // An entry already right is not touched: kubelet's retry after a walk cut by the call's
    // deadline (2 min) then costs an lstat per entry done, so a big volume's walk still ends.
    // As kubelet: a failed chown is logged, not fatal (the mode may still let the pod in).
    let touched = false;
    if (st.gid !== gid) {
      touched = true;
      await lchown(p, -1, gid).catch((e: NodeJS.ErrnoException) => log.warn({ path: p, code: e.code }, 'could not give the entry the pod group'));
    }
    if (!st.isSymbolicLink()) {
      const mode = (st.mode & 0o7777) | RW | (st.isDirectory() ? DIR_EXTRA : 0);
      if (mode !== (st.mode & 0o7777)) {
        touched = true;
        await chmod(p, mode);
      }
    }
    entries++;
    if (touched) changed++;
  };
  await visit(root);
  log.info({ gid, entries, changed, ms: Date.now() - t }, 'volume given the pod group (volume_mount_group)');
  return { entries, changed };
}
