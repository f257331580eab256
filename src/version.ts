import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package version, read from package.json wherever the code runs from. */
export function packageVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'strata-csi' && pkg.version) return pkg.version;
    } catch {
      /* keep walking up */
    }
    dir = path.dirname(dir);
  }
  return '0.0.0-unknown';
}
