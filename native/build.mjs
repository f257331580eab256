// Builds the node plugin's mount addon (strata_mount.cc) with g++ against the Node-API headers
// from npm: Node-API is stable across Node versions, so neither node-gyp nor Node's own headers
// are needed. Skipped when the addon is newer than its source. Debian: apt-get install g++.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(here, 'strata_mount.cc');
const out = path.join(here, 'build', 'strata_mount.node');
if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) process.exit(0);

const require = createRequire(import.meta.url);
const addonApi = path.dirname(require.resolve('node-addon-api/package.json'));
const napiHeaders = path.join(path.dirname(require.resolve('node-api-headers/package.json')), 'include');
mkdirSync(path.dirname(out), { recursive: true });
// Node-API 8 is in every supported Node (20 and later).
const args = ['-std=c++17', '-O2', '-fPIC', '-shared', '-fvisibility=hidden', '-fno-exceptions', '-Wall', '-Werror',
  '-DNAPI_VERSION=8', '-DNAPI_DISABLE_CPP_EXCEPTIONS', '-DNODE_ADDON_API_DISABLE_DEPRECATED',
  '-I', addonApi, '-I', napiHeaders, src, '-o', `${out}.tmp`];
try {
  execFileSync('g++', args, { stdio: 'inherit' });
} catch (e) {
  console.error(`native/build.mjs: g++ failed (${e.message}); on Debian: apt-get install g++`);
  process.exit(1);
}
renameSync(`${out}.tmp`, out);
console.log(`native/build.mjs: built ${path.relative(process.cwd(), out)}`);
