import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, statSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { run } from '../../src/util/exec.js';
import { loadCsi } from '../../src/csi/proto.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

function files(dir: string, base = dir): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? files(p, base) : [path.relative(base, p)];
  });
}

describe('proto/csi.proto', () => {
  it('loads, with every CSI service', () => {
    const csi = loadCsi().csi.v1;
    for (const s of ['Identity', 'Controller', 'Node', 'GroupController', 'SnapshotMetadata'] as const) assert.ok(csi[s].service, s);
  });

  it('has committed generated types that match it (no drift)', async () => {
    const out = mkdtempSync(path.join(tmpdir(), 'strata-gen-'));
    try {
      const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
      const args = pkg.scripts['gen:proto']!.split(' ').slice(1).map((a) => (a.startsWith('--outDir=') ? `--outDir=${out}` : a));
      await run(path.join(root, 'node_modules/.bin/proto-loader-gen-types'), args, { cwd: root });
      const committed = path.join(root, 'src/csi/gen');
      assert.deepEqual(files(out).sort(), files(committed).sort());
      for (const f of files(out)) assert.equal(readFileSync(path.join(out, f), 'utf8'), readFileSync(path.join(committed, f), 'utf8'), `${f} drifted: run npm run gen:proto`);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
