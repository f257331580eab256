import { createHash } from 'node:crypto';
import pLimit from 'p-limit';
import type { Config } from '../config/config.js';
import { canReach, findCluster, hasDefaultIdentities } from '../config/config.js';
import type { ControllerBackend } from '../backends/types.js';
import { aborted, failedPrecondition, invalidArgument, notFound, unimplemented } from '../errors.js';
import { requireCapabilities, requireCapability } from './capabilities.js';
import type { ControllerHandlers } from './gen/csi/v1/Controller.js';
import type { _csi_v1_ControllerServiceCapability_RPC_Type as ControllerServiceCapability_RPC_Type } from './gen/csi/v1/ControllerServiceCapability.js';
import type { _csi_v1_ListVolumesResponse_Entry as ListVolumesEntry } from './gen/csi/v1/ListVolumesResponse.js';
import type { ListSnapshotsResponse } from './gen/csi/v1/ListSnapshotsResponse.js';
import { wrap, wrapChecked, type RpcContext, type RpcRuntime } from './handler.js';
import { MAX_ID_BYTES, parseId, shown, type Backend, type ObjectId } from './ids.js';
import { requireName, requireNodeId } from './grammar.js';

/**
 * The Controller service: generic request checks and dispatch to the backend
 * named by the StorageClass (CreateVolume) or by the id (everything else).
 */

export type ControllerBackends = Partial<Record<Backend, ControllerBackend>>;

const CAPS: ControllerServiceCapability_RPC_Type[] = [
  'CREATE_DELETE_VOLUME',
  'PUBLISH_UNPUBLISH_VOLUME',
  'CREATE_DELETE_SNAPSHOT',
  'LIST_SNAPSHOTS',
  'GET_SNAPSHOT',
  'CLONE_VOLUME',
  'PUBLISH_READONLY',
  'EXPAND_VOLUME',
];
/**
 * RPCs whose requests carry no secrets: offered only when the config has an identity to run them as.
 * GetCapacity answers, but GET_CAPACITY is not offered: the volumes have no topology, so the
 * scheduler's capacity tracking would decide nothing, and an S3 store reports no free space (0),
 * which would hold every WaitForFirstConsumer S3 claim back.
 */
const CONFIG_IDENTITY_CAPS: ControllerServiceCapability_RPC_Type[] = ['LIST_VOLUMES', 'LIST_VOLUMES_PUBLISHED_NODES', 'GET_VOLUME', 'VOLUME_CONDITION'];

const required = (v: string | undefined, field: string): string => {
  if (!v) throw invalidArgument(`${field} is required`);
  return v;
};

/** Parses an id whose absence is an error: unknown or malformed ids, and ids of clusters this driver does not serve, are NOT_FOUND. */
function knownId(backends: ControllerBackends, cfg: Config, s: string, kind: 'v' | 's'): { id: ObjectId; backend: ControllerBackend } {
  const t = maybeId(backends, cfg, s, kind);
  if (!t) throw notFound(`${kind === 'v' ? 'volume' : 'snapshot'} ${shown(s)} not found`);
  return t;
}

/** Parses an id for an idempotent removal: undefined means "nothing of ours, nothing to do". */
function maybeId(backends: ControllerBackends, cfg: Config, s: string, kind: 'v' | 's') {
  const id = parseId(s, kind);
  const backend = id && backends[id.backend];
  const cluster = id && findCluster(cfg, id.cluster);
  // A cluster missing from the config (or without this backend's store) holds nothing this driver could find or remove.
  const served = !!cluster && (id!.backend === 's3' ? !!cluster.s3 : !!cluster.ceph);
  return id && backend && served ? { id, backend } : undefined;
}

/**
 * A request string as a lock key: itself when it could be valid, else its
 * digest. Keys show in "already in progress" answers, and a 1 MiB name there
 * never reached the client and wedged its connection.
 */
const lockName = (s: string): string => (Buffer.byteLength(s) > MAX_ID_BYTES ? `sha256:${createHash('sha256').update(s).digest('hex')}` : s);

// Page tokens are offsets this driver handed out: digits only, checked before any listing is paid for.
const PAGE_TOKEN = /^\d{1,9}$/;

function checkPaging(maxEntries: number, token: string): void {
  if (maxEntries < 0) throw invalidArgument('max_entries must not be negative');
  if (token && !PAGE_TOKEN.test(token)) throw aborted(`starting_token ${shown(token)} is not one this driver gave out`);
}

/** Offsets as page tokens: ids are listed sorted, so an offset is stable enough between pages. */
function page<T>(all: T[], maxEntries: number, token: string): { items: T[]; next: string } {
  checkPaging(maxEntries, token);
  let start = 0;
  if (token) {
    if (Number(token) > all.length) throw aborted(`starting_token ${shown(token)} is past the end of the listing`);
    start = Number(token);
  }
  const end = maxEntries ? Math.min(all.length, start + maxEntries) : all.length;
  return { items: all.slice(start, end), next: end < all.length ? String(end) : '' };
}

export function controllerService(rt: RpcRuntime, cfg: Config, backends: ControllerBackends): ControllerHandlers {
  const limit = pLimit(8);
  const configIdentity = hasDefaultIdentities(cfg);
  const needsConfigIdentity = (rpc: string) => {
    if (!configIdentity) throw failedPrecondition(`${rpc} carries no secrets and the driver config has no default identity for every cluster (ceph.userID, s3 key files)`);
  };
  const byVolume = <R extends { volume_id: string }>(r: R) => [lockName(r.volume_id)];

  const backendFor = (params: Record<string, string>): { backend: ControllerBackend; cluster: string } => {
    const name = params.backend;
    if (!name) throw invalidArgument('parameter "backend" is required (rbd, cephfs or s3)');
    const backend = backends[name as Backend];
    if (!backend) throw invalidArgument(`parameter "backend": "${name}" is not available in this driver`);
    const cluster = required(params.clusterID, 'parameter "clusterID"');
    if (!findCluster(cfg, cluster)) throw invalidArgument(`parameter "clusterID": cluster "${cluster}" is not in the driver config`);
    return { backend, cluster };
  };

  /** Every (cluster, backend) pair, for the listing RPCs that carry no parameters. */
  /** Every (cluster, backend) pair the call's credentials (or the config's) can reach, for the RPCs that name no volume. */
  const everywhere = (secrets: Record<string, string> = {}): Array<{ cluster: string; backend: ControllerBackend }> =>
    cfg.clusters.flatMap((c) =>
      (['rbd', 'cephfs', 's3'] as const).flatMap((b) =>
        backends[b] && canReach(c, b === 's3' ? 's3' : 'ceph', secrets) ? [{ cluster: c.id, backend: backends[b]! }] : [],
      ),
    );

  const listAll = async (f: (b: ControllerBackend, cluster: string) => Promise<string[]>, secrets?: Record<string, string>): Promise<string[]> =>
    (await Promise.all(everywhere(secrets).map(({ cluster, backend }) => f(backend, cluster)))).flat().sort();

  return {
    CreateVolume: wrapChecked(
      rt,
      'CreateVolume',
      {
        check: (req) => {
          requireName(req.name);
          const caps = requireCapabilities(req.volume_capabilities);
          const { backend } = backendFor(req.parameters);
          const why = backend.validateCapabilities(caps);
          if (why) throw invalidArgument(why);
          const src = req.volume_content_source;
          if (src && !src.snapshot?.snapshot_id && !src.volume?.volume_id) throw invalidArgument('volume_content_source names no snapshot or volume');
          return backend;
        },
        lockKeys: (r) => [`name:${lockName(r.name)}`],
      },
      async (req, ctx, backend) => ({ volume: await backend.createVolume(req, ctx) }),
    ),

    DeleteVolume: wrapChecked(
      rt,
      'DeleteVolume',
      { check: (req) => maybeId(backends, cfg, required(req.volume_id, 'volume_id'), 'v'), lockKeys: byVolume },
      async (req, ctx, t) => {
        if (t) await t.backend.deleteVolume(t.id, req.secrets, ctx);
        return {};
      },
    ),

    ControllerPublishVolume: wrapChecked(
      rt,
      'ControllerPublishVolume',
      {
        check: (req) => {
          required(req.volume_id, 'volume_id');
          requireNodeId(required(req.node_id, 'node_id'));
          requireCapability(req.volume_capability);
          const t = knownId(backends, cfg, req.volume_id, 'v');
          const why = t.backend.validateCapabilities([req.volume_capability!]);
          if (why) throw invalidArgument(why);
          return t;
        },
        lockKeys: byVolume,
      },
      async (req, ctx, { id, backend }) => ({ publish_context: await backend.publish(id, req, ctx) }),
    ),

    ControllerUnpublishVolume: wrapChecked(
      rt,
      'ControllerUnpublishVolume',
      {
        check: (req) => {
          const t = maybeId(backends, cfg, required(req.volume_id, 'volume_id'), 'v');
          // An empty node id means every node; any other must be one a publish could have recorded.
          if (req.node_id) requireNodeId(req.node_id);
          return t;
        },
        lockKeys: byVolume,
      },
      async (req, ctx, t) => {
        if (t) await t.backend.unpublish(t.id, req.node_id, req.secrets, ctx);
        return {};
      },
    ),

    ValidateVolumeCapabilities: wrap(rt, 'ValidateVolumeCapabilities', async (req, ctx) => {
      required(req.volume_id, 'volume_id');
      const caps = requireCapabilities(req.volume_capabilities);
      const { id, backend } = knownId(backends, cfg, req.volume_id, 'v');
      if (!(await backend.getVolume(id, req.secrets, ctx))) throw notFound(`volume ${req.volume_id} not found`);
      const why = backend.validateCapabilities(caps);
      if (why) return { message: why };
      return { confirmed: { volume_context: req.volume_context, volume_capabilities: caps, parameters: req.parameters } };
    }),

    ListVolumes: wrap(rt, 'ListVolumes', async (req, ctx) => {
      needsConfigIdentity('ListVolumes');
      checkPaging(req.max_entries, req.starting_token);
      const all = await listAll((b, c) => b.listVolumeIds(c, ctx));
      const { items, next } = page(all, req.max_entries, req.starting_token);
      const entries = await Promise.all(items.map((vid) => limit(() => volumeEntry(backends, cfg, vid, ctx))));
      return { entries: entries.filter((e): e is NonNullable<typeof e> => !!e) as ListVolumesEntry[], next_token: next };
    }),

    ControllerGetVolume: wrap(rt, 'ControllerGetVolume', async (req, ctx) => {
      needsConfigIdentity('ControllerGetVolume');
      const { id, backend } = knownId(backends, cfg, required(req.volume_id, 'volume_id'), 'v');
      const v = await backend.getVolume(id, {}, ctx);
      if (!v) throw notFound(`volume ${req.volume_id} not found`);
      return {
        volume: v.volume,
        status: { published_node_ids: v.publishedNodes, volume_condition: { abnormal: !!v.abnormal, message: v.abnormal ?? 'volume is healthy' } },
      };
    }),

    GetCapacity: wrap(rt, 'GetCapacity', async (req, ctx) => {
      needsConfigIdentity('GetCapacity');
      if (req.volume_capabilities?.length) requireCapabilities(req.volume_capabilities);
      const params = req.parameters ?? {};
      if (params.backend || params.clusterID) {
        const { backend, cluster } = backendFor(params);
        return { available_capacity: await backend.getCapacity(cluster, params, ctx) };
      }
      // No StorageClass named: every store the config reaches, each asked as its own cluster's.
      const all = await Promise.all(everywhere().map(({ cluster, backend }) => backend.getCapacity(cluster, { ...params, clusterID: cluster }, ctx)));
      return { available_capacity: Math.max(0, ...all) };
    }),

    ControllerGetCapabilities: wrap(rt, 'ControllerGetCapabilities', async () => ({
      capabilities: [...CAPS, ...(configIdentity ? CONFIG_IDENTITY_CAPS : [])].map((type) => ({ rpc: { type } })),
    })),

    CreateSnapshot: wrapChecked(
      rt,
      'CreateSnapshot',
      {
        check: (req) => {
          requireName(req.name);
          return knownId(backends, cfg, required(req.source_volume_id, 'source_volume_id'), 'v');
        },
        lockKeys: (r) => [`snap:${lockName(r.name)}`, lockName(r.source_volume_id)] },
      async (req, ctx, { id, backend }) => ({ snapshot: await backend.createSnapshot(id, req, ctx) }),
    ),

    DeleteSnapshot: wrapChecked(
      rt,
      'DeleteSnapshot',
      { check: (req) => maybeId(backends, cfg, required(req.snapshot_id, 'snapshot_id'), 's'), lockKeys: (r) => [lockName(r.snapshot_id)] },
      async (req, ctx, t) => {
        if (t) await t.backend.deleteSnapshot(t.id, req.secrets, ctx);
        return {};
      },
    ),

    ListSnapshots: wrap(rt, 'ListSnapshots', async (req, ctx) => {
      type Entry = NonNullable<ListSnapshotsResponse['entries']>[number];
      if (req.snapshot_id) {
        const t = maybeId(backends, cfg, req.snapshot_id, 's');
        const s = t && (await t.backend.getSnapshot(t.id, req.secrets, ctx));
        const match = s && (!req.source_volume_id || s.source_volume_id === req.source_volume_id);
        return { entries: match ? [{ snapshot: s }] : [], next_token: '' };
      }
      checkPaging(req.max_entries, req.starting_token);
      let all: string[];
      if (req.source_volume_id) {
        const t = maybeId(backends, cfg, req.source_volume_id, 'v');
        all = t ? await t.backend.listSnapshotIds(t.id.cluster, t.id, req.secrets, ctx) : [];
      } else {
        all = await listAll((b, c) => b.listSnapshotIds(c, undefined, req.secrets, ctx), req.secrets);
      }
      const { items, next } = page(all, req.max_entries, req.starting_token);
      const snaps = await Promise.all(
        items.map((sid) =>
          limit(async () => {
            const t = maybeId(backends, cfg, sid, 's');
            return t && t.backend.getSnapshot(t.id, req.secrets, ctx);
          }),
        ),
      );
      return { entries: snaps.filter(Boolean).map((s) => ({ snapshot: s }) as Entry), next_token: next };
    }),

    GetSnapshot: wrap(rt, 'GetSnapshot', async (req, ctx) => {
      const { id, backend } = knownId(backends, cfg, required(req.snapshot_id, 'snapshot_id'), 's');
      const s = await backend.getSnapshot(id, req.secrets, ctx);
      if (!s) throw notFound(`snapshot ${req.snapshot_id} not found`);
      return { snapshot: s };
    }),

    ControllerExpandVolume: wrapChecked(
      rt,
      'ControllerExpandVolume',
      {
        check: (req) => {
          required(req.volume_id, 'volume_id');
          if (!req.capacity_range) throw invalidArgument('capacity_range is required');
          // Optional here, but one that is sent must be well-formed: the backend reads it to decide on a node step.
          if (req.volume_capability) requireCapability(req.volume_capability);
          return knownId(backends, cfg, req.volume_id, 'v');
        },
        lockKeys: byVolume,
      },
      async (req, ctx, { id, backend }) => backend.expand(id, req, ctx),
    ),

    ControllerModifyVolume: wrap(rt, 'ControllerModifyVolume', async () => {
      throw unimplemented('ControllerModifyVolume is not supported');
    }),
  };
}

async function volumeEntry(backends: ControllerBackends, cfg: Config, vid: string, ctx: RpcContext) {
  const t = maybeId(backends, cfg, vid, 'v');
  const v = t && (await t.backend.getVolume(t.id, {}, ctx));
  if (!v) return undefined; // deleted between listing and reading
  return {
    volume: v.volume,
    status: { published_node_ids: v.publishedNodes, volume_condition: { abnormal: !!v.abnormal, message: v.abnormal ?? 'volume is healthy' } },
  };
}
