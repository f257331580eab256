import { unavailable } from '../errors.js';

/**
 * JSON from tools and stores is parsed only when it is whole: a command cut
 * short, or a cluster answering mid-failover, must not surface as a parse
 * error (INTERNAL). Output that does not parse is a retryable UNAVAILABLE.
 */
export function parseOutput<T>(text: string, what: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw unavailable(`${what} gave incomplete or unreadable output (${text.length} bytes); retry`);
  }
}

/** A record Strata stored itself, or undefined when it is missing or does not parse. */
export function parseRecord<T>(text: string | undefined): T | undefined {
  if (!text) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined;
  }
}
