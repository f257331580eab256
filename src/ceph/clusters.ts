import type { ClusterConfig, Config } from '../config/config.js';
import { findCluster } from '../config/config.js';
import { notFound } from '../errors.js';
import type { CephConn } from './conn.js';
import { KeyFiles, resolveCephIdentity } from './credentials.js';

/** The configured Ceph clusters, and connections to them as the identity a request's secrets name. */
export class CephClusters {
  private readonly keyFiles = new KeyFiles();

  constructor(private readonly cfg: Config) {}

  cluster(id: string): ClusterConfig & { ceph: NonNullable<ClusterConfig['ceph']> } {
    const c = findCluster(this.cfg, id);
    if (!c?.ceph) throw notFound(`cluster "${id}" is not configured for Ceph`);
    return c as ClusterConfig & { ceph: NonNullable<ClusterConfig['ceph']> };
  }

  conn(clusterId: string, secrets: Record<string, string> | undefined): CephConn {
    const c = this.cluster(clusterId);
    return { monitors: c.ceph.monitors, identity: resolveCephIdentity(c, secrets, this.keyFiles) };
  }
}
