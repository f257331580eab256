import { setImmediate as yieldToLoop } from 'node:timers/promises';

/**
 * Where RADOS places an object: Ceph's rjenkins string hash (Bob Jenkins'
 * lookup2, ceph_str_hash_rjenkins) of the object name, prefixed with its
 * namespace and 0x1f when it has one, folded into the pool's pg_num by
 * ceph_stable_mod. Used to name objects that land in one given placement
 * group (see reloadWatches in src/backends/rbd/librbd.ts).
 */

let a = 0;
let b = 0;
let c = 0;

function mix(): void {
  a = (a - b - c) >>> 0;
  a = (a ^ (c >>> 13)) >>> 0;
  b = (b - c - a) >>> 0;
  b = (b ^ (a << 8)) >>> 0;
  c = (c - a - b) >>> 0;
  c = (c ^ (b >>> 13)) >>> 0;
  a = (a - b - c) >>> 0;
  a = (a ^ (c >>> 12)) >>> 0;
  b = (b - c - a) >>> 0;
  b = (b ^ (a << 16)) >>> 0;
  c = (c - a - b) >>> 0;
  c = (c ^ (b >>> 5)) >>> 0;
  a = (a - b - c) >>> 0;
  a = (a ^ (c >>> 3)) >>> 0;
  b = (b - c - a) >>> 0;
  b = (b ^ (a << 10)) >>> 0;
  c = (c - a - b) >>> 0;
  c = (c ^ (b >>> 15)) >>> 0;
}

/** The hash of the first `length` bytes of `key`. */
export function rjenkins(key: Uint8Array, length = key.length): number {
  a = 0x9e3779b9;
  b = a;
  c = 0;
  let i = 0;
  // Sums are taken mod 2^32 by >>> 0; a byte shifted by 24 may read as negative, which changes nothing mod 2^32.
  for (; length - i >= 12; i += 12) {
    a = (a + (key[i]! | (key[i + 1]! << 8) | (key[i + 2]! << 16) | (key[i + 3]! << 24))) >>> 0;
    b = (b + (key[i + 4]! | (key[i + 5]! << 8) | (key[i + 6]! << 16) | (key[i + 7]! << 24))) >>> 0;
    c = (c + (key[i + 8]! | (key[i + 9]! << 8) | (key[i + 10]! << 16) | (key[i + 11]! << 24))) >>> 0;
    mix();
  }
  c = (c + length) >>> 0;
  // The tail: bytes 0-3 into a, 4-7 into b, 8-10 into c above its low byte (which took the length).
  for (let j = 0; i + j < length; j++) {
    const byte = key[i + j]!;
    if (j < 4) a = (a + (byte << (8 * j))) >>> 0;
    else if (j < 8) b = (b + (byte << (8 * (j - 4)))) >>> 0;
    else c = (c + (byte << (8 * (j - 7)))) >>> 0;
  }
  mix();
  return c;
}

/** What RADOS hashes to place an object: its name, after its namespace and 0x1f when it has one. */
const placementKey = (namespace: string, name: string): Buffer => Buffer.from(namespace ? `${namespace}\x1f${name}` : name);

export function objectHash(namespace: string, name: string): number {
  return rjenkins(placementKey(namespace, name));
}

/** ceph_stable_mod: a hash folded into pg_num placement groups so that growing pg_num splits them in place. */
export function stableMod(x: number, pgNum: number, mask = pgMask(pgNum)): number {
  return (x & mask) < pgNum ? x & mask : x & (mask >>> 1);
}

/** The smallest 2^k - 1 at or above pgNum - 1 (a pool's pg_num_mask). */
function pgMask(pgNum: number): number {
  let mask = 1;
  while (mask < pgNum) mask *= 2;
  return mask - 1;
}

/** Names tried between two turns of the event loop: a pool with many groups takes millions. */
const BATCH = 20_000;

/**
 * `count` object names of the form `${prefix}<n>` that RADOS places in
 * placement group `ps` of a pool with pgNum groups: count × pgNum names are
 * tried, in one reused buffer, a batch per turn of the event loop.
 */
export async function namesInPg(prefix: string, namespace: string, ps: number, pgNum: number, count: number): Promise<string[]> {
  if (!Number.isSafeInteger(pgNum) || pgNum < 1 || ps < 0 || ps >= pgNum) throw new RangeError(`placement group ${ps} of ${pgNum}`);
  const head = placementKey(namespace, prefix);
  const key = Buffer.alloc(head.length + 16);
  head.copy(key);
  const mask = pgMask(pgNum);
  const out: string[] = [];
  for (let n = 0; out.length < count; n++) {
    if (n % BATCH === BATCH - 1) await yieldToLoop();
    const digits = key.write(String(n), head.length, 'latin1');
    if (stableMod(rjenkins(key, head.length + digits), pgNum, mask) === ps) out.push(`${prefix}${n}`);
  }
  return out;
}
