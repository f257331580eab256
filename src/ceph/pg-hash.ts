/**
 * Where RADOS places an object: Ceph's rjenkins string hash (Bob Jenkins'
 * lookup2, ceph_str_hash_rjenkins) of the object name, prefixed with its
 * namespace and 0x1f when it has one, folded into the pool's pg_num by
 * ceph_stable_mod. Used to name objects that land in one given placement
 * group (see reloadWatches in src/backends/rbd/librbd.ts).
 */

function mix(a: number, b: number, c: number): [number, number, number] {
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
  return [a, b, c];
}

export function rjenkins(key: Uint8Array): number {
  let a = 0x9e3779b9;
  let b = a;
  let c = 0;
  let i = 0;
  const word = (at: number) => (key[at]! | (key[at + 1]! << 8) | (key[at + 2]! << 16) | (key[at + 3]! << 24)) >>> 0;
  for (; key.length - i >= 12; i += 12) {
    a = (a + word(i)) >>> 0;
    b = (b + word(i + 4)) >>> 0;
    c = (c + word(i + 8)) >>> 0;
    [a, b, c] = mix(a, b, c);
  }
  c = (c + key.length) >>> 0;
  // The tail: bytes 0-3 into a, 4-7 into b, 8-10 into c above its low byte (which took the length).
  for (let j = 0; i + j < key.length; j++) {
    const byte = key[i + j]!;
    if (j < 4) a = (a + byte * 2 ** (8 * j)) >>> 0;
    else if (j < 8) b = (b + byte * 2 ** (8 * (j - 4))) >>> 0;
    else c = (c + byte * 2 ** (8 * (j - 7))) >>> 0;
  }
  return mix(a, b, c)[2];
}

/** The hash RADOS places an object by: its name, after its namespace and 0x1f when it has one. */
export function objectHash(namespace: string, name: string): number {
  return rjenkins(Buffer.from(namespace ? `${namespace}\x1f${name}` : name));
}

/** ceph_stable_mod: a hash folded into pg_num placement groups so that growing pg_num splits them in place. */
export function stableMod(x: number, pgNum: number): number {
  let mask = 1;
  while (mask < pgNum) mask *= 2;
  mask -= 1;
  return (x & mask) < pgNum ? x & mask : x & (mask >>> 1);
}

/** `count` object names of the form `${prefix}<n>` that RADOS places in placement group `ps` of a pool with pgNum groups. */
export function namesInPg(prefix: string, namespace: string, ps: number, pgNum: number, count: number): string[] {
  if (!Number.isSafeInteger(pgNum) || pgNum < 1 || ps < 0 || ps >= pgNum) throw new RangeError(`placement group ${ps} of ${pgNum}`);
  const out: string[] = [];
  for (let n = 0; out.length < count; n++) {
    const name = `${prefix}${n}`;
    if (stableMod(objectHash(namespace, name), pgNum) === ps) out.push(name);
  }
  return out;
}
