import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseS3Params } from '../../src/backends/s3/params.js';
import { rcloneCommand, s3fsCommand, type S3MountSpec } from '../../src/backends/s3/mount-commands.js';
import { bucketOf, dataPrefix, idOf, locationOf, recordKey, type Location } from '../../src/backends/s3/layout.js';
import { CopyJobs } from '../../src/backends/s3/copier.js';
import { bucketPolicy, prefixPolicy, prefixUser, volumeUser } from '../../src/backends/s3/volume-keys.js';
import { parseId } from '../../src/csi/ids.js';
import { createLogger } from '../../src/log.js';

describe('S3 StorageClass parameters', () => {
  it('applies defaults and reads ownership', () => {
    const p = parseS3Params({ backend: 's3', clusterID: 'lab', uid: '1000', gid: '2000', mode: '0770', 'csi.storage.k8s.io/pvc/name': 'x' });
    assert.deepEqual(p, { clusterID: 'lab', bucket: undefined, mounter: 's3fs', uid: 1000, gid: 2000, mode: 0o770, mountOptions: [] });
    assert.equal(parseS3Params({ clusterID: 'lab', bucket: 'team-data', mounter: 'rclone' }).bucket, 'team-data');
  });
  for (const [params, msg] of [
    [{ backend: 's3' }, /"clusterID" is required/],
    [{ clusterID: 'lab', bucket: 'Bad_Bucket' }, /"bucket"/],
    [{ clusterID: 'lab', bucket: 'ab' }, /"bucket"/],
    [{ clusterID: 'lab', bucket: `csi-vol-${'0'.repeat(31)}` }, /kept for the buckets of volumes/],
    [{ clusterID: 'lab', bucket: 'csi-snap-x' }, /kept for the buckets of volumes/],
    [{ clusterID: 'lab', mounter: 'goofys' }, /"mounter"/],
    [{ clusterID: 'lab', uid: '-1' }, /"uid"/],
    [{ clusterID: 'lab', mode: '999' }, /"mode"/],
    [{ clusterID: 'lab', mountOptions: 'passwd_file=/etc/x' }, /set by the driver/],
    [{ clusterID: 'lab', mountOptions: 'default_acl=private' }, /set by the driver/],
    [{ clusterID: 'lab', mountOptions: 's3-acl=private' }, /set by the driver/],
    [{ clusterID: 'lab', mountOptions: 'url=http://evil' }, /set by the driver/],
    [{ clusterID: 'lab', mountOptions: 'a b' }, /characters/],
    [{ clusterID: 'lab', bucketName: 'x' }, /unknown parameter "bucketName"/],
  ] as const) {
    it(`rejects ${JSON.stringify(params)}`, () => assert.throws(() => parseS3Params(params as Record<string, string>), msg));
  }
});

describe('S3 layout and ids', () => {
  const hash = 'a'.repeat(32);
  it('puts a volume with its own bucket at the bucket root', () => {
    const l: Location = { kind: 'v', cluster: 'lab', hash };
    assert.equal(bucketOf(l), `csi-vol-${hash}`);
    assert.equal(dataPrefix(l), 'fs/');
    assert.equal(recordKey(l), '.strata/record.json');
    assert.equal(idOf(l), `s1:v:s3:lab:_:${hash}`);
    assert.deepEqual(locationOf(parseId(idOf(l), 'v')!), { ...l, shared: undefined });
  });
  it('puts a volume in a shared bucket under its own prefix, records beside the data', () => {
    const l: Location = { kind: 's', cluster: 'lab', hash, shared: 'team' };
    assert.equal(bucketOf(l), 'team');
    assert.equal(dataPrefix(l), `csi-snap-${hash}/fs/`);
    assert.equal(recordKey(l), `csi-snap-${hash}/.strata/record.json`);
    assert.deepEqual(locationOf(parseId(idOf(l), 's')!), l);
  });
  it('keeps ids within 128 bytes for realistic names and refuses longer ones', () => {
    assert.ok(idOf({ kind: 'v', cluster: 'production-eu-1', hash, shared: 'a'.repeat(50) }).length <= 128);
    assert.throws(() => idOf({ kind: 'v', cluster: 'c'.repeat(32), hash, shared: 'b'.repeat(63) }), /128/);
  });
  it('treats foreign ids as unknown', () => {
    assert.equal(locationOf({ kind: 'v', backend: 's3', cluster: 'lab', location: ['_', 'not-a-hash'] }), undefined);
  });
});

describe('S3 mount commands', () => {
  const spec: S3MountSpec = {
    mounter: 's3fs', endpoint: 'http://rgw:7480', region: 'us-east-1', bucket: 'team', prefix: 'csi-vol-x/fs/',
    target: '/stage', readonly: false, uid: 1000, gid: 1000, mode: 0o775, options: ['multipart_size=64'],
  };
  it('s3fs: keys in a passwd file, path-style, ownership as options', () => {
    const [file, args] = s3fsCommand(spec, '/state/s3/k.passwd');
    assert.equal(file, 's3fs');
    assert.deepEqual(args.slice(0, 3), ['team:/csi-vol-x/fs', '/stage', '-o']);
    assert.deepEqual(args[3]!.split(','), [
      'passwd_file=/state/s3/k.passwd', 'url=http://rgw:7480', 'use_path_request_style', 'endpoint=us-east-1', 'allow_other',
      'stat_cache_expire=5', 'default_acl=bucket-owner-full-control', 'uid=1000', 'gid=1000', 'umask=0002', 'mp_umask=0002', 'multipart_size=64',
    ]);
    assert.match(s3fsCommand({ ...spec, readonly: true }, '/k')[1][3]!, /,ro(,|$)/);
  });
  it('rclone: streams writes (no write cache), keys only in the environment', () => {
    const [file, args, env] = rcloneCommand({ ...spec, mounter: 'rclone', readonly: true, options: ['transfers=8'] });
    assert.equal(file, 'rclone');
    assert.deepEqual(args.slice(0, 3), ['mount', ':s3:team/csi-vol-x/fs', '/stage']);
    for (const f of ['--daemon', '--allow-other', '--read-only', '--transfers=8']) assert.ok(args.includes(f), f);
    assert.equal(args[args.indexOf('--vfs-cache-mode') + 1], 'off');
    assert.equal(args[args.indexOf('--umask') + 1], '0002');
    // Our --no-checksum comes before user options so "no-checksum=false" wins.
    assert.ok(args.indexOf('--no-checksum') > 0 && args.indexOf('--no-checksum') < args.indexOf('--transfers=8'));
    assert.deepEqual(Object.keys(env).sort(), ['RCLONE_S3_ACL', 'RCLONE_S3_ENDPOINT', 'RCLONE_S3_FORCE_PATH_STYLE', 'RCLONE_S3_NO_CHECK_BUCKET', 'RCLONE_S3_PROVIDER', 'RCLONE_S3_REGION']);
    assert.ok(!args.some((a) => /secret|access.key/i.test(a)));
  });
});

describe('S3 volume users (RGW)', () => {
  it("a volume's user reaches its file system and reads its record, nothing else", () => {
    const l: Location = { kind: 'v', cluster: 'lab', hash: 'a'.repeat(32) };
    assert.equal(volumeUser(l), `strata-csi-vol-${'a'.repeat(32)}`);
    const p = JSON.parse(bucketPolicy(l)) as { Statement: Array<{ Effect: string; Principal: { AWS: string[] }; Action: string[]; Resource: string[] }> };
    const bucket = `csi-vol-${'a'.repeat(32)}`;
    for (const st of p.Statement) {
      assert.equal(st.Effect, 'Allow');
      assert.deepEqual(st.Principal.AWS, [`arn:aws:iam:::user/${volumeUser(l)}`]);
    }
    const writes = p.Statement.filter((st) => st.Action.some((a) => /Put|Delete/.test(a)));
    assert.deepEqual(writes.flatMap((st) => st.Resource), [`arn:aws:s3:::${bucket}/fs*`]);
    assert.deepEqual(p.Statement.flatMap((st) => st.Resource).sort(), [`arn:aws:s3:::${bucket}`, `arn:aws:s3:::${bucket}/.strata/record.json`, `arn:aws:s3:::${bucket}/fs*`]);
    assert.ok(!p.Statement.some((st) => st.Action.some((a) => /Policy|Acl|CreateBucket|DeleteBucket$|\*/.test(a))));
  });
  it("a node's user of a prefix reaches that prefix's file system and record, and lists only it where the mounter allows", () => {
    type Policy = { Statement: Array<{ Action: string[]; Resource: string[]; Condition?: unknown }> };
    const l: Location = { kind: 'v', cluster: 'lab', hash: 'b'.repeat(32), shared: 'team' };
    const root = `csi-vol-${'b'.repeat(32)}/`;
    assert.match(prefixUser(l, 'node-a'), new RegExp(`^strata-csi-vol-${'b'.repeat(32)}-[0-9a-f]{16}$`));
    assert.notEqual(prefixUser(l, 'node-a'), prefixUser(l, 'node-b'));
    assert.notEqual(prefixUser(l, 'node-a'), prefixUser({ ...l, shared: 'other' }, 'node-a'));
    const p = JSON.parse(prefixPolicy(l, 'rclone')) as Policy;
    const writes = p.Statement.filter((st) => st.Action.some((a) => /Put|Delete/.test(a)));
    assert.deepEqual(writes.flatMap((st) => st.Resource), [`arn:aws:s3:::team/${root}fs*`]);
    assert.deepEqual([...new Set(p.Statement.flatMap((st) => st.Resource))].sort(), ['arn:aws:s3:::team', `arn:aws:s3:::team/${root}.strata/record.json`, `arn:aws:s3:::team/${root}fs*`]);
    assert.deepEqual(p.Statement.find((st) => st.Action.includes('s3:ListBucket'))!.Condition, { StringLike: { 's3:prefix': [`${root}fs*`] } });
    // s3fs checks the bucket with an unfiltered listing when it mounts.
    assert.equal((JSON.parse(prefixPolicy(l, 's3fs')) as Policy).Statement.find((st) => st.Action.includes('s3:ListBucket'))!.Condition, undefined);
  });
});

describe('S3 copy jobs', () => {
  it('joins a running copy, reports "running" until it ends, and reports a failure once', async () => {
    const jobs = new CopyJobs(createLogger('error'));
    let runs = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const work = async () => {
      runs++;
      await gate;
    };
    assert.equal(await jobs.run('k', work, 10), 'running');
    assert.equal(await jobs.run('k', work, 10), 'running');
    release();
    assert.equal(await jobs.run('k', work, 1000), 'done');
    assert.equal(runs, 1, 'the second call joined the first copy');
    await assert.rejects(jobs.run('bad', async () => Promise.reject(new Error('boom')), 1000), /boom/);
    assert.equal(await jobs.run('bad', async () => undefined, 1000), 'done', 'a failed copy starts over on the next call');
  });
  it('cancel stops a copy and waits for it', async () => {
    const jobs = new CopyJobs(createLogger('error'));
    let stoppedAt = -1;
    void jobs.run('c', async (cancelled) => {
      for (let i = 0; i < 1000; i++) {
        if (cancelled()) {
          stoppedAt = i;
          return;
        }
        await new Promise((r) => setTimeout(r, 2));
      }
    }, 0);
    await new Promise((r) => setTimeout(r, 20));
    await jobs.cancel('c');
    assert.ok(stoppedAt > 0 && stoppedAt < 1000, `stopped at ${stoppedAt}`);
  });
});
