import type { Logger } from 'pino';
import { cephArgs, type CephConn } from '../../ceph/conn.js';
import { decodeNodeKey, encodeNodeKey } from '../../csi/grammar.js';
import { run } from '../../util/exec.js';
import { parseOutput } from '../../util/json.js';

/**
 * Fencing of RBD clients. At NodeStage a node records, in the image's
 * metadata under its own key, the librados client instances it opened the
 * image with (the address with its nonce, as `rbd status` shows its watch).
 * A ControllerUnpublish that finds such a record for the node (kubelet never
 * unstaged: force detach, out-of-service taint) puts exactly those instances
 * on the OSD blocklist before it answers, so the node's other volumes, which
 * have instances of their own, are untouched. A clean NodeUnstage removes the
 * record once its client is gone, so a clean detach fences nothing.
 *
 * Instance nonces are random and never reused, so an entry can only ever stop
 * the client it names. It must outlive that client, however long the node
 * stays partitioned or frozen: entries last BLOCKLIST_SECONDS (the term
 * ceph-csi's NetworkFence uses), far past any partition, and cost a few bytes
 * of OSD map each.
 */

export const CLIENT_PREFIX = 'strata.client.';
export const BLOCKLIST_SECONDS = 157_784_630;

/** The metadata key of a node's client record (node ids are hex-encoded in keys, as attachments are). */
export const clientKey = (nodeId: string): string => CLIENT_PREFIX + encodeNodeKey(nodeId);

export interface ClientRecord {
  v: 1;
  addrs: string[];
}

// What `rbd status` prints for a client: ip:port/nonce, IPv6 in brackets. Nothing else reaches `ceph osd blocklist`.
const ADDR = /^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]{2,45}\]):\d{1,5}\/\d{1,20}$/;
export const isClientAddr = (a: unknown): a is string => typeof a === 'string' && ADDR.test(a);

/** A record's addresses; anything that is not one is dropped (a record is never trusted to parse). */
export function parseClientRecord(v: string | undefined): ClientRecord | undefined {
  try {
    const r = JSON.parse(v ?? '') as Partial<ClientRecord>;
    return Array.isArray(r?.addrs) ? { v: 1, addrs: r.addrs.filter(isClientAddr) } : undefined;
  } catch {
    return undefined;
  }
}

/** Client records in a metadata map, by node id (keys that do not decode are skipped). */
export function clientsIn(meta: Record<string, string>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [k, v] of Object.entries(meta)) {
    if (!k.startsWith(CLIENT_PREFIX)) continue;
    const node = decodeNodeKey(k.slice(CLIENT_PREFIX.length));
    if (node) out.set(node, parseClientRecord(v)?.addrs ?? []);
  }
  return out;
}

/**
 * The instances a node attached with: the image's watchers now, less those
 * that were there before it attached and those other nodes recorded.
 */
export function ownInstances(after: string[], before: string[], others: Iterable<string[]>): string[] {
  const notMine = new Set([...before, ...[...others].flat()]);
  return [...new Set(after.filter((a) => isClientAddr(a) && !notMine.has(a)))].sort();
}

const TIMEOUT_MS = 30_000;

/** Blocklists client instances (a repeat only renews an entry, so retries are harmless); returns what it blocklisted. */
export async function blocklist(conn: CephConn, addrs: string[], log: Logger): Promise<string[]> {
  const valid = [...new Set(addrs.filter(isClientAddr))];
  await Promise.all(valid.map((a) => run('ceph', [...cephArgs(conn), 'osd', 'blocklist', 'add', a, String(BLOCKLIST_SECONDS)], { timeoutMs: TIMEOUT_MS, log })));
  if (valid.length) log.warn({ clients: valid }, 'fenced: client instances blocklisted');
  return valid;
}

/** The blocklist as `ceph osd blocklist ls` gives it: address to expiry. */
export async function blocklisted(conn: CephConn, log?: Logger): Promise<Map<string, string>> {
  const r = await run('ceph', [...cephArgs(conn), 'osd', 'blocklist', 'ls', '--format', 'json'], { timeoutMs: TIMEOUT_MS, log });
  const list = r.stdout.trim() ? parseOutput<Array<{ addr: string; until: string }>>(firstArray(r.stdout), 'ceph osd blocklist ls') : [];
  return new Map(list.map((e) => [e.addr, e.until]));
}

/** Pacific prints the address entries, then the range entries, as two JSON arrays back to back: the first one. */
export function firstArray(text: string): string {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '[' || c === '{') depth++;
    else if ((c === ']' || c === '}') && --depth === 0) return text.slice(0, i + 1);
  }
  return text;
}
