import { isSingleNode, type AccessMode } from '../csi/capabilities.js';
import { alreadyExists, failedPrecondition } from '../errors.js';
import { decodeNodeKey, encodeNodeKey } from '../csi/grammar.js';

/**
 * The publish rules every backend shares. Attachments are kept by the backend
 * in its own store (image or subvolume metadata), one record per node.
 */

export const ATTACH_PREFIX = 'strata.attach.';

export interface Attachment {
  mode: string;
  readonly: boolean;
}

/** The metadata key of a node's attachment (node ids are hex-encoded in keys). */
export const attachKey = (nodeId: string): string => ATTACH_PREFIX + encodeNodeKey(nodeId);

/** An attachment record, or undefined for anything that is not one (a record is never trusted to parse). */
export function parseAttachment(v: string | undefined): Attachment | undefined {
  try {
    const a = JSON.parse(v ?? '') as Partial<Attachment>;
    return typeof a?.mode === 'string' && typeof a.readonly === 'boolean' ? { mode: a.mode, readonly: a.readonly } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Attachments found in a metadata map, by node id. A key or value that does
 * not decode still counts as an attachment of an unknown node, so a damaged
 * record blocks a single-node publish instead of being ignored.
 */
export function attachmentsIn(meta: Record<string, string>): Map<string, Attachment> {
  const out = new Map<string, Attachment>();
  for (const [k, v] of Object.entries(meta)) {
    if (!k.startsWith(ATTACH_PREFIX)) continue;
    const node = decodeNodeKey(k.slice(ATTACH_PREFIX.length));
    out.set(node ?? `(undecodable ${k})`, parseAttachment(v) ?? { mode: 'SINGLE_NODE_WRITER', readonly: false });
  }
  return out;
}

/**
 * Decides a ControllerPublish: 'exists' when this node already has it with the
 * same options (idempotent retry), 'add' when it may be recorded; throws
 * ALREADY_EXISTS for other options and FAILED_PRECONDITION when a single-node
 * mode meets another node's attachment.
 */
export function decidePublish(current: Map<string, Attachment>, nodeId: string, mode: AccessMode, readonly: boolean): 'exists' | 'add' {
  const mine = current.get(nodeId);
  if (mine) {
    if (mine.readonly !== readonly || mine.mode !== mode) throw alreadyExists(`volume is already published to node ${nodeId} with different options`);
    return 'exists';
  }
  for (const [node, a] of current) {
    if (isSingleNode(mode)) throw failedPrecondition(`volume has a single-node access mode and is attached to node ${node}`);
    if (isSingleNode(a.mode as AccessMode)) throw failedPrecondition(`volume is attached with a single-node access mode to node ${node}`);
  }
  return 'add';
}
