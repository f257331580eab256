import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { StageRecords } from '../../src/node/stage-records.js';
import type * as csi from '../../src/csi/types.js';

const stageReq = (volume_id: string, staging: string): csi.NodeStageVolumeRequest =>
  ({ volume_id, staging_target_path: staging, secrets: { secretAccessKey: 'k' }, volume_context: { bucket: 'b' }, publish_context: {} }) as unknown as csi.NodeStageVolumeRequest;

describe('stage records (what a FUSE remount needs)', () => {
  it('keeps a stage and its targets, owner-only, and forgets them on unpublish and unstage', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-rec-'));
    const r = new StageRecords(dir);
    r.staged(stageReq('v1', '/k/s1'), true);
    r.staged(stageReq('v2', '/k/s2'), true);
    r.published('v1', '/k/s1', '/pods/a', { readonly: false, flags: [] });
    r.published('v1', '/k/s1', '/pods/b/', { readonly: true, flags: ['noexec'] });
    r.published('v2', '/k/s1', '/pods/c', { readonly: false, flags: [] }); // another volume's staging path: ignored
    assert.deepEqual(Object.keys(r.get('/k/s1')!.targets).sort(), ['/pods/a', '/pods/b']);
    assert.equal(r.get('/k/s1')!.request.secrets.secretAccessKey, 'k');
    for (const f of readdirSync(path.join(dir, 'staged'))) assert.equal(statSync(path.join(dir, 'staged', f)).mode & 0o777, 0o600);
    assert.equal(statSync(path.join(dir, 'staged')).mode & 0o777, 0o700);

    // Kubelet staging again under running pods keeps the targets; another volume at the path does not.
    r.staged(stageReq('v1', '/k/s1'), true);
    assert.equal(Object.keys(r.get('/k/s1')!.targets).length, 2);
    r.unpublished('v1', '/pods/a');
    assert.deepEqual(Object.keys(r.get('/k/s1')!.targets), ['/pods/b']);
    r.staged(stageReq('v3', '/k/s1'), true);
    assert.deepEqual(r.get('/k/s1')!.targets, {});

    r.unstaged('/k/s1');
    assert.equal(r.get('/k/s1'), undefined);
    assert.deepEqual(r.all().map((x) => x.request.volume_id), ['v2']);
  });

  it('records a kernel stage without its secrets: it only says which volume the path holds', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-rec-'));
    const r = new StageRecords(dir);
    r.staged(stageReq('v1', '/k/s1'), false);
    const rec = r.get('/k/s1')!;
    assert.equal(rec.request.volume_id, 'v1');
    assert.equal(rec.kernel, true);
    assert.deepEqual(rec.request.secrets, {});
    assert.doesNotMatch(readFileSync(path.join(dir, 'staged', readdirSync(path.join(dir, 'staged'))[0]!), 'utf8'), /secretAccessKey/);
    r.staged(stageReq('v1', '/k/s2'), true);
    assert.equal(r.get('/k/s2')!.kernel, undefined, 'a FUSE stage is one to heal');
  });

  it('skips files it cannot read instead of failing the node', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-rec-'));
    const r = new StageRecords(dir);
    assert.deepEqual(r.all(), [], 'no directory yet');
    r.staged(stageReq('v1', '/k/s1'), true);
    writeFileSync(path.join(dir, 'staged', 'junk.json'), '{not json');
    writeFileSync(path.join(dir, 'staged', 'old.json'), JSON.stringify({ v: 0 }));
    assert.deepEqual(r.all().map((x) => x.request.volume_id), ['v1']);
  });
});
