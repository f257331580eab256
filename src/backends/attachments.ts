import { isSingleNode, type AccessMode } from '../csi/capabilities.js';
import { alreadyExists, failedPrecondition } from '../errors.js';

/**
 * The publish rules every backend shares. Attachments are kept by the backend
 * in its own store (image or subvolume metadata), one record per node.
 */

export const ATTACH_PREFIX = 'strata.attach.';

export interface Attachment {
  mode: string;
  readonly: boolean;
}

/** Attachments found in a metadata map, by node id. */
export function attachmentsIn(meta: Record<string, string>): Map<string, Attachment> {
  const out = new Map<string, Attachment>();
  for (const [k, v] of Object.entries(meta)) if (k.startsWith(ATTACH_PREFIX)) out.set(k.slice(ATTACH_PREFIX.length), JSON.parse(v) as Attachment);
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
