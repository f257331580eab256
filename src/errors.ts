import { status } from '@grpc/grpc-js';

/**
 * An error that carries the gRPC status the CSI spec asks for. Handlers throw
 * these; the RPC wrapper turns them into a status at the edge. Anything else
 * thrown becomes INTERNAL with a generic message, so stray details (paths,
 * command output that might echo secrets) never reach the CO unplanned.
 */
export class CsiError extends Error {
  constructor(readonly code: status, message: string) {
    super(message);
    this.name = 'CsiError';
  }
}

export const invalidArgument = (msg: string) => new CsiError(status.INVALID_ARGUMENT, msg);
export const notFound = (msg: string) => new CsiError(status.NOT_FOUND, msg);
export const alreadyExists = (msg: string) => new CsiError(status.ALREADY_EXISTS, msg);
export const failedPrecondition = (msg: string) => new CsiError(status.FAILED_PRECONDITION, msg);
export const outOfRange = (msg: string) => new CsiError(status.OUT_OF_RANGE, msg);
export const aborted = (msg: string) => new CsiError(status.ABORTED, msg);
export const unimplemented = (msg: string) => new CsiError(status.UNIMPLEMENTED, msg);
export const internal = (msg: string) => new CsiError(status.INTERNAL, msg);
export const unavailable = (msg: string) => new CsiError(status.UNAVAILABLE, msg);
export const resourceExhausted = (msg: string) => new CsiError(status.RESOURCE_EXHAUSTED, msg);
export const deadlineExceeded = (msg: string) => new CsiError(status.DEADLINE_EXCEEDED, msg);
export const unauthenticated = (msg: string) => new CsiError(status.UNAUTHENTICATED, msg);

export function isCsiError(e: unknown, code?: status): e is CsiError {
  return e instanceof CsiError && (code === undefined || e.code === code);
}
