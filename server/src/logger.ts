import { createRequire } from 'node:module';
import pino from 'pino';

export type Logger = pino.Logger;

/** Paths that may hold a secret; pino replaces their values before anything is written. */
export const REDACTED_PATHS = [
  'password',
  'currentPassword',
  'passwordHash',
  'token',
  'accessToken',
  'refreshToken',
  'tokens',
  'authorization',
  'secret',
  'jwtSecret',
  'connectionParams',
  'databaseUrl',
  'redisUrl',
  '*.password',
  '*.currentPassword',
  '*.passwordHash',
  '*.token',
  '*.accessToken',
  '*.refreshToken',
  '*.tokens',
  '*.authorization',
  '*.secret',
  '*.jwtSecret',
  '*.connectionParams',
  '*.databaseUrl',
  '*.redisUrl',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'headers.cookie',
  'input.password',
  'input.currentPassword',
  'input.refreshToken',
  'config.jwt.secret',
  'jwt.secret',
];

const JWT = /eyJ[\w-]{2,}\.[\w-]{2,}\.[\w-]{2,}/g;
const URL_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*):[^@/\s]+@/gi;

/** Removes what an error message may carry by accident: JWTs and passwords inside URLs. */
function scrubText(text: string): string {
  return text.replace(JWT, '[redacted-jwt]').replace(URL_CREDENTIALS, '$1:[redacted]@');
}

interface QueryError {
  query: string;
  params: unknown[];
}

function isQueryError(value: unknown): value is QueryError {
  return (
    typeof value === 'object' &&
    value !== null &&
    'params' in value &&
    Array.isArray(value.params) &&
    'query' in value &&
    typeof value.query === 'string'
  );
}

/**
 * pino's error serializer, minus query parameters: drizzle puts every bound value (password
 * hashes, token hashes, message bodies) into a failed query's message and `params`.
 */
function serializeError(error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  const serialized = pino.stdSerializers.err(error);
  // Typed as strings, but an error built by hand may lack either.
  let message = typeof serialized.message === 'string' ? serialized.message : '';
  let stack = typeof serialized.stack === 'string' ? serialized.stack : '';
  for (let current: unknown = error, depth = 0; current && depth < 10; depth++) {
    if (isQueryError(current) && current.params.length > 0) {
      const listed = `params: ${String(current.params)}`;
      message = message.split(listed).join('params: [redacted]');
      stack = stack.split(listed).join('params: [redacted]');
      // PostgreSQL echoes offending values in its own messages ("invalid input syntax: ...").
      for (const param of current.params) {
        const value = typeof param === 'string' ? param : null;
        if (value && value.length >= 4) {
          message = message.split(value).join('[redacted]');
          stack = stack.split(value).join('[redacted]');
        }
      }
    }
    current = current instanceof Error ? current.cause : undefined;
  }
  serialized.message = scrubText(message);
  serialized.stack = scrubText(stack);
  if ('params' in serialized) (serialized as unknown as Record<string, unknown>).params = '[redacted]';
  return serialized;
}

/** Resolves `pino-pretty` when it is installed (a development dependency); null otherwise. */
function prettyTarget(): string | null {
  try {
    return createRequire(import.meta.url).resolve('pino-pretty');
  } catch {
    return null;
  }
}

export function createLogger(options: {
  level: string;
  destination?: pino.DestinationStream;
  /** Human-readable lines through `pino-pretty` when it is installed; JSON otherwise. */
  pretty?: boolean;
}): Logger {
  let destination = options.destination;
  const target = options.pretty && !destination ? prettyTarget() : null;
  if (target) {
    destination = pino.transport({
      target,
      options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service' },
    });
  }
  return pino(
    {
      level: options.level,
      base: { service: 'parley' },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      serializers: { err: serializeError, error: serializeError },
    },
    destination,
  );
}
