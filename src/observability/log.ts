/**
 * The structured logger (pino): JSON lines, or human-readable when stdout is a TTY. Every
 * line about a message carries its queue id (qid); every line about a connection its session
 * id (sid). Secrets never reach a log: AUTH payloads are never passed in, and the redact list
 * below is a second line of defence.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export interface LogOptions {
  level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
  format: 'auto' | 'json' | 'pretty';
  /** Destination file descriptor or path; stdout by default. */
  destination?: number | string;
}

export function createLogger(opts: LogOptions): Logger {
  const pretty = opts.format === 'pretty' || (opts.format === 'auto' && process.stdout.isTTY);
  const base = {
    level: opts.level,
    base: { app: 'sterna' },
    redact: {
      paths: ['password', '*.password', 'credentials', '*.credentials', 'secret'],
      censor: '<redacted>',
    },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (pretty) {
    return pino({
      ...base,
      transport: {
        target: 'pino-pretty',
        options: { colorize: true, translateTime: 'SYS:standard', ignore: 'app' },
      },
    });
  }
  return pino(base, pino.destination({ dest: opts.destination ?? 1, sync: false }));
}

/** A logger that drops everything, for tests and tools. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
