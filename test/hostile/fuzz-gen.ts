import { Buffer } from 'node:buffer';

/**
 * A seeded generator of malformed and hostile CSI requests, for the fuzz test
 * and the regression tests of issue 16. The same seed and context give the
 * same requests in the same order, so a failure names its seed and index.
 *
 * Each request starts from a well-formed one of its RPC and gets defects:
 * hostile ids, node ids, names, parameters, capabilities, capacities, paths,
 * secrets, page tokens, or bytes that are no protobuf at all. Every defect
 * carries the codes the CSI spec gives for it; the answer must be one of the
 * codes of the request's defects (any of them: the driver may check fields
 * in any order). Benign variations (an odd but legal volume name, an unknown
 * secret key) keep the codes of the well-formed request. A few requests are
 * well-formed ones around the volumes made before the fuzzing, so the fuzzer
 * reaches past the edge checks.
 *
 * Never generated, because the spec makes them legitimately destructive:
 * DeleteVolume/DeleteSnapshot of the pre-made objects, unstage/unpublish of
 * their real paths, ControllerUnpublish of their real node, staging them a
 * second time elsewhere, and any request that names the sentinel mount point
 * itself.
 */

export type Backend = 'rbd' | 'cephfs' | 's3';
export const BACKENDS: readonly Backend[] = ['rbd', 'cephfs', 's3'];
export type Service = 'Identity' | 'Controller' | 'Node';

/** A volume made before the fuzzing: staged and published on the node, with one snapshot. */
export interface FuzzVolume {
  id: string;
  snapshotId: string;
  staging: string;
  target: string;
  /** The capability it was created and published with. */
  cap: Cap;
  capacity: number;
  volumeContext: Record<string, string>;
  publishContext: Record<string, string>;
}

export interface FuzzContext {
  /** The node id of the driver under test. */
  nodeId: string;
  /** The driver's own directory: node requests may create paths only in here. */
  sandbox: string;
  /** Files, non-empty directories and a tmpfs mount outside the sandbox (plus one inside it) that nothing may touch. */
  sentinels: { root: string; file: string; dir: string; mount: string; mountFile: string; mountDir: string; inSandbox: string };
  volumes: Partial<Record<Backend, FuzzVolume>>;
  /** Secrets that work, per backend. */
  secrets: Record<Backend, Record<string, string>>;
  /** StorageClass parameters that work, per backend. */
  params: Record<Backend, Record<string, string>>;
  /** Put into odd secret values: it must never show in the driver's log or in an answer. */
  secretMarker: string;
}

export interface FuzzRequest {
  index: number;
  service: Service;
  rpc: string;
  backend: Backend | '-';
  /** The request object (for the generated client), or raw bytes sent as the request. */
  req?: Record<string, unknown>;
  raw?: Buffer;
  /** Codes the spec allows for this request; undefined: any code but INTERNAL and UNKNOWN. */
  expect?: string[];
  defects: string[];
  /** What the driver may lock on: another request in flight on one of these may be answered ABORTED. */
  lockKeys: string[];
}

export interface GenOptions {
  /** Only these backends (default: those in ctx.volumes, else all). */
  backends?: Backend[];
  /** Only these RPCs. */
  rpcs?: string[];
  /** Also send bytes that are no protobuf (default true). */
  raw?: boolean;
}

// ---------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------

/** mulberry32: small, fast, and the same on every machine. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  hex(n: number): string {
    let s = '';
    for (let i = 0; i < n; i++) s += '0123456789abcdef'[this.int(16)];
    return s;
  }
  /** Picks by weight from [item, weight] pairs. */
  weighted<T>(items: ReadonlyArray<readonly [T, number]>): T {
    const total = items.reduce((s, [, w]) => s + w, 0);
    let r = this.next() * total;
    for (const [item, w] of items) {
      if ((r -= w) < 0) return item;
    }
    return items[items.length - 1]![0];
  }
}

/** The seed from STRATA_FUZZ_SEED (a number, or any text hashed to one), else the fallback. */
export function seedFrom(env: string | undefined, fallback: number): number {
  if (!env) return fallback >>> 0;
  if (/^\d+$/.test(env)) return Number(env) >>> 0;
  let h = 2166136261;
  for (const c of Buffer.from(env)) h = Math.imul(h ^ c, 16777619) >>> 0;
  return h;
}

// ---------------------------------------------------------------------------
// Codes
// ---------------------------------------------------------------------------

const OK = 'OK';
const IA = 'INVALID_ARGUMENT';
const NF = 'NOT_FOUND';
const AE = 'ALREADY_EXISTS';
const FP = 'FAILED_PRECONDITION';
const OOR = 'OUT_OF_RANGE';
const AB = 'ABORTED';
const RE = 'RESOURCE_EXHAUSTED';
const UNIMPL = 'UNIMPLEMENTED';
/** Refusals of credentials that are malformed or wrong. */
const SECRET_CODES = [IA, 'PERMISSION_DENIED', 'UNAUTHENTICATED', FP];

interface Defect {
  what: string;
  /** null: the spec gives no one code for it. */
  codes: string[] | null;
  /** A legal variation: the request keeps the codes of its well-formed form. */
  benign?: boolean;
}

interface Draft {
  rpc: string;
  service: Service;
  backend: Backend | '-';
  req: Record<string, unknown>;
  /** Codes of the well-formed request. */
  valid: string[] | null;
  defects: Defect[];
  lockKeys: string[];
}

/** The codes a draft may be answered with: those of its real defects, or of its well-formed form. */
export function expectedCodes(valid: string[] | null, defects: Defect[]): string[] | undefined {
  const real = defects.filter((d) => !d.benign);
  const sets = real.length ? real.map((d) => d.codes) : [valid, ...defects.map((d) => d.codes)];
  if (sets.some((s) => s === null)) return undefined;
  return [...new Set(sets.flat() as string[])].sort();
}

// ---------------------------------------------------------------------------
// Hostile material
// ---------------------------------------------------------------------------

export const ASTRAL = ['\u{1F600}', '\u{10FFFF}', '\u{1D11E}', '\u{E0001}', '\u{20000}'];
const MiB = 1024 * 1024;
let bigString: string | undefined;
/** One 1 MiB string, made once. */
const oneMiB = () => (bigString ??= '-'.repeat(2) + 'A'.repeat(MiB - 2));

/** Strings that must never reach a command line, a path or Ceph as they are. */
function hostileTokens(ctx: FuzzContext): string[] {
  const r = ctx.sentinels.root;
  return [
    '--help', '-h', '-', '--', '--id=admin', '--id', `--log-file=${r}/pwn-log`, `--log_file=${r}/pwn-log2`, `--admin-socket=${r}/pwn-asok`,
    `--keyring=${r}/pwn-keyring`, '--keyring=/etc/shadow', '--conf=/dev/null', '-c', '-p', '--pool=rbd', '--image-feature=journaling',
    '--format=xml', `--export=${r}/pwn-export`, '--no-progress', '-o', `-o${r}/pwn-o`, '--debug-ms=20', '--cluster=x', '--name=client.admin',
    '../', '..', '.', '../../../../../../../..' + `${r}/victim-dir`, '../../../../../../..' + r, 'a/b', '/', '/etc/passwd', r, ctx.sentinels.dir,
    '\0', 'a\0b', '\n', 'a\nb', 'lab\n', '\r\n', '\t', ' ', 'a b', ':', 'a:b', '=', 'a=b', 'key=value', ',', 'a,b', ';', `$(touch ${r}/pwn-shell)`,
    `\`touch ${r}/pwn-tick\``, '|', '&', '*', '?', '~', '%2e%2e%2f', '\\', '"', "'", '{}', '[]', 'CON', '\u0085', '\u2028', '\u00e9',
    ...ASTRAL, `x${ASTRAL[0]}y`, '\uD800', 'a\uDFFFb', 'A'.repeat(129), 'a'.repeat(300), `csi-vol-${'A'.repeat(32)}`, `csi-vol-${'0'.repeat(31)}`,
    `csi-vol-${'0'.repeat(33)}`, `csi-snap-${'0'.repeat(32)}`, `csi-vol-${'0'.repeat(32)}\n`, '_', 'UPPER', 'rbd ', ' rbd',
  ];
}

/** Names that are odd but legal CSI names (at most 128 bytes). */
const ODD_NAME_TOKENS = ['nul\0byte', 'new\nline', '--opt', '-x', '../up', 'a/b', 'sp ace', `astral${ASTRAL[0]}`, 'colon:eq=', 'tab\t', '%00', '\uD800lone'];

/** Node ids that are no Kubernetes node name. */
function hostileNodeIds(): string[] {
  return [
    'node\n', 'node\nx', '\nnode-a', 'node:a', 'node=a', 'a=b:c', `node-${ASTRAL[0]}`, ASTRAL[1]!, `${ASTRAL[3]}`, 'n'.repeat(254), 'n'.repeat(300),
    `${'a.'.repeat(126)}ab`, '-node', 'node-', 'node..a', '.node', '../node', 'node/a', '/', ' ', 'node a', '\0', 'node\0', '\t', 'node_a',
    '--id=admin', '-h', 'node\uD800', 'a,b', 'node;rm', '*', `node-${'\u00e9'}`,
  ];
}

// ---------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------

type IdClass = 'empty' | 'hostile' | 'overlong' | 'nonexistent' | 'wrongKind' | 'real';

// The id grammar of issue 16 (written out here again, so the test does not take the driver's word for it).
const CLUSTER = '[A-Za-z0-9][A-Za-z0-9_.-]{0,31}';
const NAME = '[A-Za-z0-9][A-Za-z0-9_.-]{0,62}';
const HEX = '[0-9a-f]{32}';
// RBD ids may name a RADOS namespace between pool and image (the radosNamespace parameter): a cephfs id with its
// header changed to rbd is then a well-formed RBD id of nothing (pool <fs>, namespace <group>), not a malformed one.
const RBD_NS = `(?::[A-Za-z0-9][A-Za-z0-9_.-]{0,31})?`;
const isBucket = (b: string) => /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(b) && !/\.\.|\.-|-\./.test(b) && !/^\d+\.\d+\.\d+\.\d+$/.test(b);
const ID_FORMS: Record<'v' | 's', RegExp[]> = {
  v: [new RegExp(`^s1:v:rbd:${CLUSTER}:${NAME}${RBD_NS}:csi-vol-${HEX}$`), new RegExp(`^s1:v:cephfs:${CLUSTER}:${NAME}:${NAME}:csi-vol-${HEX}$`), new RegExp(`^s1:v:s3:${CLUSTER}:([^:]+):${HEX}$`)],
  s: [new RegExp(`^s1:s:rbd:${CLUSTER}:${NAME}${RBD_NS}:csi-snap-${HEX}$`), new RegExp(`^s1:s:cephfs:${CLUSTER}:${NAME}:${NAME}:csi-vol-${HEX}:csi-snap-${HEX}$`), new RegExp(`^s1:s:s3:${CLUSTER}:([^:]+):${HEX}$`)],
};

/** True when `id` has the form of one of ours (it may still name nothing). */
export function wellFormedId(id: string, kind: 'v' | 's'): boolean {
  if (Buffer.byteLength(id) > 128) return false;
  return ID_FORMS[kind].some((re) => {
    const m = re.exec(id);
    return !!m && (m[1] === undefined || m[1] === '_' || isBucket(m[1]));
  });
}
interface IdPick {
  id: string;
  cls: IdClass;
  what: string;
}

function validShapeId(rng: Rng, b: Backend, kind: 'v' | 's'): string {
  const cluster = rng.weighted([['lab', 6], ['nolab', 1], ['lab.2', 1]] as const);
  const h = rng.hex(32);
  switch (b) {
    case 'rbd': {
      const pool = rng.weighted([['rbd', 6], ['nopool', 1], ['rbd.x', 1]] as const);
      return `s1:${kind}:rbd:${cluster}:${pool}:${kind === 'v' ? 'csi-vol' : 'csi-snap'}-${h}`;
    }
    case 'cephfs': {
      const fs = rng.weighted([['cephfs', 6], ['nofs', 1]] as const);
      const group = rng.weighted([['csi', 6], ['nogroup', 1]] as const);
      const vol = `s1:${kind}:cephfs:${cluster}:${fs}:${group}:csi-vol-${h}`;
      return kind === 'v' ? vol : `${vol}:csi-snap-${rng.hex(32)}`;
    }
    case 's3': {
      const bucket = rng.weighted([['_', 6], [`nobucket-${rng.hex(8)}`, 1]] as const);
      return `s1:${kind}:s3:${cluster}:${bucket}:${h}`;
    }
  }
}

/** A well-formed id of something that exists (or the shape of one when nothing does). */
function baseId(rng: Rng, ctx: FuzzContext, b: Backend, kind: 'v' | 's'): string {
  const v = ctx.volumes[b];
  if (v && rng.chance(0.7)) return kind === 'v' ? v.id : v.snapshotId;
  return validShapeId(rng, b, kind);
}

function hostileId(rng: Rng, ctx: FuzzContext, b: Backend, kind: 'v' | 's'): IdPick {
  const base = baseId(rng, ctx, b, kind);
  const parts = base.split(':');
  const tok = rng.pick(hostileTokens(ctx));
  const how = rng.int(10);
  let id: string;
  let what: string;
  switch (how) {
    case 0:
    case 1:
    case 2: {
      const i = 3 + rng.int(parts.length - 3);
      const p = [...parts];
      p[i] = rng.chance(0.5) ? tok : rng.chance(0.5) ? tok + p[i] : p[i] + tok;
      id = p.join(':');
      what = `part ${i} made hostile`;
      break;
    }
    case 3:
      id = base + rng.pick(['\n', ' ', '\0', ':', ':x', '/..', '/', ASTRAL[0], '\t', ':--help', '=', '\r']);
      what = 'a real id with a suffix';
      break;
    case 4:
      id = rng.pick([' ', '\n', '--', '-', '../', '/', ASTRAL[0]]) + base;
      what = 'a real id with a prefix';
      break;
    case 5: {
      const p = [...parts];
      if (rng.chance(0.5)) p.splice(3 + rng.int(p.length - 3), 1);
      else p.splice(3 + rng.int(p.length - 2), 0, rng.pick(['x', 'csi', '', tok]));
      id = p.join(':');
      what = 'a part too many or too few';
      break;
    }
    case 6: {
      const p = [...parts];
      const i = rng.int(3);
      p[i] = i === 0 ? rng.pick(['s2', 'S1', 's0', '', 's1 ']) : i === 1 ? rng.pick(['x', 'V', '', kind === 'v' ? 's' : 'v']) : rng.pick([...BACKENDS.filter((o) => o !== b), 'RBD', 'ceph', '', 'nfs']);
      id = p.join(':');
      what = `header part ${i} changed`;
      break;
    }
    case 7:
      id = tok;
      what = 'a hostile token as the whole id';
      break;
    case 8:
      id = base.toUpperCase();
      what = 'upper case';
      break;
    default:
      id = parts.map((p, i) => (i < 3 || !rng.chance(0.4) ? p : rng.pick(['..', '.', '-x', tok]))).join(':');
      what = 'several parts replaced';
  }
  if (id === base) id = base + '\n';
  // Some replacements are well-formed after all (a pool named "UPPER"): those are ids of nothing.
  const cls: IdClass = Buffer.byteLength(id) > 128 ? 'overlong' : !id ? 'empty' : wellFormedId(id, kind) ? 'nonexistent' : 'hostile';
  return { id, cls, what };
}

/** A volume (kind v) or snapshot (kind s) id for a field, of any class. */
function pickId(rng: Rng, ctx: FuzzContext, b: Backend, kind: 'v' | 's', realWeight: number): IdPick {
  const real = kind === 'v' ? ctx.volumes[b]?.id : ctx.volumes[b]?.snapshotId;
  const cls = rng.weighted<IdClass>([
    ['hostile', 70],
    ['overlong', 5],
    ['empty', 5],
    ['nonexistent', 6],
    ['wrongKind', 6],
    ['real', real ? realWeight : 0],
  ]);
  switch (cls) {
    case 'hostile':
      return hostileId(rng, ctx, b, kind);
    case 'overlong': {
      const base = baseId(rng, ctx, b, kind);
      const id = rng.chance(0.1) ? oneMiB() : rng.chance(0.5) ? base + ':' + 'x'.repeat(130) : base.replace(/[0-9a-f]{32}$/, (h) => h + 'a'.repeat(100));
      return { id, cls: 'overlong', what: `${Buffer.byteLength(id)} bytes` };
    }
    case 'empty':
      return { id: '', cls: 'empty', what: 'empty' };
    case 'nonexistent':
      return { id: validShapeId(rng, b, kind), cls: 'nonexistent', what: 'well-formed, of nothing that exists' };
    case 'wrongKind': {
      const other = kind === 'v' ? 's' : 'v';
      const ob = rng.pick(BACKENDS);
      const existing = other === 'v' ? ctx.volumes[ob]?.id : ctx.volumes[ob]?.snapshotId;
      return { id: existing && rng.chance(0.7) ? existing : validShapeId(rng, ob, other), cls: 'wrongKind', what: `a ${other === 'v' ? 'volume' : 'snapshot'} id where a ${kind === 'v' ? 'volume' : 'snapshot'} id goes` };
    }
    default:
      return { id: real!, cls: 'real', what: 'the pre-made one' };
  }
}

/** How an RPC answers an id of nothing: looked up (NOT_FOUND), removed (OK), or unpublished/unstaged (OK or NOT_FOUND). */
type IdUse = 'lookup' | 'remove' | 'undo' | 'filter' | 'source';
function idDefect(field: string, p: IdPick, use: IdUse): Defect | undefined {
  if (p.cls === 'real') return undefined;
  const what = `${field}: ${p.cls} (${p.what})`;
  if (p.cls === 'empty') return use === 'filter' ? { what, codes: [OK], benign: true } : { what, codes: [IA] };
  const unknown = { lookup: [NF], remove: [OK], undo: [OK, NF], filter: [OK], source: [NF, IA] }[use];
  return { what, codes: p.cls === 'overlong' ? [...unknown, IA] : unknown };
}

/**
 * A hostile id can turn out a well-formed id of another backend than the request was built for (a CephFS id with
 * its header changed to rbd reads as an RBD id in a namespace), while the capability stays the one of the
 * request's backend: a second defect, as the id's backend may not support it (RBD refuses a file system written
 * from several nodes). The spec's code for that is INVALID_ARGUMENT, and the driver may check it before the id.
 */
function foreignCap(x: Defect | undefined, p: IdPick, b: Backend): Defect | undefined {
  if (!x || p.cls !== 'nonexistent' || p.id.split(':')[2] === b) return x;
  return { what: `${x.what}, of backend ${p.id.split(':')[2]} with a capability for ${b}`, codes: [...new Set([...x.codes!, IA])] };
}

// ---------------------------------------------------------------------------
// Capabilities, capacities, parameters, secrets, paths
// ---------------------------------------------------------------------------

export interface Cap {
  block?: Record<string, never>;
  mount?: { fs_type: string; mount_flags: string[]; volume_mount_group?: string };
  access_mode?: { mode: string | number };
}

export function goodCap(b: Backend): Cap {
  return b === 'rbd'
    ? { mount: { fs_type: 'ext4', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }
    : { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } };
}

/** One mount option and nothing else: no "," (more options), no blank, control, quote or shell character, not option-like, at most 128 bytes. */
const PLAIN_MOUNT_OPTION = /^[A-Za-z0-9_][A-Za-z0-9_.:/=+@-]{0,127}$/;

/** A capability with one defect. Node RPCs and controller RPCs alike must refuse them. */
function badCap(rng: Rng, ctx: FuzzContext, b: Backend, base: Cap): { cap: Cap | undefined; defect: Defect } {
  const mode = base.access_mode?.mode ?? 'SINGLE_NODE_WRITER';
  const mount = base.mount ?? { fs_type: '', mount_flags: [] };
  const tok = () => rng.pick(hostileTokens(ctx));
  const choice = rng.int(b === 'rbd' ? 10 : 11);
  const d = (what: string, codes: string[] = [IA]) => ({ what: `capability: ${what}`, codes });
  switch (choice) {
    case 0:
      return { cap: undefined, defect: d('missing') };
    case 1:
      return { cap: { access_mode: { mode } }, defect: d('neither block nor mount') };
    case 2:
      return { cap: { block: {}, mount, access_mode: { mode } }, defect: d('both block and mount') };
    case 3:
      return { cap: { mount }, defect: d('no access mode') };
    case 4:
      return { cap: { mount, access_mode: { mode: 'UNKNOWN' } }, defect: d('access mode UNKNOWN') };
    case 5:
    case 6: {
      const m = rng.pick([99, 8, -1, 2147483647, -2147483648, 1000]);
      return { cap: { mount, access_mode: { mode: m } }, defect: d(`access mode ${m}, outside the enum`) };
    }
    case 7: {
      const t = rng.pick([tok(), '--type=ext4', 'ext4 ', 'ext4\n', '../xfs', 'EXT4', 'x'.repeat(40), `ext4${ASTRAL[0]}`]);
      return { cap: { mount: { ...mount, fs_type: t }, access_mode: { mode } }, defect: d(`fs_type ${JSON.stringify(t)}`) };
    }
    case 8: {
      const f = rng.pick(['--bind', '-o', 'rw,exec', 'ro,remount', 'a b', '\n', '\0', '', '../x', 'x'.repeat(300), `${ASTRAL[0]}`, '-t', 'uid=0,gid=0', tok()]);
      const what = `mount flag ${JSON.stringify(f.slice(0, 40))}`;
      // Some hostile tokens ("UPPER", "a=b", "csi-vol-…") are one plain mount option: the spec does not make an option
      // the plugin does not know an error, so it may be refused (INVALID_ARGUMENT) or left to mount at the node.
      if (PLAIN_MOUNT_OPTION.test(f)) return { cap: { mount: { ...mount, mount_flags: ['noatime', f] }, access_mode: { mode } }, defect: { ...d(`plain ${what}`, [IA, OK]), benign: true } };
      return { cap: { mount: { ...mount, mount_flags: ['noatime', f] }, access_mode: { mode } }, defect: d(what) };
    }
    case 9: {
      const g = rng.pick(['-1', 'root', '--x', '1\n', 'x'.repeat(200), '0x10']);
      return { cap: { mount: { ...mount, volume_mount_group: g }, access_mode: { mode } }, defect: d(`volume_mount_group ${JSON.stringify(g.slice(0, 20))}`) };
    }
    default:
      return { cap: { block: {}, access_mode: { mode } }, defect: d(`raw block on ${b}`) };
  }
}

function badCapacity(rng: Rng, b?: Backend): { range: Record<string, number>; defect: Defect } {
  const c = rng.int(6);
  const d = (what: string, codes: string[]) => ({ what: `capacity_range: ${what}`, codes });
  switch (c) {
    case 0:
      return { range: { required_bytes: -rng.pick([1, MiB, 2 ** 62]) }, defect: d('negative required_bytes', [IA, OOR]) };
    case 1:
      return { range: { required_bytes: MiB, limit_bytes: -1 }, defect: d('negative limit_bytes', [IA, OOR]) };
    case 2:
      return { range: { required_bytes: 64 * MiB, limit_bytes: MiB }, defect: d('limit below required', [OOR, IA]) };
    case 3:
      // S3 sizes are counted in bytes, so any positive limit fits there; RBD and CephFS round to MiB.
      if (b === 's3') return { range: { required_bytes: 0, limit_bytes: -rng.pick([1, 4095]) }, defect: d('negative limit_bytes', [IA, OOR]) };
      return { range: { required_bytes: 0, limit_bytes: rng.pick([1, 511, 4095]) }, defect: d('limit below any size the backend can make', [OOR, IA]) };
    case 4:
      return { range: { required_bytes: rng.pick([2 ** 62, 2 ** 63 - 1, 9.2e18]) }, defect: d('more bytes than any volume can hold', [OOR, RE, IA]) };
    default:
      return { range: { required_bytes: rng.pick([2 ** 63 - 1, 2 ** 60]), limit_bytes: rng.pick([2 ** 63 - 1, 2 ** 61]) }, defect: d('huge range', [OOR, RE, IA]) };
  }
}

/** StorageClass parameters with one defect; every one is INVALID_ARGUMENT. */
function badParams(rng: Rng, ctx: FuzzContext, b: Backend): { params: Record<string, string>; defect: Defect } {
  const p: Record<string, string> = { ...ctx.params[b] };
  const tok = () => rng.pick(hostileTokens(ctx));
  const set = (k: string, v: string) => {
    p[k] = v;
    return { params: p, defect: { what: `parameter ${k}=${JSON.stringify(v.slice(0, 60))}`, codes: [IA] } };
  };
  const common = rng.int(3);
  if (rng.chance(0.35)) {
    if (common < 2 && rng.chance(0.2)) {
      const k = common === 0 ? 'backend' : 'clusterID';
      delete p[k];
      return { params: p, defect: { what: `parameter ${k} missing`, codes: [IA] } };
    }
    if (common === 0) return set('backend', rng.pick(['nfs', 'RBD', '--rbd', 'rbd\n', ' rbd', tok()]));
    if (common === 1) return set('clusterID', rng.pick(['nolab', 'lab\n', '--lab', '../lab', 'LAB', tok()]));
    const k = rng.pick(['--pool', 'pool\n', 'Pool', 'x'.repeat(300), ASTRAL[0]!, 'csi.storage.k8s.io', 'unknown', '', 'backend ', `${tok()}`]);
    if (Object.prototype.hasOwnProperty.call(ctx.params[b], k)) return set('clusterID', 'nolab');
    return set(k, 'x');
  }
  switch (b) {
    case 'rbd': {
      const k = rng.pick(['pool', 'pool', 'dataPool', 'imageFeatures', 'mounter', 'fsType', 'csi.storage.k8s.io/fstype']);
      const v = {
        pool: () => rng.pick(['-x', '--pool=x', '../rbd', 'rbd/x', 'rbd x', '.rbd', 'r'.repeat(64), tok()]),
        dataPool: () => rng.pick(['-x', '../', 'a/b', tok()]),
        imageFeatures: () => rng.pick(['layering,--x', 'journaling', 'layering,\0', 'layering,exclusive-lock,bogus', '--image-feature=x', 'layering;x']),
        mounter: () => rng.pick(['--x', 'kernel', 'rbd-fuse\n', tok()]),
        fsType: () => rng.pick(['btrfs', '--x', 'ext4\n', '../ext4', tok()]),
        'csi.storage.k8s.io/fstype': () => rng.pick(['btrfs', '--x', 'vfat', tok()]),
      }[k]!();
      return set(k, v);
    }
    case 'cephfs': {
      const k = rng.pick(['fsName', 'fsName', 'subvolumeGroup', 'pool', 'mounter', 'kernelMountOptions', 'fuseMountOptions']);
      const v = {
        fsName: () => rng.pick(['-x', '--fs=cephfs', '../cephfs', 'a/b', 'f'.repeat(64), tok()]),
        subvolumeGroup: () => rng.pick(['-x', '..', '../csi', 'csi/x', 'csi\n', tok()]),
        pool: () => rng.pick(['-x', '../', 'a b', tok()]),
        mounter: () => rng.pick(['nfs', '--x', 'fuse\n', tok()]),
        kernelMountOptions: () => rng.pick(['a b', 'rw;x', 'x\ny', '$(x)', '\0']),
        fuseMountOptions: () => rng.pick(['a b', 'rw;x', 'x\ny', '$(x)', '\0']),
      }[k]!();
      // A token that is a Ceph name ("UPPER", "csi-vol-0…") names a subvolume group the driver makes on first use, as
      // a StorageClass may: a legal parameter, which a driver that refused groups it did not find would answer INVALID_ARGUMENT.
      if (k === 'subvolumeGroup' && new RegExp(`^${NAME}$`).test(v)) return { params: { ...p, [k]: v }, defect: { what: `parameter ${k}=${JSON.stringify(v)} (a group not made yet)`, codes: [OK, IA], benign: true } };
      return set(k, v);
    }
    case 's3': {
      const k = rng.pick(['bucket', 'bucket', 'bucket', 'mounter', 'uid', 'gid', 'mode', 'mountOptions']);
      const v = {
        bucket: () => rng.pick(['UPPER', 'ab', 'a'.repeat(64), 'a..b', '-abc', 'abc-', '192.168.5.4', 'a_b', '../x', 'a/b', 'a.-b', 'bucket\n', '.abc', tok()]),
        mounter: () => rng.pick(['s3backer', '--x', 'goofys', tok()]),
        uid: () => rng.pick(['-1', 'root', '99999999999', '1e3', '0x10', ' 1']),
        gid: () => rng.pick(['-1', 'root', '4294967296', '1.5']),
        mode: () => rng.pick(['9999', '0x1ff', '-1', '07777', 'rwx']),
        mountOptions: () => rng.pick(['passwd_file=/etc/shadow', '--config=/x', 'a b', 'url=http://evil', 'allow_other', 'x;y', 'x\ny', 'rc', '--rc-addr=:1']),
      }[k]!();
      return set(k, v);
    }
  }
}

function badSecrets(rng: Rng, ctx: FuzzContext, b: Backend): { secrets: Record<string, string>; defect: Defect } {
  const s: Record<string, string> = { ...ctx.secrets[b] };
  const m = ctx.secretMarker;
  const [idKey, keyKey] = b === 's3' ? ['accessKeyID', 'secretAccessKey'] : ['userID', 'userKey'];
  const c = rng.int(6);
  const d = (what: string, codes: string[] | null = SECRET_CODES, benign = false) => ({ secrets: s, defect: { what: `secrets: ${what}`, codes, benign } });
  switch (c) {
    case 0:
      s[idKey!] = rng.pick(['--id=admin', 'admin\n', '../admin', 'client.admin', 'a b', '-h', `admin${ASTRAL[0]}`, 'x'.repeat(300), '\0', `--keyring=${ctx.sentinels.root}/pwn-kr`]);
      return d(`${idKey} ${JSON.stringify(s[idKey!]!.slice(0, 40))}`);
    case 1:
      s[keyKey!] = rng.pick([`--key=${m}`, `${m}\n--id admin`, `AQ${m}==`, `${m}\0x`, `${m} ${'k'.repeat(200)}`, `-${m}`, `${m}${ASTRAL[0]}`]);
      return d(`${keyKey} malformed (marked)`);
    case 2:
      s[keyKey!] = rng.chance(0.2) ? m + 'K'.repeat(MiB) : `${m}WRONGKEY`;
      return d(`${keyKey} wrong (marked)`, [...SECRET_CODES, NF]);
    case 3:
      delete s[keyKey!];
      return d(`${keyKey} missing`);
    case 4:
      s[rng.pick(['--x', 'token\n', 'x'.repeat(200), ASTRAL[0]!])] = m;
      return d('an unknown key', null, true);
    default:
      s[idKey!] = '';
      return d(`${idKey} empty`);
  }
}

/** Paths a node request must refuse before touching anything: not absolute, not normalised, or with NUL. */
function badPath(rng: Rng, ctx: FuzzContext): { path: string; defect: Defect } {
  const sb = ctx.sandbox;
  const s = ctx.sentinels;
  const p = rng.pick([
    'relative/path',
    'target',
    './x',
    `${sb}/x/../../${s.root.split('/').pop()}`,
    `${sb}/../../../..${s.file}`,
    `${sb}/a/../../../../../../..${s.dir}`,
    `${sb}/a/../../../../../../..${s.mount}`,
    `${sb}//x`,
    `/${sb}`,
    `${sb}/./x`,
    `${sb}/x/.`,
    `${sb}/x/..`,
    `${sb}/x\0/y`,
    `${s.file}\0`,
    `..${sb}`,
    '',
    ' ',
    `${sb}/${'x'.repeat(5000)}`,
  ]);
  return { path: p, defect: { what: `path ${JSON.stringify(p.slice(0, 100))}`, codes: [IA] } };
}

/** Paths outside the sandbox that exist and hold content: named directly, nothing there may change. */
/**
 * The path an unstage or unpublish removes from: kept, made hostile (one in three), or pointed at a
 * sentinel with content (one in three), whose survival the sentinel check decides whatever the answer.
 */
function removalPath(rng: Rng, ctx: FuzzContext, d: Draft, req: Record<string, unknown>, field: string, what: string): void {
  const c = rng.int(3);
  if (c === 0) {
    const bp = badPath(rng, ctx);
    req[field] = bp.path;
    add(d, bp.defect);
  } else if (c === 1) {
    req[field] = sentinelPath(rng, ctx);
    add(d, { what: `${what} holds content that is not a mount`, codes: null });
  }
}

function sentinelPath(rng: Rng, ctx: FuzzContext): string {
  const s = ctx.sentinels;
  return rng.pick([s.file, s.dir, s.mountFile, s.mountDir, s.inSandbox]);
}

/** The few extra targets the fuzz may publish a pre-made volume to (read-only ones apart, so a retry is idempotent). */
function extraTarget(rng: Rng, ctx: FuzzContext, b: Backend, readonly: boolean): string {
  return `${ctx.sandbox}/fuzz/publish-${b}-${readonly ? 'ro' : 'rw'}-${rng.int(2)}`;
}

/** A fresh path inside the sandbox that nothing holds. */
function freshPath(rng: Rng, ctx: FuzzContext, what: string): string {
  return `${ctx.sandbox}/fuzz/${what}-${rng.hex(8)}`;
}

function hostileContext(rng: Rng, ctx: FuzzContext, b: Backend): { vc: Record<string, string>; what: string } {
  const r = ctx.sentinels.root;
  const options: Array<Record<string, string>> = [
    { subvolumePath: '/' },
    { subvolumePath: '/volumes/../..' },
    { subvolumePath: '--help' },
    { subvolumePath: r },
    { bucket: 'other-bucket', prefix: 'fs/' },
    { bucket: '..', prefix: '../../' },
    { prefix: '../../' },
    { prefix: '/' },
    { mounter: '--x' },
    { mounter: 's3backer' },
    { fsType: '--x' },
    { imageName: '--export=/tmp/x' },
    { pool: '../' },
    { mountOptions: 'passwd_file=/etc/shadow' },
    { fuseMountOptions: 'a b' },
    { uid: '-1', gid: 'root', mode: '7777' },
    { [rng.pick(['--x', '\n', ASTRAL[0]!])]: rng.pick(hostileTokens(ctx)) },
  ];
  const extra = rng.pick(options);
  const vc = { ...(ctx.volumes[b]?.volumeContext ?? {}), ...extra };
  return { vc, what: `volume_context ${JSON.stringify(extra).slice(0, 80)}` };
}

// ---------------------------------------------------------------------------
// RPC builders
// ---------------------------------------------------------------------------

type Builder = (rng: Rng, ctx: FuzzContext, b: Backend) => Draft;

const draft = (rpc: string, service: Service, backend: Backend | '-', req: Record<string, unknown>, valid: string[] | null, lockKeys: string[] = []): Draft => ({
  rpc,
  service,
  backend,
  req,
  valid,
  defects: [],
  lockKeys,
});

const add = (d: Draft, x: Defect | undefined) => {
  if (x) d.defects.push(x);
};

/** Names a CreateVolume or CreateSnapshot may legitimately make: a small pool, so the fuzz makes a bounded number of objects. */
function oddName(rng: Rng, b: Backend, what: 'vol' | 'snap'): { name: string; defect?: Defect } {
  const tok = rng.pick(ODD_NAME_TOKENS);
  const name = `fz-${b}-${what}-${tok}`;
  return { name, defect: { what: `name ${JSON.stringify(name)} (odd but legal)`, codes: [OK, AE, IA], benign: true } };
}

const BUILDERS: Record<string, { service: Service; weight: number; perBackend: boolean; build: Builder }> = {
  GetPluginInfo: { service: 'Identity', weight: 1, perBackend: false, build: () => draft('GetPluginInfo', 'Identity', '-', {}, [OK]) },
  GetPluginCapabilities: { service: 'Identity', weight: 1, perBackend: false, build: () => draft('GetPluginCapabilities', 'Identity', '-', {}, [OK]) },
  Probe: { service: 'Identity', weight: 1, perBackend: false, build: () => draft('Probe', 'Identity', '-', {}, [OK]) },
  ControllerGetCapabilities: { service: 'Controller', weight: 1, perBackend: false, build: () => draft('ControllerGetCapabilities', 'Controller', '-', {}, [OK]) },
  NodeGetCapabilities: { service: 'Node', weight: 1, perBackend: false, build: () => draft('NodeGetCapabilities', 'Node', '-', {}, [OK]) },
  NodeGetInfo: { service: 'Node', weight: 1, perBackend: false, build: () => draft('NodeGetInfo', 'Node', '-', {}, [OK]) },

  CreateVolume: {
    service: 'Controller',
    weight: 10,
    perBackend: true,
    build(rng, ctx, b) {
      // Well-formed creates come from a small pool of odd names; hostile ones get fresh names, so ALREADY_EXISTS is never their answer.
      const benign = rng.chance(0.05);
      const req: Record<string, unknown> = {
        name: `fz-bad-${rng.hex(16)}`,
        capacity_range: { required_bytes: 16 * MiB },
        volume_capabilities: [goodCap(b)],
        parameters: { ...ctx.params[b] },
        secrets: { ...ctx.secrets[b] },
      };
      const d = draft('CreateVolume', 'Controller', b, req, [OK, AE]);
      if (benign) {
        const n = oddName(rng, b, 'vol');
        req.name = n.name;
        add(d, n.defect);
        req.capacity_range = { required_bytes: rng.pick([MiB, 16 * MiB]) };
        if (rng.chance(0.3)) {
          (req.parameters as Record<string, string>)['csi.storage.k8s.io/pvc/name'] = rng.pick(['../\n', '--x', ASTRAL[0]!]);
          add(d, { what: 'sidecar parameter with odd value', codes: [OK, AE, IA], benign: true });
        }
        d.lockKeys = [`name:${req.name}`];
        return d;
      }
      const n = 1 + rng.int(rng.chance(0.3) ? 3 : 1);
      // Each field is made hostile once: a second draw for it would replace the value the first defect describes.
      const FIELD_OF_CASE = ['name', 'caps', 'caps', 'capacity', 'params', 'params', 'secrets', 'source', 'source'];
      const mutated = new Set<string>();
      for (let i = 0; i < n; i++) {
        const c = rng.int(9);
        if (mutated.has(FIELD_OF_CASE[c]!)) continue;
        mutated.add(FIELD_OF_CASE[c]!);
        switch (c) {
          case 0: {
            const v = rng.pick(['', 'A'.repeat(129), 'n'.repeat(300), oneMiB()]);
            req.name = v;
            add(d, { what: `name of ${Buffer.byteLength(v)} bytes`, codes: [IA] });
            break;
          }
          case 1:
          case 2: {
            const c = badCap(rng, ctx, b, goodCap(b));
            req.volume_capabilities = rng.chance(0.3) ? [goodCap(b), c.cap ?? {}] : c.cap ? [c.cap] : [];
            add(d, c.defect);
            break;
          }
          case 3: {
            const c = badCapacity(rng, b);
            req.capacity_range = c.range;
            add(d, c.defect);
            break;
          }
          case 4:
          case 5: {
            const p = badParams(rng, ctx, b);
            req.parameters = p.params;
            add(d, p.defect);
            break;
          }
          case 6: {
            const s = badSecrets(rng, ctx, b);
            req.secrets = s.secrets;
            add(d, s.defect);
            break;
          }
          case 7: {
            const kind = rng.chance(0.5) ? 's' : 'v';
            const pick = pickId(rng, ctx, rng.chance(0.7) ? b : rng.pick(BACKENDS), kind, 0);
            req.volume_content_source = kind === 's' ? { snapshot: { snapshot_id: pick.id } } : { volume: { volume_id: pick.id } };
            add(d, idDefect(`volume_content_source.${kind === 's' ? 'snapshot' : 'volume'}`, pick, 'source') ?? { what: 'content source', codes: [NF, IA] });
            break;
          }
          default: {
            const ob = rng.pick(BACKENDS.filter((o) => o !== b && ctx.volumes[o]));
            if (ob && rng.chance(0.6)) {
              req.volume_content_source = rng.chance(0.5) ? { snapshot: { snapshot_id: ctx.volumes[ob]!.snapshotId } } : { volume: { volume_id: ctx.volumes[ob]!.id } };
              add(d, { what: `content source of backend ${ob}`, codes: [IA, NF] });
            } else {
              req.volume_content_source = {};
              add(d, { what: 'content source that names nothing', codes: [IA] });
            }
          }
        }
      }
      d.lockKeys = [`name:${req.name}`];
      return d;
    },
  },

  DeleteVolume: {
    service: 'Controller',
    weight: 6,
    perBackend: true,
    build(rng, ctx, b) {
      // Never the real id: deleting a pre-made volume is a legitimate request.
      const p = pickId(rng, ctx, b, 'v', 0);
      const d = draft('DeleteVolume', 'Controller', b, { volume_id: p.id, secrets: { ...ctx.secrets[b] } }, [OK], [p.id]);
      add(d, idDefect('volume_id', p, 'remove'));
      if (rng.chance(0.2)) {
        const s = badSecrets(rng, ctx, b);
        d.req.secrets = s.secrets;
        add(d, s.defect);
      }
      return d;
    },
  },

  ControllerPublishVolume: {
    service: 'Controller',
    weight: 9,
    perBackend: true,
    build(rng, ctx, b) {
      const v = ctx.volumes[b];
      const p = pickId(rng, ctx, b, 'v', 30);
      const cap = v?.cap ?? goodCap(b);
      const req: Record<string, unknown> = { volume_id: p.id, node_id: ctx.nodeId, volume_capability: cap, readonly: false, secrets: { ...ctx.secrets[b] }, volume_context: { ...(v?.volumeContext ?? {}) } };
      const d = draft('ControllerPublishVolume', 'Controller', b, req, [OK], [p.id]);
      add(d, foreignCap(idDefect('volume_id', p, 'lookup'), p, b));
      const n = p.cls === 'real' ? 1 : rng.int(2);
      for (let i = 0; i < n; i++) {
        const c = rng.int(p.cls === 'real' ? 8 : 6);
        if (c <= 2) {
          req.node_id = rng.pick(hostileNodeIds());
          add(d, { what: `node_id ${JSON.stringify(req.node_id)}`, codes: [IA] });
        } else if (c === 3) {
          const bc = badCap(rng, ctx, b, cap);
          req.volume_capability = bc.cap;
          add(d, bc.defect);
        } else if (c === 4) {
          req.node_id = '';
          add(d, { what: 'node_id empty', codes: [IA] });
        } else if (c === 5) {
          const s = badSecrets(rng, ctx, b);
          req.secrets = s.secrets;
          add(d, { ...s.defect, codes: s.defect.codes && [...s.defect.codes, OK] });
        } else if (c === 6) {
          req.readonly = true;
          add(d, { what: 'readonly, while published read-write to this node', codes: [AE] });
        } else {
          const hc = hostileContext(rng, ctx, b);
          req.volume_context = hc.vc;
          add(d, { what: hc.what, codes: [OK, IA], benign: true });
        }
      }
      return d;
    },
  },

  ControllerUnpublishVolume: {
    service: 'Controller',
    weight: 6,
    perBackend: true,
    build(rng, ctx, b) {
      const p = pickId(rng, ctx, b, 'v', 25);
      const d = draft('ControllerUnpublishVolume', 'Controller', b, { volume_id: p.id, node_id: 'node-zz', secrets: { ...ctx.secrets[b] } }, [OK], [p.id]);
      add(d, idDefect('volume_id', p, 'undo'));
      // The real volume only with a node it is not published to, or a node id that is none.
      if (p.cls === 'real' || rng.chance(0.6)) {
        d.req.node_id = rng.pick(hostileNodeIds());
        add(d, { what: `node_id ${JSON.stringify(d.req.node_id)}`, codes: [IA] });
      } else if (rng.chance(0.5)) d.req.node_id = '';
      if (rng.chance(0.15)) {
        const s = badSecrets(rng, ctx, b);
        d.req.secrets = s.secrets;
        add(d, { ...s.defect, codes: s.defect.codes && [...s.defect.codes, OK] });
      }
      return d;
    },
  },

  ValidateVolumeCapabilities: {
    service: 'Controller',
    weight: 6,
    perBackend: true,
    build(rng, ctx, b) {
      const v = ctx.volumes[b];
      const p = pickId(rng, ctx, b, 'v', 25);
      const req: Record<string, unknown> = { volume_id: p.id, volume_capabilities: [v?.cap ?? goodCap(b)], volume_context: { ...(v?.volumeContext ?? {}) }, parameters: { ...ctx.params[b] }, secrets: { ...ctx.secrets[b] } };
      const d = draft('ValidateVolumeCapabilities', 'Controller', b, req, [OK]);
      add(d, idDefect('volume_id', p, 'lookup'));
      if (p.cls !== 'real' || rng.chance(0.6)) {
        const c = rng.int(4);
        if (c <= 1) {
          const bc = badCap(rng, ctx, b, v?.cap ?? goodCap(b));
          req.volume_capabilities = bc.cap ? [bc.cap] : [];
          // Unsupported but well-formed capabilities are answered OK without confirmation.
          add(d, { ...bc.defect, codes: bc.defect.what.includes('raw block') ? [IA, OK] : bc.defect.codes });
        } else if (c === 2) {
          const pp = badParams(rng, ctx, b);
          req.parameters = pp.params;
          add(d, { ...pp.defect, codes: [IA, OK] });
        } else {
          const s = badSecrets(rng, ctx, b);
          req.secrets = s.secrets;
          add(d, { ...s.defect, codes: s.defect.codes && [...s.defect.codes, OK] });
        }
      }
      return d;
    },
  },

  ListVolumes: {
    service: 'Controller',
    weight: 1,
    perBackend: false,
    build(rng) {
      const d = draft('ListVolumes', 'Controller', '-', { max_entries: rng.pick([0, 1, 2, 100]), starting_token: '' }, [OK]);
      listDefects(rng, d);
      return d;
    },
  },

  GetCapacity: {
    service: 'Controller',
    weight: 3,
    perBackend: true,
    build(rng, ctx, b) {
      const req: Record<string, unknown> = { volume_capabilities: [goodCap(b)], parameters: { ...ctx.params[b] } };
      const d = draft('GetCapacity', 'Controller', b, req, [OK]);
      const c = rng.int(5);
      if (c <= 2) {
        const p = badParams(rng, ctx, b);
        req.parameters = p.params;
        add(d, p.defect);
      } else if (c === 3) {
        const bc = badCap(rng, ctx, b, goodCap(b));
        if (!bc.cap) {
          req.volume_capabilities = [];
          add(d, { what: 'no capabilities (legal here)', codes: [OK], benign: true });
        } else {
          req.volume_capabilities = [bc.cap];
          add(d, { ...bc.defect, codes: bc.defect.what.includes('raw block') ? [IA, OK] : bc.defect.codes });
        }
      } else {
        req.accessible_topology = { segments: { [rng.pick(['--x', 'zone\n', ASTRAL[0]!, 'topology.strata.csi.dev/zone'])]: rng.pick(hostileTokens(ctx)) } };
        add(d, { what: 'odd topology', codes: [OK, IA], benign: true });
      }
      return d;
    },
  },

  CreateSnapshot: {
    service: 'Controller',
    weight: 5,
    perBackend: true,
    build(rng, ctx, b) {
      const v = ctx.volumes[b];
      const benign = v && rng.chance(0.05);
      const req: Record<string, unknown> = { source_volume_id: v?.id ?? validShapeId(rng, b, 'v'), name: `fz-bad-snap-${rng.hex(16)}`, secrets: { ...ctx.secrets[b] }, parameters: {} };
      const d = draft('CreateSnapshot', 'Controller', b, req, [OK, AE]);
      if (!v) add(d, { what: 'source volume of nothing', codes: [NF] });
      if (benign) {
        const n = oddName(rng, b, 'snap');
        req.name = n.name;
        add(d, n.defect);
      } else {
        const c = rng.int(5);
        if (c <= 1) {
          const p = pickId(rng, ctx, b, 'v', 0);
          req.source_volume_id = p.id;
          add(d, idDefect('source_volume_id', p, 'lookup'));
        } else if (c === 2) {
          const s = rng.pick(['', 'A'.repeat(129), oneMiB()]);
          req.name = s;
          add(d, { what: `name of ${Buffer.byteLength(s)} bytes`, codes: [IA] });
        } else if (c === 3) {
          const s = badSecrets(rng, ctx, b);
          req.secrets = s.secrets;
          add(d, s.defect);
        } else {
          // Snapshot class parameters the driver does not know: refused, or ignored.
          req.parameters = { [rng.pick(['--x', 'pool', 'unknown', ASTRAL[0]!])]: rng.pick(hostileTokens(ctx)) };
          add(d, { what: 'unknown snapshot parameter', codes: [IA, OK, AE] });
        }
      }
      d.lockKeys = [`snap:${req.name}`, String(req.source_volume_id)];
      return d;
    },
  },

  DeleteSnapshot: {
    service: 'Controller',
    weight: 4,
    perBackend: true,
    build(rng, ctx, b) {
      const p = pickId(rng, ctx, b, 's', 0);
      const d = draft('DeleteSnapshot', 'Controller', b, { snapshot_id: p.id, secrets: { ...ctx.secrets[b] } }, [OK], [p.id]);
      add(d, idDefect('snapshot_id', p, 'remove'));
      return d;
    },
  },

  ListSnapshots: {
    service: 'Controller',
    weight: 2,
    perBackend: true,
    build(rng, ctx, b) {
      const d = draft('ListSnapshots', 'Controller', b, { max_entries: rng.pick([0, 1, 5]), starting_token: '', secrets: { ...ctx.secrets[b] } }, [OK]);
      const c = rng.int(4);
      if (c === 0) {
        const p = pickId(rng, ctx, b, 's', 20);
        d.req.snapshot_id = p.id;
        add(d, idDefect('snapshot_id', p, 'filter'));
      } else if (c === 1) {
        const p = pickId(rng, ctx, b, 'v', 20);
        d.req.source_volume_id = p.id;
        add(d, idDefect('source_volume_id', p, 'filter'));
      } else if (c === 2) {
        listDefects(rng, d);
        // Page tokens only mean something without a filter that names one snapshot.
        d.req.source_volume_id = ctx.volumes[b]?.id ?? '';
      } else {
        const s = badSecrets(rng, ctx, b);
        d.req.secrets = s.secrets;
        d.req.snapshot_id = ctx.volumes[b]?.snapshotId ?? '';
        add(d, { ...s.defect, codes: s.defect.codes && [...s.defect.codes, OK] });
      }
      return d;
    },
  },

  GetSnapshot: {
    service: 'Controller',
    weight: 4,
    perBackend: true,
    build(rng, ctx, b) {
      const p = pickId(rng, ctx, b, 's', 15);
      const d = draft('GetSnapshot', 'Controller', b, { snapshot_id: p.id, secrets: { ...ctx.secrets[b] } }, [OK]);
      add(d, idDefect('snapshot_id', p, 'lookup'));
      if (rng.chance(0.15)) {
        const s = badSecrets(rng, ctx, b);
        d.req.secrets = s.secrets;
        add(d, { ...s.defect, codes: s.defect.codes && [...s.defect.codes, OK] });
      }
      return d;
    },
  },

  ControllerExpandVolume: {
    service: 'Controller',
    weight: 5,
    perBackend: true,
    build(rng, ctx, b) {
      const v = ctx.volumes[b];
      const p = pickId(rng, ctx, b, 'v', 25);
      // The well-formed form asks for the size the volume has: nothing changes.
      const req: Record<string, unknown> = { volume_id: p.id, capacity_range: { required_bytes: v?.capacity ?? MiB }, secrets: { ...ctx.secrets[b] }, volume_capability: v?.cap ?? goodCap(b) };
      const d = draft('ControllerExpandVolume', 'Controller', b, req, [OK], [p.id]);
      add(d, foreignCap(idDefect('volume_id', p, 'lookup'), p, b));
      if (p.cls !== 'real' || rng.chance(0.7)) {
        const c = rng.int(4);
        if (c === 0) {
          delete req.capacity_range;
          add(d, { what: 'capacity_range missing', codes: [IA] });
        } else if (c === 1) {
          const bc = badCapacity(rng, b);
          // Growing a pre-made volume to exabytes would be a legitimate (if odd) request: not against it.
          if (p.cls === 'real' && bc.defect.codes!.includes(RE)) {
            req.capacity_range = { required_bytes: -1 };
            add(d, { what: 'capacity_range: negative required_bytes', codes: [IA, OOR] });
          } else {
            req.capacity_range = bc.range;
            add(d, bc.defect);
          }
        } else if (c === 2) {
          const bc = badCap(rng, ctx, b, v?.cap ?? goodCap(b));
          // The capability is optional here: only a present, malformed one is a defect.
          if (bc.cap) {
            req.volume_capability = bc.cap;
            add(d, { ...bc.defect, codes: bc.defect.what.includes('raw block') ? [IA, OK] : bc.defect.codes });
          }
        } else {
          const s = badSecrets(rng, ctx, b);
          req.secrets = s.secrets;
          add(d, { ...s.defect, codes: s.defect.codes && [...s.defect.codes, OK] });
        }
      }
      return d;
    },
  },

  ControllerGetVolume: {
    service: 'Controller',
    weight: 5,
    perBackend: true,
    build(rng, ctx, b) {
      const p = pickId(rng, ctx, b, 'v', 12);
      const d = draft('ControllerGetVolume', 'Controller', b, { volume_id: p.id }, [OK]);
      add(d, idDefect('volume_id', p, 'lookup'));
      return d;
    },
  },

  ControllerModifyVolume: {
    service: 'Controller',
    weight: 2,
    perBackend: true,
    build(rng, ctx, b) {
      const p = pickId(rng, ctx, b, 'v', 20);
      const d = draft('ControllerModifyVolume', 'Controller', b, { volume_id: p.id, secrets: { ...ctx.secrets[b] }, mutable_parameters: { [rng.pick(['iops', '--x', ASTRAL[0]!])]: rng.pick(hostileTokens(ctx)) } }, [UNIMPL, IA], [p.id]);
      add(d, { what: `volume_id: ${p.cls}; modify is not offered`, codes: [UNIMPL, IA, NF] });
      return d;
    },
  },

  NodeStageVolume: {
    service: 'Node',
    weight: 8,
    perBackend: true,
    build(rng, ctx, b) {
      const v = ctx.volumes[b];
      const p = pickId(rng, ctx, b, 'v', 20);
      const real = p.cls === 'real';
      const req: Record<string, unknown> = {
        volume_id: p.id,
        staging_target_path: real ? v!.staging : freshPath(rng, ctx, 'stage'),
        volume_capability: v?.cap ?? goodCap(b),
        secrets: { ...ctx.secrets[b] },
        publish_context: { ...(v?.publishContext ?? {}) },
        volume_context: { ...(v?.volumeContext ?? {}) },
      };
      const d = draft('NodeStageVolume', 'Node', b, req, [OK], [p.id, `path:${req.staging_target_path}`]);
      const idd = idDefect('volume_id', p, 'lookup');
      // A well-formed id of nothing carries the context of the pre-made volume: refusing the mismatch is as right as not finding it.
      if (idd && p.cls === 'nonexistent') idd.codes = [NF, IA];
      add(d, idd);
      // The real volume is staged again only where it is staged (idempotent), never at a second path.
      const c = rng.int(real ? 5 : 7);
      if (c === 0) {
        const bp = badPath(rng, ctx);
        req.staging_target_path = bp.path;
        add(d, bp.defect);
      } else if (c === 1) {
        const bc = badCap(rng, ctx, b, v?.cap ?? goodCap(b));
        req.volume_capability = bc.cap;
        add(d, bc.defect);
      } else if (c === 2) {
        const hc = hostileContext(rng, ctx, b);
        req.volume_context = hc.vc;
        // Already staged there: the context may be ignored, or refused.
        add(d, real ? { what: hc.what, codes: [OK, IA, FP], benign: true } : { what: hc.what, codes: [IA, NF] });
      } else if (c === 3) {
        req.publish_context = { userID: rng.pick(['--id=admin', 'admin\n', '../x']), userKey: ctx.secretMarker };
        const s = badSecrets(rng, ctx, b);
        req.secrets = s.secrets;
        add(d, real ? { what: 'odd publish_context and secrets', codes: [OK, ...SECRET_CODES], benign: true } : s.defect);
      } else if (c === 4 && !real) {
        req.staging_target_path = sentinelPath(rng, ctx);
        // A path that holds a file is refused before the cluster is asked about the id: as right as NOT_FOUND.
        add(d, { what: `staging path ${req.staging_target_path} that holds content`, codes: [FP] });
      } else if (c === 5 && rng.chance(0.3)) {
        // A made-up id of the right shape with a context pointing at the file-system root or another bucket (issue 16, case 8).
        req.volume_id = validShapeId(rng, b, 'v');
        const hc = hostileContext(rng, ctx, b);
        req.volume_context = hc.vc;
        d.defects = [{ what: `made-up id with ${hc.what}`, codes: [NF, IA] }];
      }
      d.lockKeys = [String(req.volume_id), `path:${req.staging_target_path}`];
      return d;
    },
  },

  NodeUnstageVolume: {
    service: 'Node',
    weight: 6,
    perBackend: true,
    build(rng, ctx, b) {
      const p = pickId(rng, ctx, b, 'v', 15);
      const req: Record<string, unknown> = { volume_id: p.id, staging_target_path: freshPath(rng, ctx, 'unstage') };
      const d = draft('NodeUnstageVolume', 'Node', b, req, [OK]);
      add(d, idDefect('volume_id', p, 'undo'));
      removalPath(rng, ctx, d, req, 'staging_target_path', 'staging path');
      d.lockKeys = [p.id, `path:${req.staging_target_path}`];
      return d;
    },
  },

  NodePublishVolume: {
    service: 'Node',
    weight: 8,
    perBackend: true,
    build(rng, ctx, b) {
      const v = ctx.volumes[b];
      const p = pickId(rng, ctx, b, 'v', 20);
      const real = p.cls === 'real';
      const req: Record<string, unknown> = {
        volume_id: p.id,
        staging_target_path: v?.staging ?? freshPath(rng, ctx, 'stage'),
        target_path: real && rng.chance(0.5) ? v!.target : extraTarget(rng, ctx, b, false),
        volume_capability: v?.cap ?? goodCap(b),
        readonly: false,
        volume_context: { ...(v?.volumeContext ?? {}) },
        publish_context: { ...(v?.publishContext ?? {}) },
        secrets: {},
      };
      const d = draft('NodePublishVolume', 'Node', b, req, [OK], [p.id, `path:${req.target_path}`]);
      const idd = idDefect('volume_id', p, 'lookup');
      // A well-formed id of nothing is not staged where the request says: "not staged there" is as right as "not found".
      if (idd && p.cls === 'nonexistent') idd.codes = [NF, FP];
      add(d, foreignCap(idd, p, b));
      const c = rng.int(real ? 6 : 7);
      if (c === 0) {
        const bp = badPath(rng, ctx);
        req.target_path = bp.path;
        add(d, bp.defect);
      } else if (c === 1) {
        const bp = badPath(rng, ctx);
        req.staging_target_path = bp.path;
        add(d, bp.defect);
      } else if (c === 2) {
        const bc = badCap(rng, ctx, b, v?.cap ?? goodCap(b));
        req.volume_capability = bc.cap;
        add(d, bc.defect);
      } else if (c === 3) {
        // A staging path where this volume is not staged (or a foreign mount): nothing to publish.
        req.staging_target_path = rng.pick([freshPath(rng, ctx, 'nostage'), ctx.sentinels.mount, ctx.sentinels.dir]);
        add(d, { what: `staging path ${req.staging_target_path} where the volume is not staged`, codes: [FP, NF, IA] });
      } else if (c === 4 && real) {
        req.readonly = true;
        if (req.target_path === v!.target) add(d, { what: 'readonly on a target published read-write', codes: [AE] });
        else req.target_path = extraTarget(rng, ctx, b, true);
      } else if (c === 5) {
        const hc = hostileContext(rng, ctx, b);
        req.volume_context = hc.vc;
        add(d, { what: hc.what, codes: [OK, IA, FP], benign: true });
      } else if (c === 6) {
        req.target_path = sentinelPath(rng, ctx);
      }
      d.lockKeys = [p.id, `path:${req.target_path}`, `path:${req.staging_target_path}`];
      return d;
    },
  },

  NodeUnpublishVolume: {
    service: 'Node',
    weight: 6,
    perBackend: true,
    build(rng, ctx, b) {
      const p = pickId(rng, ctx, b, 'v', 15);
      const real = p.cls === 'real';
      // The real volume only from the extra targets the fuzz itself may have published.
      const req: Record<string, unknown> = { volume_id: p.id, target_path: real ? extraTarget(rng, ctx, b, rng.chance(0.5)) : freshPath(rng, ctx, 'unpublish') };
      const d = draft('NodeUnpublishVolume', 'Node', b, req, [OK]);
      add(d, idDefect('volume_id', p, 'undo'));
      removalPath(rng, ctx, d, req, 'target_path', 'target');
      d.lockKeys = [p.id, `path:${req.target_path}`];
      return d;
    },
  },

  NodeGetVolumeStats: {
    service: 'Node',
    weight: 4,
    perBackend: true,
    build(rng, ctx, b) {
      const v = ctx.volumes[b];
      const p = pickId(rng, ctx, b, 'v', 25);
      const req: Record<string, unknown> = { volume_id: p.id, volume_path: v?.target ?? freshPath(rng, ctx, 'stats'), staging_target_path: v?.staging ?? '' };
      const d = draft('NodeGetVolumeStats', 'Node', b, req, [OK]);
      const idd = idDefect('volume_id', p, 'lookup');
      // A well-formed id of nothing at a path that is mounted: the spec says NOT_FOUND, a health report is tolerated.
      if (idd && p.cls === 'nonexistent') idd.codes = [NF, OK];
      add(d, idd);
      const c = rng.int(4);
      if (c === 0) {
        const bp = badPath(rng, ctx);
        req.volume_path = bp.path;
        add(d, { ...bp.defect, codes: [IA, NF] });
      } else if (c === 1) {
        req.volume_path = rng.chance(0.5) ? freshPath(rng, ctx, 'nothing') : sentinelPath(rng, ctx);
        add(d, { what: 'volume_path where the volume is not', codes: [NF, OK] });
      } else if (c === 2) {
        req.staging_target_path = badPath(rng, ctx).path;
        add(d, { what: 'odd staging_target_path', codes: [OK, IA, NF], benign: true });
      }
      return d;
    },
  },

  NodeExpandVolume: {
    service: 'Node',
    weight: 4,
    perBackend: true,
    build(rng, ctx, b) {
      const v = ctx.volumes[b];
      // rbd's node expansion runs resize2fs, which this sandbox cannot do online: only its refusals here.
      const p = pickId(rng, ctx, b, 'v', b === 'rbd' ? 0 : 20);
      const req: Record<string, unknown> = { volume_id: p.id, volume_path: v?.target ?? freshPath(rng, ctx, 'expand'), capacity_range: { required_bytes: v?.capacity ?? MiB }, staging_target_path: v?.staging ?? '', volume_capability: v?.cap ?? goodCap(b) };
      const d = draft('NodeExpandVolume', 'Node', b, req, [OK], [p.id]);
      add(d, foreignCap(idDefect('volume_id', p, 'lookup'), p, b));
      const c = rng.int(4);
      if (c === 0) {
        const bp = badPath(rng, ctx);
        req.volume_path = bp.path;
        add(d, { ...bp.defect, codes: [IA, NF] });
      } else if (c === 1) {
        req.volume_path = freshPath(rng, ctx, 'nothing');
        add(d, { what: 'volume_path that does not exist', codes: [NF] });
      } else if (c === 2) {
        const bc = badCapacity(rng, b);
        req.capacity_range = bc.range;
        // The node only reports what the file system holds after the controller grew it: sizes it cannot reach may be answered with that.
        add(d, bc.defect.what.includes('negative') ? bc.defect : { ...bc.defect, codes: [...bc.defect.codes!, OK] });
      } else {
        const bc = badCap(rng, ctx, b, v?.cap ?? goodCap(b));
        if (bc.cap) {
          req.volume_capability = bc.cap;
          add(d, { ...bc.defect, codes: bc.defect.what.includes('raw block') ? [IA, OK] : bc.defect.codes });
        }
      }
      return d;
    },
  },
};

function listDefects(rng: Rng, d: Draft): void {
  const c = rng.int(3);
  if (c === 0) {
    const t = rng.pick(['x', '-1', '1e3', '999999', '../', '\0', '\n', 'A'.repeat(300), oneMiB(), '0x1', ' 1', '1 ', ASTRAL[0]!, '9'.repeat(40), '1.5']);
    d.req.starting_token = t;
    add(d, { what: `starting_token ${JSON.stringify(t.slice(0, 40))}`, codes: [AB] });
  } else if (c === 1) {
    const m = rng.pick([-1, -2147483648, -100]);
    d.req.max_entries = m;
    add(d, { what: `max_entries ${m}`, codes: [IA] });
  } else {
    d.req.max_entries = rng.pick([2147483647, 1, 0]);
  }
}

/** All the RPCs of Identity, Controller and Node, by name. */
export const RPCS: Record<string, Service> = Object.fromEntries(Object.entries(BUILDERS).map(([k, v]) => [k, v.service]));

/** Bytes that are no protobuf message (or a message of unknown fields), for any RPC. */
function rawRequest(rng: Rng, rpc: string): { raw: Buffer; defect: Defect; valid: string[] | null } {
  const c = rng.int(4);
  if (c === 0) {
    const n = 1 + rng.int(48);
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = rng.int(256);
    // Make sure it cannot parse: an unknown field with wire type 7, which does not exist.
    b[0] = rng.pick([0xff, 0x07]);
    return { raw: b, defect: { what: `${n} random bytes`, codes: [IA] }, valid: null };
  }
  // protobufjs reads some truncated fields leniently, so this one may also be taken as a (different) request.
  if (c === 1) return { raw: Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x41]), defect: { what: 'a length beyond the message', codes: null }, valid: null };
  // Where field 1 is unknown (empty messages) protobufjs skips the long varint and reads on: then it is an empty request.
  if (c === 2) return { raw: Buffer.from([0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), defect: { what: 'a varint of 11 bytes', codes: null }, valid: null };
  // Unknown fields only: a well-formed empty request.
  const empty = ['GetPluginInfo', 'GetPluginCapabilities', 'Probe', 'ControllerGetCapabilities', 'NodeGetCapabilities', 'NodeGetInfo', 'ListVolumes'].includes(rpc);
  const codes = empty ? [OK] : rpc === 'ControllerModifyVolume' ? [IA, UNIMPL] : [IA, OK];
  return { raw: Buffer.from([0xf8, 0x06, 0x01, 0xfa, 0x06, 0x03, 0x61, 0x62, 0x63]), defect: { what: 'unknown fields 111 and 111 only', codes }, valid: null };
}

/**
 * The requests, one at a time (a run holds at most a few in memory: some
 * carry 1 MiB strings).
 */
export function* hostileRequests(seed: number, ctx: FuzzContext, count: number, opts: GenOptions = {}): Generator<FuzzRequest> {
  const rng = new Rng(seed);
  const backends = opts.backends ?? (Object.keys(ctx.volumes).length ? BACKENDS.filter((b) => ctx.volumes[b]) : [...BACKENDS]);
  const rpcs = Object.entries(BUILDERS).filter(([name]) => !opts.rpcs || opts.rpcs.includes(name));
  const table = rpcs.map(([name, b]) => [name, b.weight] as const);
  for (let index = 0; index < count; index++) {
    const name = rng.weighted(table);
    const spec = BUILDERS[name]!;
    const b = rng.pick(backends);
    if (rng.chance(0.03) && opts.raw !== false) {
      const r = rawRequest(rng, name);
      yield { index, service: spec.service, rpc: name, backend: spec.perBackend ? b : '-', raw: r.raw, expect: expectedCodes(r.valid, [r.defect]), defects: [r.defect.what], lockKeys: [] };
      continue;
    }
    const d = spec.build(rng, ctx, b);
    yield {
      index,
      service: d.service,
      rpc: d.rpc,
      backend: d.backend,
      req: d.req,
      expect: expectedCodes(d.valid, d.defects),
      defects: d.defects.map((x) => x.what),
      lockKeys: d.lockKeys.filter(Boolean),
    };
  }
}

/** A request as it may be printed: secrets redacted, long strings cut, odd characters escaped. */
export function describeRequest(r: FuzzRequest): string {
  const cut = (v: unknown, key = ''): unknown => {
    if (key === 'secrets' || key === 'publish_context') return v && typeof v === 'object' ? Object.fromEntries(Object.keys(v).map((k) => [k.slice(0, 40), '[redacted]'])) : v;
    if (typeof v === 'string') return v.length > 160 ? `${v.slice(0, 120)}…(${Buffer.byteLength(v)} bytes)` : v;
    if (Array.isArray(v)) return v.map((x) => cut(x));
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k.length > 60 ? `${k.slice(0, 40)}…(${k.length})` : k, cut(x, k)]));
    return v;
  };
  const body = r.raw ? `raw ${r.raw.toString('hex').slice(0, 120)}` : JSON.stringify(cut(r.req));
  return `#${r.index} ${r.service}.${r.rpc} [${r.backend}] ${body} defects=${JSON.stringify(r.defects)}`;
}
