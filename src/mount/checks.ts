import path from 'node:path';

/**
 * The exact form the node accepts for the paths a request carries, checked
 * before any of them reaches the file system or a command. (Mount flags are
 * checked with the rest of the capability, in csi/capabilities.ts.)
 */

export const MAX_PATH_BYTES = 4095;
const MAX_NAME_BYTES = 255;
// Control characters would be escaped differently in mountinfo than in the request, and no CO makes them.
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * Why `p` is not an absolute, normalised path of at least one component, or
 * undefined when it is. Normalised means what the kernel would resolve it to
 * without looking at the disk: no ".", "..", "//" or trailing "/"; so the path
 * a request names is the path that gets touched.
 */
export function pathProblem(p: string): string | undefined {
  if (!p.startsWith('/')) return 'must be absolute';
  if (p === '/') return 'must not be the root directory';
  if (CONTROL.test(p)) return 'must not contain control characters';
  if (Buffer.byteLength(p) > MAX_PATH_BYTES) return `must be at most ${MAX_PATH_BYTES} bytes`;
  if (p.endsWith('/') || path.posix.normalize(p) !== p || p.split('/').some((c) => c === '.' || c === '..')) {
    return 'must be normalised (no ".", "..", "//" or trailing "/")';
  }
  if (p.split('/').some((c) => Buffer.byteLength(c) > MAX_NAME_BYTES)) return `must have components of at most ${MAX_NAME_BYTES} bytes`;
  return undefined;
}

/** True when `p` lies strictly inside `root` (both absolute). */
export function isInside(root: string, p: string): boolean {
  const rel = path.relative(path.resolve(root), path.resolve(p));
  return rel !== '' && rel !== '..' && !rel.startsWith('../') && !path.isAbsolute(rel);
}
