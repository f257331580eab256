import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { tmpdir } from 'node:os';
import type { ClusterConfig } from '../config/config.js';
import { failedPrecondition, invalidArgument } from '../errors.js';
import { currentCall } from '../util/call-context.js';

/**
 * Ceph identities reach Ceph tools as --id plus --keyfile, never --key, so a
 * key never shows in `ps`. Request secrets (userID/userKey) override the
 * cluster's default identity from config.
 *
 * A request's key is written to a 0600 file in a private 0700 directory
 * (tmpfs when the host has /dev/shm) only when a tool needs it (the identity's
 * keyFile is read): the rados client takes the key on stdin, so a controller
 * call that only talks to it writes no file. Each fileFor() holds the file
 * until its gRPC call has settled (ceph-fuse and rbd-fuse read it while the
 * stage call runs, and keep the key in memory once connected), or for HOLD_MS
 * outside a call (the healer). The directory is named after the process (pid
 * and start time), so a driver that starts removes the directories of dead
 * ones, whatever killed them.
 */

export interface CephIdentity {
  id: string;
  /** A 0600 file holding the key, for Ceph tools; a request's key is written there when this is first read. */
  readonly keyFile: string;
  /** The key, for the rados client. */
  key(): string;
  /** Tells identities (user and key) apart without holding the key: one rados client per tag. */
  readonly tag: string;
}

/** An identity whose key is in a file already (the config's default identity). */
export function identityFromFile(id: string, keyFile: string): CephIdentity {
  return { id, keyFile, tag: `file:${keyFile}`, key: () => readFileSync(keyFile, 'utf8').trim() };
}

const userIdPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
// A cephx key is 28 bytes (a 12-byte header and a 16-byte secret), so 40 base64 characters ending in "==".
const keyPattern = /^[A-Za-z0-9+/]{38}==$/;
const DIR_PREFIX = 'strata-keys-';
/** How long a key file made outside any call stays (longer than any command it is for). */
export const HOLD_MS = 120_000;

export const keyBaseDir = (): string => (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());

/** A process's start time (clock ticks since boot), which tells it from a later process with the same pid; undefined once it is gone. */
export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22, counted after the command name, which may itself hold spaces and parentheses.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return f[0] === 'Z' ? undefined : f[19];
  } catch {
    return undefined;
  }
}

/** The directory name part that names the owning process. */
const ownerTag = (pid: number, start: string) => `${DIR_PREFIX}${pid}-${start}-`;

/** Removes key directories in `base` whose owning process is gone; returns the names removed. */
export function sweepKeyDirs(base = keyBaseDir()): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(base);
  } catch {
    return removed;
  }
  for (const name of names) {
    // Directories of versions before this naming (strata-keys-XXXXXX) name no owner: only a killed process leaves them.
    const legacy = /^strata-keys-[A-Za-z0-9]{6}$/.test(name);
    const m = /^strata-keys-(\d+)-(\d+)-/.exec(name);
    if (!legacy && (!m || processStart(Number(m[1])) === m[2])) continue;
    rmSync(path.join(base, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

/** Key files of this process: one directory, files counted by holder, shared by every KeyFiles. */
const shared = {
  dir: undefined as string | undefined,
  holders: new Map<string, number>(),
  swept: false,
};

function keyDir(): string {
  if (!shared.dir) {
    const start = processStart(process.pid) ?? '0';
    shared.dir = mkdtempSync(path.join(keyBaseDir(), ownerTag(process.pid, start)));
    process.once('exit', () => disposeKeyFiles());
  }
  return shared.dir;
}

/** Removes every key file of this process (exit, tests). */
export function disposeKeyFiles(): void {
  if (shared.dir) rmSync(shared.dir, { recursive: true, force: true });
  shared.dir = undefined;
  shared.holders.clear();
}

/** A key file's name: the user and key hashed, so the same identity shares one file. */
const keyTag = (id: string, key: string): string => createHash('sha256').update(id).update('\0').update(key).digest('hex').slice(0, 24);

export class KeyFiles {
  constructor() {
    // The first use in a process is its start-up: what killed processes left goes now.
    if (!shared.swept) {
      shared.swept = true;
      sweepKeyDirs();
    }
  }

  /** A request's identity; its key goes to a file only if its keyFile is read. */
  identity(id: string, key: string): CephIdentity {
    const tag = keyTag(id, key);
    let file: string | undefined;
    const hold = (): string => (file ??= this.hold(tag, key));
    return {
      id,
      tag,
      key: () => key,
      get keyFile() {
        return hold();
      },
    };
  }

  /** Returns the path of a 0600 file holding `key`, kept while the current call (or HOLD_MS) needs it. */
  fileFor(id: string, key: string): string {
    return this.hold(keyTag(id, key), key);
  }

  private hold(name: string, key: string): string {
    const file = path.join(keyDir(), name);
    const n = shared.holders.get(file) ?? 0;
    if (!n || !existsSync(file)) writeFileSync(file, key + '\n', { mode: 0o600 });
    shared.holders.set(file, n + 1);
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      const left = (shared.holders.get(file) ?? 1) - 1;
      if (left > 0) shared.holders.set(file, left);
      else {
        shared.holders.delete(file);
        rmSync(file, { force: true });
      }
    };
    const call = currentCall();
    // Work a call left running after it settled is held like work outside any call.
    if (call && !call.settled) call.onSettled(release);
    else setTimeout(release, HOLD_MS).unref();
    return file;
  }

  /** Key files held now (tests). */
  static held(): number {
    return shared.holders.size;
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
    return keyFiles.identity(userID, userKey);
  }
  const ceph = cluster.ceph;
  if (ceph?.userID && ceph.userKeyFile) return identityFromFile(ceph.userID, ceph.userKeyFile);
  throw failedPrecondition(
    `no Ceph credentials for cluster "${cluster.id}": pass secrets userID and userKey, or set ceph.userID and ceph.userKeyFile in the config`,
  );
}
