import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ListBucketsCommand } from '@aws-sdk/client-s3';
import type { CephLab } from '../lab/ceph-lab.js';
import { leftovers } from '../helpers/leftovers.js';
import { labS3Client } from '../helpers/s3.js';
import { run } from '../../src/util/exec.js';

/**
 * Everything a Strata driver can leave in a lab, listed from the cluster
 * itself (never through the driver): taken before a run and after its
 * deletes, the two must be equal.
 */
export interface ClusterState {
  rbdImages: string[];
  rbdTrash: string[];
  subvolumes: string[];
  cephUsers: string[];
  configKeys: string[];
  buckets: string[];
  /** RGW users of volumes (S3 on RGW with rgwAdmin: one per volume, with its nodes' keys). */
  rgwUsers: string[];
  loopDevices: string[];
  local: string[];
}

const lines = (s: string) => s.split('\n').map((l) => l.trim()).filter(Boolean);

async function subvolumes(lab: CephLab): Promise<string[]> {
  const out: string[] = [];
  for (const group of ['csi', '_nogroup']) {
    const args = ['fs', 'subvolume', 'ls', 'cephfs', '--format', 'json'];
    if (group !== '_nogroup') args.push('--group_name', group);
    for (const s of JSON.parse((await lab.ceph(args)) || '[]') as Array<{ name: string }>) {
      // A subvolume's snapshots are listed with it, so a leaked snapshot shows as well.
      const snaps = JSON.parse((await lab.ceph(['fs', 'subvolume', 'snapshot', 'ls', 'cephfs', s.name, ...(group === '_nogroup' ? [] : ['--group_name', group]), '--format', 'json'])) || '[]') as Array<{ name: string }>;
      out.push(`${group}/${s.name}`, ...snaps.map((x) => `${group}/${s.name}@${x.name}`));
    }
  }
  return out.sort();
}

/** "rbd" and "rbd/<namespace>" for each RADOS namespace of the pool. */
async function rbdSpecs(lab: CephLab): Promise<string[]> {
  const namespaces = JSON.parse((await lab.rbd(['namespace', 'ls', 'rbd', '--format', 'json'])) || '[]') as Array<{ name: string }>;
  return ['rbd', ...namespaces.map((n) => `rbd/${n.name}`)];
}

async function rbdImages(lab: CephLab): Promise<string[]> {
  const out: string[] = [];
  for (const spec of await rbdSpecs(lab)) out.push(...lines(await lab.rbd(['ls', spec])).map((i) => (spec === 'rbd' ? i : `${spec.slice(4)}/${i}`)));
  return out.sort();
}

/** Trashed images with the snapshots that keep them there, to say why a purge could not take them. */
async function rbdTrash(lab: CephLab): Promise<string[]> {
  const out: string[] = [];
  for (const spec of await rbdSpecs(lab)) out.push(...(await rbdTrashIn(lab, spec)));
  return out.sort();
}

async function rbdTrashIn(lab: CephLab, spec: string): Promise<string[]> {
  const out: string[] = [];
  const [pool, namespace] = spec.split('/');
  for (const t of JSON.parse((await lab.rbd(['trash', 'ls', '--all', spec, '--format', 'json'])) || '[]') as Array<{ id: string; name: string }>) {
    let snaps = '?';
    try {
      const where = namespace ? ['--pool', pool!, '--namespace', namespace] : ['--pool', pool!];
      const list = JSON.parse((await lab.rbd(['snap', 'ls', '--all', ...where, '--image-id', t.id, '--format', 'json'])) || '[]') as Array<{ name: string; namespace?: { type: string } }>;
      snaps = list.map((x) => `${x.name}(${x.namespace?.type ?? 'user'})`).join(' ');
    } catch (e) {
      snaps = (e as Error).message.slice(0, 80);
    }
    out.push(`${namespace ? `${namespace}/` : ''}${t.name} snapshots: ${snaps}`);
  }
  return out.sort();
}

/**
 * Loop devices over files of this driver, and over files of detached mounts (the kernel then names
 * the file from the mount's root, `/<image>`): a leak hides as either. Other tests' loop devices on
 * the machine are not this run's.
 */
function loopDevices(driverDir: string): string[] {
  const out: string[] = [];
  for (const loop of readdirSync('/sys/block').filter((d) => d.startsWith('loop'))) {
    try {
      const file = readFileSync(`/sys/block/${loop}/loop/backing_file`, 'utf8').trim();
      if (file.startsWith(driverDir + '/') || /^\/[^/]+$/.test(file)) out.push(`${loop} ${file}`);
    } catch {
      /* not bound */
    }
  }
  return out.sort();
}

export async function clusterState(lab: CephLab, driverDir: string): Promise<ClusterState> {
  const s3 = labS3Client(lab);
  try {
    return {
      rbdImages: await rbdImages(lab),
      rbdTrash: await rbdTrash(lab),
      subvolumes: lab.hasCephFS ? await subvolumes(lab) : [],
      cephUsers: (JSON.parse(await lab.ceph(['auth', 'ls', '--format', 'json'])) as { auth_dump: Array<{ entity: string }> }).auth_dump.map((a) => a.entity).filter((e) => e.startsWith('client.strata-')).sort(),
      configKeys: (JSON.parse(await lab.ceph(['config-key', 'ls'])) as string[]).filter((k) => k.startsWith('strata/')).sort(),
      buckets: lab.hasS3 ? ((await s3.send(new ListBucketsCommand({}))).Buckets ?? []).map((b) => b.Name!).sort() : [],
      rgwUsers: lab.hasS3 ? (JSON.parse((await run('radosgw-admin', ['-c', lab.conf, 'user', 'list'], { timeoutMs: 30_000 })).stdout) as string[]).filter((u) => u.startsWith('strata-csi-')).sort() : [],
      loopDevices: loopDevices(driverDir),
      local: await leftovers(driverDir),
    };
  } finally {
    s3.destroy();
  }
}

/** The state once background work settled (RBD purges trashed parents after a delete returns). */
export async function settledState(lab: CephLab, driverDir: string, want: ClusterState, ms = 30_000): Promise<ClusterState> {
  const end = Date.now() + ms;
  for (;;) {
    const now = await clusterState(lab, driverDir);
    if (JSON.stringify(now) === JSON.stringify(want) || Date.now() > end) return now;
    await sleep(500);
  }
}

/**
 * What holds RBD images that outlived their DeleteVolume: each image's watchers, the OSD
 * blocklist, and the FUSE daemons still running on this machine. Printed when the final check
 * fails, so that a watch nobody explains (seen once: two images whose watch outlived a clean
 * NodeUnstage and the fence by minutes) can be traced to its client.
 */
export async function rbdLeftoverReport(lab: CephLab, images: string[]): Promise<string> {
  const lines: string[] = [];
  for (const image of images) {
    const r = await lab.rbd(['status', `rbd/${image}`, '--format', 'json']).catch((e: Error) => e.message);
    lines.push(`${image}: ${r.trim()}`);
  }
  lines.push(`blocklist: ${(await lab.ceph(['osd', 'blocklist', 'ls']).catch((e: Error) => e.message)).trim().replace(/\n/g, '; ')}`);
  const daemons = readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map((p) => {
      try {
        return `${p}: ${readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' ').slice(0, 200)}`;
      } catch {
        return '';
      }
    })
    .filter((l) => /\b(rbd-fuse|rbd-nbd)\b/.test(l));
  lines.push(`FUSE daemons: ${daemons.length ? daemons.join(' | ') : 'none'}`);
  return lines.join('\n');
}
