import { readFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * /proc/self/mountinfo, parsed. Reading it is far cheaper than spawning
 * findmnt and it is the kernel's own truth about what is mounted where.
 */

export interface MountEntry {
  mountId: number;
  parentId: number;
  majorMinor: string;
  root: string;
  mountPoint: string;
  options: string[];
  fsType: string;
  source: string;
  superOptions: string[];
}

// Paths in mountinfo escape space, tab, newline and backslash as octal.
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (sep < 0 || f.length < sep + 3) continue;
    out.push({
      mountId: Number(f[0]),
      parentId: Number(f[1]),
      majorMinor: f[2]!,
      root: unescape(f[3]!),
      mountPoint: unescape(f[4]!),
      options: f[5]!.split(','),
      fsType: f[sep + 1]!,
      source: unescape(f[sep + 2]!),
      superOptions: (f[sep + 3] ?? '').split(','),
    });
  }
  return out;
}

export async function readMountInfo(file = '/proc/self/mountinfo'): Promise<MountEntry[]> {
  return parseMountInfo(await readFile(file, 'utf8'));
}

/** The topmost mount at `p` (later entries stack over earlier ones), if any. */
export async function findMount(p: string, entries?: MountEntry[]): Promise<MountEntry | undefined> {
  const target = path.resolve(p);
  const all = entries ?? (await readMountInfo());
  for (let i = all.length - 1; i >= 0; i--) if (all[i]!.mountPoint === target) return all[i];
  return undefined;
}

export const isReadOnly = (m: MountEntry) => m.options.includes('ro');

/** Whether a device is in use at any mount point: a file system on it, or its node bound onto a file (raw block). */
export function deviceInUse(device: string, entries: MountEntry[]): boolean {
  const node = `/${path.basename(device)}`;
  return entries.some((m) => m.source === device || (m.fsType === 'devtmpfs' && m.root === node));
}
