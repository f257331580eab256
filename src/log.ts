import { pino, type Logger } from 'pino';

/**
 * JSON logging. Anything that could hold a credential is censored by path so
 * that a careless `log.info({ req })` still cannot leak it.
 */
export const REDACT_PATHS = [
  'secrets',
  '*.secrets',
  'req.secrets',
  'req.volume_capability.mount.mount_flags',
  'req.volume_capabilities[*].mount.mount_flags',
  'userKey',
  '*.userKey',
  'key',
  '*.key',
  'env.CEPH_ARGS',
  'secretAccessKey',
  '*.secretAccessKey',
];

export function createLogger(level = process.env.STRATA_LOG_LEVEL ?? 'info'): Logger {
  return pino({
    level,
    base: { app: 'strata' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}

export type { Logger };
