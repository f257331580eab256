import type { ObjectId } from '../../csi/ids.js';
import { poolSpec, type PoolSpec } from './rbd-api.js';

/**
 * Where an RBD id's image lives. Ids name the pool and image, and between
 * them the RADOS namespace when the image is not in the pool's default one
 * (see ids.ts); parseId has checked every part.
 */
export interface ImageLocation {
  pool: string;
  namespace?: string;
  /** The pool and namespace as RbdApi takes them. */
  spec: PoolSpec;
  image: string;
}

export function located(id: ObjectId): ImageLocation {
  const [pool, ...rest] = id.location as [string, ...string[]];
  const image = rest[rest.length - 1]!;
  const namespace = rest.length === 2 ? rest[0] : undefined;
  return { pool, namespace, spec: poolSpec(pool, namespace), image };
}

/** The location parts of an id for an image in `pool` (and `namespace`, unless the default). */
export const rbdLocation = (pool: string, namespace: string | undefined, image: string): string[] => (namespace ? [pool, namespace, image] : [pool, image]);
