import type { CephIdentity } from './credentials.js';

/**
 * Arguments that point a Ceph tool at one cluster as one identity without any
 * ceph.conf (-c /dev/null keeps a host's /etc/ceph out of the picture), with
 * timeouts so a dead cluster fails the RPC instead of hanging it for 300 s.
 */
export interface CephConn {
  monitors: string[];
  identity: CephIdentity;
}

export const CEPH_TIMEOUTS = ['--client_mount_timeout', '15', '--rados_mon_op_timeout', '20', '--rados_osd_op_timeout', '30'];

export function cephArgs(conn: CephConn): string[] {
  return ['-c', '/dev/null', '-m', conn.monitors.join(','), '--id', conn.identity.id, '--keyfile', conn.identity.keyFile, ...CEPH_TIMEOUTS];
}

/** The same, as a CEPH_ARGS value for tools without --id/--keyfile flags (rbd-fuse). */
export function cephArgsEnv(conn: CephConn): string {
  return cephArgs(conn).join(' ');
}
