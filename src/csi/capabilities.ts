import type { VolumeCapability__Output } from './gen/csi/v1/VolumeCapability.js';
import type { CapacityRange__Output } from './gen/csi/v1/CapacityRange.js';
import { invalidArgument, outOfRange } from '../errors.js';

/** Helpers for the parts of requests every backend reads the same way. */

export type AccessMode = NonNullable<VolumeCapability__Output['access_mode']>['mode'];

const SINGLE_NODE = new Set<string>(['SINGLE_NODE_WRITER', 'SINGLE_NODE_READER_ONLY', 'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER']);
const READ_ONLY = new Set<string>(['SINGLE_NODE_READER_ONLY', 'MULTI_NODE_READER_ONLY']);
const MULTI_WRITER = new Set<string>(['MULTI_NODE_SINGLE_WRITER', 'MULTI_NODE_MULTI_WRITER']);
// proto-loader passes enum numbers it does not know through as numbers: only these names are modes.
const KNOWN_MODES = new Set<unknown>([...SINGLE_NODE, ...READ_ONLY, ...MULTI_WRITER, 'MULTI_NODE_READER_ONLY']);
const FS_TYPE = /^[a-z0-9]{1,16}$/;
// One mount option each: no "," (it would smuggle in more options), no spaces, never option-like.
const MOUNT_FLAG = /^[A-Za-z0-9_][A-Za-z0-9_.:/=+@-]{0,127}$/;

export const isSingleNode = (m: AccessMode) => SINGLE_NODE.has(m);
export const isReadOnlyMode = (m: AccessMode) => READ_ONLY.has(m);
export const isMultiNodeWriter = (m: AccessMode) => MULTI_WRITER.has(m);

export function modeOf(cap: VolumeCapability__Output | null | undefined): AccessMode {
  return cap?.access_mode?.mode ?? 'UNKNOWN';
}

export function isBlock(cap: VolumeCapability__Output | null | undefined): boolean {
  return !!cap?.block;
}

/** Checks the structure the spec requires; backends then decide what they support. */
export function requireCapability(cap: VolumeCapability__Output | null | undefined, what = 'volume_capability'): VolumeCapability__Output {
  if (!cap) throw invalidArgument(`${what} is required`);
  if (!cap.block && !cap.mount) throw invalidArgument(`${what} must set an access type (block or mount)`);
  if (!cap.access_mode || cap.access_mode.mode === 'UNKNOWN') throw invalidArgument(`${what} must set an access mode`);
  if (!KNOWN_MODES.has(cap.access_mode.mode)) throw invalidArgument(`${what}: access mode ${String(cap.access_mode.mode)} is not one of the CSI access modes`);
  if (cap.block && cap.mount) throw invalidArgument(`${what} must set one access type, not both`);
  if (cap.mount) {
    if (cap.mount.fs_type && !FS_TYPE.test(cap.mount.fs_type)) throw invalidArgument(`${what}: fs_type "${cap.mount.fs_type.slice(0, 32)}" is not a file-system type name`);
    const bad = (cap.mount.mount_flags ?? []).find((f) => !MOUNT_FLAG.test(f));
    if (bad !== undefined) throw invalidArgument(`${what}: mount flag "${bad.slice(0, 64)}" is not a single plain mount option`);
    mountGroupOf(cap, what);
  }
  return cap;
}

// A gid is 32 bits, and (gid_t)-1 means "unchanged" to chown: the largest group is 2^32-2.
const MAX_GID = 2 ** 32 - 2;

/**
 * The group kubelet asks the node to give the volume (the pod's fsGroup, VOLUME_MOUNT_GROUP): a
 * plain decimal gid, or undefined when none is asked. It reaches chown and mount options, so
 * nothing but digits passes (no sign, no leading zero, no name).
 */
export function mountGroupOf(cap: VolumeCapability__Output | null | undefined, what = 'volume_capability'): number | undefined {
  const g = cap?.mount?.volume_mount_group;
  if (!g) return undefined;
  const n = /^(0|[1-9][0-9]{0,9})$/.test(g) ? Number(g) : NaN;
  if (!(n <= MAX_GID)) throw invalidArgument(`${what}: volume_mount_group ${JSON.stringify(g.slice(0, 32))} is not a decimal group id from 0 to ${MAX_GID}`);
  return n;
}

export function requireCapabilities(caps: VolumeCapability__Output[] | undefined): VolumeCapability__Output[] {
  if (!caps || caps.length === 0) throw invalidArgument('volume_capabilities are required');
  caps.forEach((c, i) => requireCapability(c, `volume_capabilities[${i}]`));
  return caps;
}

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/**
 * Picks a size from a capacity range: the required bytes rounded up to the
 * backend's granularity, or the default when nothing is asked. A limit below
 * what we can provide is OUT_OF_RANGE, as the spec says.
 */
export function sizeFromRange(range: CapacityRange__Output | null | undefined, defaultBytes: number, granularity: number): number {
  const required = Number(range?.required_bytes ?? 0);
  const limit = Number(range?.limit_bytes ?? 0);
  if (required < 0 || limit < 0) throw invalidArgument('capacity_range values must not be negative');
  // int64 sizes past 2^53 lose precision as numbers, and no backend here provisions that much.
  if (required > Number.MAX_SAFE_INTEGER) throw outOfRange(`required_bytes ${required} is more than any volume can hold`);
  if (limit && required > limit) throw outOfRange(`required_bytes ${required} is more than limit_bytes ${limit}`);
  const want = required || (limit ? Math.min(defaultBytes, limit) : defaultBytes);
  const rounded = Math.ceil(want / granularity) * granularity;
  if (limit && rounded > limit) {
    // Rounding up would cross the limit: round down instead if that still meets the requirement.
    const down = Math.floor(limit / granularity) * granularity;
    if (down >= required && down > 0) return down;
    throw outOfRange(`no size that is a multiple of ${granularity} bytes fits between ${required} and ${limit}`);
  }
  return rounded;
}

/** True when `size` satisfies the range (used to decide if an existing volume matches a retry). */
export function sizeFits(size: number, range: CapacityRange__Output | null | undefined): boolean {
  const required = Number(range?.required_bytes ?? 0);
  const limit = Number(range?.limit_bytes ?? 0);
  return size >= required && (!limit || size <= limit);
}
