import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { BACKENDS, RPCS, describeRequest, goodCap, hostileRequests, seedFrom, wellFormedId, type Backend, type FuzzContext, type FuzzRequest } from '../hostile/fuzz-gen.js';

/**
 * The fuzz generator (test/hostile/fuzz-gen.ts): a seed gives one sequence,
 * every RPC and backend is covered, and no request it makes is one the spec
 * allows to destroy the volumes made before the fuzzing.
 */

const hex = (c: string) => c.repeat(32);
const ctx: FuzzContext = {
  nodeId: 'node-a',
  sandbox: '/tmp/strata-drv-test',
  sentinels: {
    root: '/tmp/fz-sent',
    file: '/tmp/fz-sent/victim.txt',
    dir: '/tmp/fz-sent/victim-dir',
    mount: '/tmp/fz-sent/mnt',
    mountFile: '/tmp/fz-sent/mnt/file',
    mountDir: '/tmp/fz-sent/mnt/dir',
    inSandbox: '/tmp/strata-drv-test/sentinel',
  },
  volumes: {
    rbd: { id: `s1:v:rbd:lab:rbd:csi-vol-${hex('a')}`, snapshotId: `s1:s:rbd:lab:rbd:csi-snap-${hex('b')}`, staging: '/tmp/strata-drv-test/rbd/staging', target: '/tmp/strata-drv-test/rbd/target', cap: goodCap('rbd'), capacity: 64 << 20, volumeContext: { fsType: 'ext4' }, publishContext: {} },
    cephfs: { id: `s1:v:cephfs:lab:cephfs:csi:csi-vol-${hex('c')}`, snapshotId: `s1:s:cephfs:lab:cephfs:csi:csi-vol-${hex('c')}:csi-snap-${hex('d')}`, staging: '/tmp/strata-drv-test/cephfs/staging', target: '/tmp/strata-drv-test/cephfs/target', cap: goodCap('cephfs'), capacity: 64 << 20, volumeContext: { subvolumePath: '/volumes/csi/x' }, publishContext: { userID: 'strata-x', userKey: 'k' } },
    s3: { id: `s1:v:s3:lab:_:${hex('e')}`, snapshotId: `s1:s:s3:lab:_:${hex('f')}`, staging: '/tmp/strata-drv-test/s3/staging', target: '/tmp/strata-drv-test/s3/target', cap: goodCap('s3'), capacity: 64 << 20, volumeContext: { bucket: `csi-vol-${hex('e')}`, prefix: 'fs/' }, publishContext: {} },
  },
  secrets: { rbd: { userID: 'admin', userKey: 'AQ==' }, cephfs: { userID: 'admin', userKey: 'AQ==' }, s3: { accessKeyID: 'A', secretAccessKey: 'S' } },
  params: { rbd: { backend: 'rbd', clusterID: 'lab', pool: 'rbd' }, cephfs: { backend: 'cephfs', clusterID: 'lab', fsName: 'cephfs' }, s3: { backend: 's3', clusterID: 'lab' } },
  secretMarker: 'MARKER',
};

const take = (seed: number, n: number, c = ctx) => [...hostileRequests(seed, c, n)];
const field = (r: FuzzRequest, k: string) => (r.req as Record<string, unknown> | undefined)?.[k];

describe('fuzz request generator', () => {
  it('gives the same requests for the same seed and different ones for another', () => {
    const a = take(16, 2000).map(describeRequest);
    assert.deepEqual(take(16, 2000).map(describeRequest), a);
    const b = take(17, 2000).map(describeRequest);
    assert.ok(a.filter((x, i) => x !== b[i]).length > 1900, 'another seed gives another sequence');
  });

  it('reads the seed from the environment as a number or as text', () => {
    assert.equal(seedFrom(undefined, 16), 16);
    assert.equal(seedFrom('123', 16), 123);
    assert.equal(seedFrom('hello', 16), seedFrom('hello', 1));
    assert.notEqual(seedFrom('hello', 16), seedFrom('hellp', 16));
  });

  it('covers every RPC, and every backend of the per-volume RPCs, in 10,000 requests', () => {
    const rs = take(16, 10_000);
    const seen = new Set(rs.map((r) => `${r.rpc}/${r.backend}`));
    for (const rpc of Object.keys(RPCS)) {
      const perBackend = rs.some((r) => r.rpc === rpc && r.backend !== '-');
      if (!perBackend) assert.ok(seen.has(`${rpc}/-`), `${rpc} is generated`);
      else for (const b of BACKENDS) assert.ok(seen.has(`${rpc}/${b}`), `${rpc} is generated for ${b}`);
    }
    assert.equal(new Set(rs.map((r) => r.service)).size, 3);
    assert.ok(rs.filter((r) => r.raw).length > 100, 'some requests are not protobuf at all');
    for (const r of rs) {
      assert.ok(r.expect === undefined || r.expect.length > 0, describeRequest(r));
      assert.ok(!r.expect?.includes('INTERNAL') && !r.expect?.includes('UNKNOWN'), describeRequest(r));
    }
    const checked = rs.filter((r) => r.expect).length;
    assert.ok(checked > 9000, `the answer's code is checked for almost every request (${checked})`);
    const refused = rs.filter((r) => r.expect && !r.expect.includes('OK')).length;
    assert.ok(refused > 5000, `most requests must be refused (${refused})`);
  });

  it('never asks for what would legitimately destroy the pre-made volumes or the sentinels', () => {
    const real = (b: Backend) => ctx.volumes[b]!;
    const s = ctx.sentinels;
    for (const r of take(99, 20_000)) {
      const why = describeRequest(r);
      const vid = field(r, 'volume_id');
      const b = r.backend === '-' ? undefined : real(r.backend);
      if (r.rpc === 'DeleteVolume') assert.ok(!BACKENDS.some((x) => real(x).id === vid), why);
      if (r.rpc === 'DeleteSnapshot') assert.ok(!BACKENDS.some((x) => real(x).snapshotId === field(r, 'snapshot_id')), why);
      if (r.rpc === 'ControllerUnpublishVolume' && b && vid === b.id) assert.ok(!['node-a', ''].includes(field(r, 'node_id') as string), why);
      if (r.rpc === 'NodeUnstageVolume') assert.ok(!BACKENDS.some((x) => real(x).staging === field(r, 'staging_target_path')), why);
      if (r.rpc === 'NodeUnpublishVolume') assert.ok(!BACKENDS.some((x) => real(x).target === field(r, 'target_path')), why);
      if (r.rpc === 'NodeStageVolume' && b && vid === b.id) {
        // Staged again only where it is, or at a path the node must refuse before anything else.
        const p = String(field(r, 'staging_target_path'));
        assert.ok(p === b.staging || !path.isAbsolute(p) || path.normalize(p) !== p || p.includes('\0') || p.length > 4096, why);
      }
      if (r.rpc === 'NodePublishVolume' && b && vid === b.id) {
        const t = String(field(r, 'target_path'));
        assert.ok(t.startsWith(ctx.sandbox + '/') || !t.startsWith('/') || t.includes('..') || t.includes('\0') || t.includes('//'), why);
      }
      // The sentinel mount may only be read from (as a staging path to publish from), never be a path that gets unmounted or mounted over.
      for (const k of ['target_path', 'volume_path']) assert.notEqual(field(r, k), s.mount, why);
      if (r.rpc !== 'NodePublishVolume') assert.notEqual(field(r, 'staging_target_path'), s.mount, why);
      if (r.rpc === 'ControllerExpandVolume' && b && vid === b.id) {
        const range = field(r, 'capacity_range') as { required_bytes?: number } | undefined;
        assert.ok(!range || (range.required_bytes ?? 0) <= b.capacity, `${why}: never grows a pre-made volume`);
      }
    }
  });

  it('classes ids by the grammar of issue 16', () => {
    for (const b of BACKENDS) {
      assert.ok(wellFormedId(ctx.volumes[b]!.id, 'v'), b);
      assert.ok(wellFormedId(ctx.volumes[b]!.snapshotId, 's'), b);
      assert.ok(!wellFormedId(ctx.volumes[b]!.snapshotId, 'v'), b);
      assert.ok(!wellFormedId(ctx.volumes[b]!.id + '\n', 'v'), b);
    }
    assert.ok(!wellFormedId(`s1:v:rbd:lab:--pool:csi-vol-${hex('a')}`, 'v'));
    assert.ok(!wellFormedId(`s1:v:rbd:lab:../x:csi-vol-${hex('a')}`, 'v'));
    assert.ok(!wellFormedId(`s1:v:s3:lab:192.168.1.1:${hex('a')}`, 'v'));
    assert.ok(wellFormedId(`s1:v:s3:lab:team-shared:${hex('a')}`, 'v'));
    assert.ok(wellFormedId(`s1:v:rbd:lab:UPPER:csi-vol-${hex('a')}`, 'v'));
    // RBD ids in a RADOS namespace: a CephFS id with its header changed to rbd is one of them.
    assert.ok(wellFormedId(`s1:v:rbd:lab:cephfs:csi:csi-vol-${hex('c')}`, 'v'));
    assert.ok(wellFormedId(`s1:s:rbd:lab:rbd:ns1:csi-snap-${hex('b')}`, 's'));
    assert.ok(!wellFormedId(`s1:v:rbd:lab:rbd:a:b:csi-vol-${hex('a')}`, 'v'));
    assert.ok(!wellFormedId(`s1:v:rbd:lab:rbd:${'n'.repeat(33)}:csi-vol-${hex('a')}`, 'v'));
    for (const r of take(3, 5000)) {
      if (r.rpc !== 'ControllerGetVolume') continue;
      const d = r.defects.join(' ');
      if (d.includes('volume_id: hostile')) assert.ok(!wellFormedId(String(field(r, 'volume_id')), 'v'), describeRequest(r));
    }
  });

  it('keeps to the backends it is given', () => {
    const rs = [...hostileRequests(5, ctx, 2000, { backends: ['cephfs'] })];
    assert.deepEqual([...new Set(rs.map((r) => r.backend))].sort(), ['-', 'cephfs']);
  });
});
