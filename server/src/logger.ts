import pino from 'pino';

export type Logger = pino.Logger;

/** Paths that may hold a secret; pino replaces their values before anything is written. */
export const REDACTED_PATHS = [
  'password',
  'currentPassword',
  'token',
  'accessToken',
  'refreshToken',
  'authorization',
  'secret',
  '*.password',
  '*.currentPassword',
  '*.token',
  '*.accessToken',
  '*.refreshToken',
  '*.authorization',
  '*.secret',
  'req.headers.authorization',
  'req.headers.cookie',
  'input.password',
  'input.refreshToken',
];

export function createLogger(options: { level: string; destination?: pino.DestinationStream }): Logger {
  return pino(
    {
      level: options.level,
      base: { service: 'parley' },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      serializers: { err: pino.stdSerializers.err },
    },
    options.destination,
  );
}
