import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where test/k8s/build.sh keeps what it built, read from the manifest it writes. */

export const K8S_CACHE = process.env.STRATA_K8S_CACHE ?? '/var/cache/strata-k8s';
export const K8S_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../test/k8s');

export interface BuiltPaths {
  K8S_VERSION: string;
  K8S_BIN: string;
  PROVISIONER_VERSION: string;
  ATTACHER_VERSION: string;
  RESIZER_VERSION: string;
  SNAPSHOTTER_VERSION: string;
  CSI_PROVISIONER: string;
  CSI_ATTACHER: string;
  CSI_RESIZER: string;
  CSI_SNAPSHOTTER: string;
  SNAPSHOT_CONTROLLER: string;
  SNAPSHOT_CRDS: string;
  NODE_DRIVER_REGISTRAR: string;
  LIVENESSPROBE: string;
  PAUSE: string;
}

/**
 * Runs build.sh for the targets (a no-op within seconds when all is cached) and returns the paths.
 * Builds that are not cached take long (Kubernetes: 30 min or more here), so the test command
 * starts `build.sh` in the background early.
 */
export function ensureBuilt(targets: string[]): BuiltPaths {
  execFileSync('bash', [path.join(K8S_DIR, 'build.sh'), ...targets], { stdio: ['ignore', 'inherit', 'inherit'] });
  return readBuiltPaths();
}

/** The paths of the last build, without building. */
export function readBuiltPaths(): BuiltPaths {
  const env: Record<string, string> = {};
  for (const line of readFileSync(path.join(K8S_CACHE, 'paths.env'), 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) env[m[1]!] = m[2]!;
  }
  return env as unknown as BuiltPaths;
}
