import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { tmpdir } from 'node:os';
import type { ClusterConfig } from '../config/config.js';
import { failedPrecondition, invalidArgument } from '../errors.js';

/**
 * Ceph identities reach Ceph tools as --id plus --keyfile, never --key, so a
 * key never shows in `ps`. Request secrets (userID/userKey) override the
 * cluster's default identity from config. Key files live in a private 0700
 * directory (tmpfs when the host has /dev/shm), one per distinct identity,
 * and are removed when the process exits.
 */

export interface CephIdentity {
  id: string;
  keyFile: string;
}

const userIdPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const keyPattern = /^[A-Za-z0-9+/=]{16,128}$/;

export class KeyFiles {
  private dir: string | undefined;
  private readonly written = new Set<string>();

  private ensureDir(): string {
    if (!this.dir) {
      const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
      this.dir = mkdtempSync(path.join(base, 'strata-keys-'));
      process.once('exit', () => this.dispose());
    }
    return this.dir;
  }

  /** Returns the path of a 0600 file holding `key`, writing it once. */
  fileFor(id: string, key: string): string {
    const name = createHash('sha256').update(id).update('\0').update(key).digest('hex').slice(0, 24);
    const file = path.join(this.ensureDir(), name);
    if (!this.written.has(file) || !existsSync(file)) {
      writeFileSync(file, key + '\n', { mode: 0o600 });
      this.written.add(file);
    }
    return file;
  }

  dispose(): void {
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
    this.written.clear();
  }
}

export function resolveCephIdentity(
  cluster: ClusterConfig,
  secrets: Record<string, string> | undefined,
  keyFiles: KeyFiles,
): CephIdentity {
  const userID = secrets?.userID;
  const userKey = secrets?.userKey;
  if (userID !== undefined || userKey !== undefined) {
    if (!userID || !userKey) throw invalidArgument('secrets must carry both userID and userKey');
    if (!userIdPattern.test(userID)) throw invalidArgument('secret userID is not a valid Ceph user name');
    if (!keyPattern.test(userKey)) throw invalidArgument('secret userKey is not a valid Ceph key (base64)');
    return { id: userID, keyFile: keyFiles.fileFor(userID, userKey) };
  }
  const ceph = cluster.ceph;
  if (ceph?.userID && ceph.userKeyFile) return { id: ceph.userID, keyFile: ceph.userKeyFile };
  throw failedPrecondition(
    `no Ceph credentials for cluster "${cluster.id}": pass secrets userID and userKey, or set ceph.userID and ceph.userKeyFile in the config`,
  );
}
