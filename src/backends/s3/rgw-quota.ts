import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { isCsiError, unavailable } from '../../errors.js';
import { stopReason } from '../../util/call-context.js';
import { bucketOf, type Location } from './layout.js';
import { rgwAdminOk } from './rgw-admin.js';
import type { RgwAdminApi, S3Api } from './s3-api.js';

/**
 * Enforced capacity on Ceph RGW: a volume with a bucket of its own gets a
 * bucket quota of its capacity, set through RGW's admin API with the admin
 * identity of the cluster config (a user with the "buckets=*" cap). Without
 * that identity, or for prefixes in a shared bucket, capacity is advisory.
 */

export class RgwQuota {
  private readonly owners = new WeakMap<S3Api, Promise<string>>();

  constructor(private readonly adminOf: (cluster: string) => RgwAdminApi | undefined) {}

  enforced(l: Location): boolean {
    return !l.shared && !!this.admin(l.cluster);
  }

  private admin(cluster: string): RgwAdminApi | undefined {
    return this.adminOf(cluster);
  }

  private async call(a: RgwAdminApi, method: 'GET' | 'PUT', query: Record<string, string>, body?: string): Promise<string> {
    return rgwAdminOk(await a.request(method, 'bucket', query, body), `${method} bucket ${query.bucket}`);
  }

  /**
   * Sets the bucket quota to `bytes` where it can be enforced (a no-op
   * elsewhere); `undefined` turns it off. Counted on raw bytes, as the node
   * reports usage: RGW would otherwise count every object as at least 4 KiB.
   *
   * The admin API wants the bucket's owner, which only a GET tells. A bucket
   * made through `creator` (the store of the identity that created it) is
   * owned by that identity's user, so its owner is remembered per store and
   * the next volume's quota is one request; a refused PUT looks the owner up
   * again.
   */
  async apply(l: Location, bytes: number | undefined, log: Logger, creator?: S3Api): Promise<void> {
    const a = !l.shared ? this.admin(l.cluster) : undefined;
    if (!a) return;
    const bucket = bucketOf(l);
    const quota = JSON.stringify({ enabled: bytes !== undefined, max_size: bytes ?? -1, max_objects: -1, check_on_raw: true });
    const put = (uid: string) => this.call(a, 'PUT', { quota: '', uid, bucket }, quota);
    const known = creator && this.owners.get(creator);
    if (known) {
      try {
        await put(await known);
        log.debug({ bucket, bytes }, 'bucket quota set');
        return;
      } catch (e) {
        if (stopReason()) throw e;
        if (this.owners.get(creator!) === known) this.owners.delete(creator!);
      }
    }
    // Calls side by side share one lookup: a burst of creates asks once.
    const owner = this.owner(a, bucket);
    if (creator) {
      this.owners.set(creator, owner);
      owner.catch(() => this.owners.get(creator) === owner && this.owners.delete(creator));
    }
    await put(await owner);
    log.debug({ bucket, bytes }, 'bucket quota set');
  }

  private async owner(a: RgwAdminApi, bucket: string): Promise<string> {
    const info = JSON.parse(await this.call(a, 'GET', { bucket, format: 'json' })) as { owner?: string };
    if (!info.owner) throw unavailable(`RGW admin API gave no owner for bucket ${bucket}`);
    return info.owner;
  }

  /**
   * Runs one write of the driver's own records into a volume's bucket. A
   * volume its app has filled must still attach, snapshot, grow and delete,
   * so where the quota refuses the write it is lifted for that write alone
   * (milliseconds) and set to `capacity` again.
   */
  async despiteQuota<T>(l: Location, capacity: number, write: () => Promise<T>, log: Logger): Promise<T> {
    try {
      return await write();
    } catch (e) {
      if (!this.enforced(l) || !isCsiError(e, status.RESOURCE_EXHAUSTED)) throw e;
    }
    log.info({ bucket: bucketOf(l) }, 'volume is full: bucket quota lifted for one record write');
    await this.apply(l, undefined, log);
    try {
      return await write();
    } finally {
      await this.apply(l, capacity, log);
    }
  }
}
