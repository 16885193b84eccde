/**
 * The structured logger (pino): JSON lines, or human-readable when stdout is a TTY. Every
 * line about a message carries its queue id (qid); every line about a connection its session
 * id (sid). Secrets never reach a log: AUTH payloads are never passed in, and redactSecrets()
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
    formatters: { log: redactSecrets },
    timestamp: isoTimeOncePerMillisecond(),
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
  // Lines are gathered and written 4 KiB at a time, or every LOG_FLUSH_MS when fewer come: a
  // write per line (7 lines per message) cost a thread-pool round trip each under load. On exit
  // pino writes what is left; a kill -9 loses at most the last LOG_FLUSH_MS of lines.
  const destination = pino.destination({
    dest: opts.destination ?? 1,
    sync: false,
    minLength: LOG_BUFFER_BYTES,
    periodicFlush: LOG_FLUSH_MS,
  });
  return pino(base, destination);
}

/** Log lines are written when this many bytes are waiting… */
const LOG_BUFFER_BYTES = 4096;
/** …or at the latest this long after the first of them. */
const LOG_FLUSH_MS = 100;

/**
 * pino's ISO-8601 "time" field, formatted once per millisecond: a busy server writes several
 * lines in the same millisecond, and formatting the date was a tenth of the cost of a line.
 */
function isoTimeOncePerMillisecond(): () => string {
  let lastMs = -1;
  let field = '';
  return () => {
    const now = Date.now();
    if (now !== lastMs) {
      lastMs = now;
      field = `,"time":"${new Date(now).toISOString()}"`;
    }
    return field;
  };
}

/** Field names whose values never reach a log, at the top level or one level down. */
const SECRET_FIELDS: ReadonlySet<string> = new Set(['password', 'credentials', 'secret']);
const CENSORED = '<redacted>';

/**
 * The object of one log line with every SECRET_FIELDS value, at the top level or one level
 * down (`{ auth: { password } }`), replaced by "<redacted>"; the object itself when it holds
 * none, which is every line Sterna writes: nothing is copied then. (pino's own `redact` option
 * copied the object of every line, a tenth of all the memory a message allocated.)
 */
export function redactSecrets(obj: Record<string, unknown>): Record<string, unknown> {
  if (!holdsSecret(obj)) return obj;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(obj)) {
    if (SECRET_FIELDS.has(key)) out[key] = CENSORED;
    else if (isPlainObject(value) && holdsSecretField(value)) {
      const inner: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value)) inner[k] = SECRET_FIELDS.has(k) ? CENSORED : v;
      out[key] = inner;
    } else out[key] = value;
  }
  return out;
}

function holdsSecret(obj: Record<string, unknown>): boolean {
  for (const key in obj) {
    if (SECRET_FIELDS.has(key)) return true;
    const value = obj[key];
    if (isPlainObject(value) && holdsSecretField(value)) return true;
  }
  return false;
}

function holdsSecretField(obj: Record<string, unknown>): boolean {
  for (const key in obj) if (SECRET_FIELDS.has(key)) return true;
  return false;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Error);
}

/** A logger that drops everything, for tests and tools. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
