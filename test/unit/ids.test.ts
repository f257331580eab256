import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeId, nameHash, parseId, rbdIdBytes, MAX_ID_BYTES } from '../../src/csi/ids.js';
import { asciiJson, decodeNodeKey, encodeNodeKey, isBucketName, isNodeId } from '../../src/csi/grammar.js';

const H = 'a'.repeat(32);

describe('volume and snapshot ids', () => {
  it('round-trips and says what it is', () => {
    const id = encodeId({ kind: 'v', backend: 'rbd', cluster: 'lab', location: ['rbd', `csi-vol-${H}`] });
    assert.equal(id, `s1:v:rbd:lab:rbd:csi-vol-${H}`);
    assert.deepEqual(parseId(id, 'v'), { kind: 'v', backend: 'rbd', cluster: 'lab', location: ['rbd', `csi-vol-${H}`] });
    for (const [kind, backend, location] of [
      ['s', 'rbd', ['rbd', `csi-snap-${H}`]],
      ['v', 'cephfs', ['cephfs', 'csi', `csi-vol-${H}`]],
      ['s', 'cephfs', ['cephfs', 'csi', `csi-vol-${H}`, `csi-snap-${H}`]],
      ['v', 's3', ['_', H]],
      ['s', 's3', ['shared.bucket-1', H]],
    ] as const) {
      const s = encodeId({ kind, backend, cluster: 'lab', location: [...location] });
      assert.deepEqual(parseId(s, kind)?.location, location, s);
    }
  });

  it("carries an RBD image's RADOS namespace between pool and image, and still takes ids without one", () => {
    const id = encodeId({ kind: 'v', backend: 'rbd', cluster: 'lab', location: ['rbd', 'tenant-a', `csi-vol-${H}`] });
    assert.equal(id, `s1:v:rbd:lab:rbd:tenant-a:csi-vol-${H}`);
    assert.deepEqual(parseId(id, 'v')?.location, ['rbd', 'tenant-a', `csi-vol-${H}`]);
    assert.deepEqual(parseId(`s1:s:rbd:lab:rbd:t.1_x-y:csi-snap-${H}`, 's')?.location, ['rbd', 't.1_x-y', `csi-snap-${H}`]);
    // Ids minted before namespaces name the default namespace.
    assert.deepEqual(parseId(`s1:v:rbd:lab:rbd:csi-vol-${H}`, 'v')?.location, ['rbd', `csi-vol-${H}`]);
    for (const bad of ['', '-ns', '.ns', 'a/b', 'a b', 'n'.repeat(33), 'ns\n', 'csi-vol-x:y']) {
      assert.equal(parseId(`s1:v:rbd:lab:rbd:${bad}:csi-vol-${H}`, 'v'), undefined, JSON.stringify(bad));
    }
    assert.equal(parseId(`s1:v:rbd:lab:rbd:ns:extra:csi-vol-${H}`, 'v'), undefined);
    // A cluster id with ":" would read back as a cluster and a namespace: never minted.
    assert.throws(() => encodeId({ kind: 'v', backend: 'rbd', cluster: 'a:b', location: ['p', `csi-vol-${H}`] }));
  });

  it('sizes the longest RBD id, so parameters too long together are caught before an id is minted', () => {
    const sid = encodeId({ kind: 's', backend: 'rbd', cluster: 'c'.repeat(32), location: ['p'.repeat(11), 'n'.repeat(32), `csi-snap-${H}`] });
    assert.equal(Buffer.byteLength(sid), rbdIdBytes('c'.repeat(32), 'p'.repeat(11), 'n'.repeat(32)));
    assert.equal(rbdIdBytes('c'.repeat(32), 'p'.repeat(11), 'n'.repeat(32)), MAX_ID_BYTES);
    assert.equal(rbdIdBytes('lab', 'rbd'), Buffer.byteLength(`s1:s:rbd:lab:rbd:csi-snap-${H}`));
  });

  it('does not take a snapshot id for a volume id, nor foreign strings', () => {
    const sid = encodeId({ kind: 's', backend: 'rbd', cluster: 'lab', location: ['rbd', `csi-snap-${H}`] });
    assert.equal(parseId(sid, 'v'), undefined);
    for (const bad of ['', 'some-vol-id', `s2:v:rbd:lab:p:csi-vol-${H}`, `s1:v:nfs:lab:p:csi-vol-${H}`, 's1:v:rbd:lab', `s1:v:rbd:lab::csi-vol-${H}`]) {
      assert.equal(parseId(bad, 'v'), undefined, bad);
    }
  });

  it('case 1 and 2: takes no id part that a command could read as an option or a path could walk', () => {
    const hostile = [
      `s1:v:rbd:lab:--pool=x:csi-vol-${H}`,
      `s1:v:rbd:lab:rbd:--export=/tmp/x`,
      `s1:v:rbd:--id=x:rbd:csi-vol-${H}`,
      `s1:v:rbd:lab:..:csi-vol-${H}`,
      `s1:v:rbd:lab:rbd:csi-vol-${H}/../../etc`,
      `s1:v:rbd:lab:rbd:csi-vol-${H}\n`,
      `s1:v:rbd:lab:rbd:csi-vol-${H.toUpperCase()}`,
      `s1:v:rbd:lab:rbd:csi-vol-${H}:extra`,
      `s1:v:cephfs:lab:cephfs:csi:csi-vol-${'0'.repeat(31)}`,
      `s1:v:cephfs:lab:cephfs:../..:csi-vol-${H}`,
      `s1:v:s3:lab:-bucket:${H}`,
      `s1:v:s3:lab:a..b:${H}`,
      `s1:v:s3:lab:192.168.1.1:${H}`,
      `s1:v:s3:lab:_:${H}/..`,
      `s1:v:rbd:lab:rbd:csi-vol-${H}\u{1F600}`,
    ];
    for (const s of hostile) assert.equal(parseId(s, 'v'), undefined, JSON.stringify(s));
  });

  it('refuses to mint an id it would not parse, and ids over 128 bytes', () => {
    assert.throws(() => encodeId({ kind: 'v', backend: 'rbd', cluster: 'a:b', location: ['p', `csi-vol-${H}`] }));
    assert.throws(() => encodeId({ kind: 'v', backend: 'rbd', cluster: 'lab', location: ['-p', `csi-vol-${H}`] }));
    assert.throws(() => encodeId({ kind: 'v', backend: 'rbd', cluster: 'lab', location: ['p', 'x'.repeat(MAX_ID_BYTES)] }));
  });

  it('derives the same storage name for the same request name only', () => {
    assert.equal(nameHash('d', 'pvc-1'), nameHash('d', 'pvc-1'));
    assert.notEqual(nameHash('d', 'pvc-1'), nameHash('d', 'pvc-2'));
    assert.notEqual(nameHash('d1', 'pvc-1'), nameHash('d2', 'pvc-1'));
    assert.match(nameHash('d', 'ünïcode name'), /^[0-9a-f]{32}$/);
  });

  it('keeps the longest realistic ids within the CSI limit', () => {
    const rbd = encodeId({ kind: 's', backend: 'rbd', cluster: 'c'.repeat(32), location: ['p'.repeat(40), `csi-snap-${nameHash('d', 'n')}`] });
    assert.ok(Buffer.byteLength(rbd) <= MAX_ID_BYTES, `${Buffer.byteLength(rbd)} bytes`);
  });
});

describe('grammar of names and node ids', () => {
  it('takes Kubernetes node names and nothing a key store could mangle (cases 4 and 7)', () => {
    for (const ok of ['node-a', 'ip-10-0-0-1.ec2.internal', 'Worker1', 'a', 'a'.repeat(63) + '.' + 'b'.repeat(63)]) assert.ok(isNodeId(ok), ok);
    for (const bad of ['', 'node\nx', 'node:1', 'a=b', 'node a', '-node', 'node-', '../x', 'n\u{1F600}', 'ü', 'a'.repeat(254), 'a..b', 'x/y']) {
      assert.ok(!isNodeId(bad), JSON.stringify(bad));
    }
  });

  it('hex-encodes node ids in keys and decodes only valid ones back', () => {
    assert.equal(encodeNodeKey('node-a'), '6e6f64652d61');
    assert.equal(decodeNodeKey(encodeNodeKey('node-a')), 'node-a');
    for (const bad of ['', 'zz', '6e6f64652d6', Buffer.from('a:b').toString('hex')]) assert.equal(decodeNodeKey(bad), undefined, bad);
  });

  it('follows the S3 bucket naming rules', () => {
    for (const ok of ['abc', 'my.bucket-1', 'a'.repeat(63)]) assert.ok(isBucketName(ok), ok);
    for (const bad of ['ab', 'Abc', '-abc', 'abc-', 'a..b', 'a.-b', '10.0.0.1', 'a'.repeat(64), 'a_b', 'a/b']) assert.ok(!isBucketName(bad), bad);
  });

  it('stores free text as ASCII-only JSON that reads back unchanged', () => {
    const v = { name: 'pvc \u{1F600} ü\n"q"', n: 1 };
    const s = asciiJson(v);
    assert.match(s, /^[\x20-\x7e]*$/);
    assert.deepEqual(JSON.parse(s), v);
  });
});

describe('credential grammar', () => {
  it('refuses S3 keys that could break the passwd file or a signature', async () => {
    const { resolveS3Credentials } = await import('../../src/backends/s3/credentials.js');
    const s3 = { endpoint: 'http://127.0.0.1:7480', region: 'us-east-1' };
    assert.deepEqual(resolveS3Credentials(s3, { accessKeyID: 'AKIA0123', secretAccessKey: 's3cr3t/+=x' }), { accessKeyID: 'AKIA0123', secretAccessKey: 's3cr3t/+=x' });
    for (const secrets of [
      { accessKeyID: 'a:b', secretAccessKey: 'x' },
      { accessKeyID: 'a\nb', secretAccessKey: 'x' },
      { accessKeyID: 'a', secretAccessKey: 'x\nbucket:id:secret' },
      { accessKeyID: 'a', secretAccessKey: 'x y' },
      { accessKeyID: 'a', secretAccessKey: '' },
    ]) {
      assert.throws(() => resolveS3Credentials(s3, secrets), /not a valid|must hold both/, JSON.stringify(secrets));
    }
  });
});

describe('mount option grammar', () => {
  it('refuses options that name a path on the node or look like command options', async () => {
    const { parseS3Params } = await import('../../src/backends/s3/params.js');
    const { parseCephfsParams } = await import('../../src/backends/cephfs/params.js');
    for (const o of ['log-file=/etc/cron.d/x', 'cache-dir=/root', 'use_cache=/tmp/x', '--daemon-timeout=1', '-x']) {
      assert.throws(() => parseS3Params({ clusterID: 'c', mountOptions: o }), /mountOptions/, o);
      assert.throws(() => parseCephfsParams({ clusterID: 'c', fsName: 'fs', fuseMountOptions: o }), /fuseMountOptions/, o);
    }
    assert.deepEqual(parseS3Params({ clusterID: 'c', mountOptions: 'max_stat_cache_size=1000,multipart_size=64' }).mountOptions, ['max_stat_cache_size=1000', 'multipart_size=64']);
  });
});
