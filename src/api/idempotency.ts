/**
 * Idempotency-Key for the HTTP submission API (docs/http-api.md; the header as drafted in
 * draft-ietf-httpapi-idempotency-key-header): a retried request with the same key, from the same
 * API key, within [http_api] idempotency_window_ms gets the first answer (the same queue id)
 * and queues nothing; the same key with a different request is refused (422).
 *
 * Durable: each answer is appended to <data_dir>/api-idempotency.jsonl and fdatasync'd before
 * the client sees it. The order is: a "pending" line (key, request hash, queue id) durable
 * BEFORE the spool commit, the "done" line (the answer) after it. At load, a pending line whose
 * queue id is still in the spool becomes the 202 it would have been, so a crash between the
 * spool's commit and the answer does not send the retry twice; a pending line whose message is
 * not in the spool is dropped (never committed, or already delivered and gone: documented).
 * The file is rewritten at load (expired lines dropped); entries are bounded by the window and
 * by idempotency_max_entries (the oldest forgotten first).
 * Trust: the header value is untrusted: bounded (255 characters, visible ASCII).
 */
import { createHash } from 'node:crypto';
import { open, readFile, rename, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export const IDEMPOTENCY_FILE = 'api-idempotency.jsonl';

/** The answer remembered for a key. */
export interface StoredAnswer {
  status: number;
  body: Record<string, unknown>;
}

interface Entry {
  /** API key id + "\0" + Idempotency-Key. */
  key: string;
  /** SHA-256 of the request (method, path, query, content type, body). */
  hash: string;
  at: number;
  qid?: string;
  answer?: StoredAnswer;
}

type Line =
  | { t: 'pending'; k: string; h: string; at: number; qid: string }
  | { t: 'done'; k: string; h: string; at: number; a: StoredAnswer };

export type Lookup =
  { kind: 'new' } | { kind: 'replay'; answer: StoredAnswer } | { kind: 'mismatch' } | { kind: 'in-progress' };

/** A header value we accept: 1 to 255 visible ASCII characters. */
export function isValidIdempotencyKey(v: string): boolean {
  return /^[\x21-\x7e]{1,255}$/.test(v);
}

export function requestHash(parts: readonly (string | Buffer)[]): string {
  const h = createHash('sha256');
  for (const p of parts) {
    const b = typeof p === 'string' ? Buffer.from(p, 'utf8') : p;
    h.update(`${b.length}:`).update(b);
  }
  return h.digest('hex');
}

export interface IdempotencyOptions {
  dataDir: string;
  windowMs: number;
  maxEntries: number;
  fsync: boolean;
  /** Whether a queue id is still in the spool (for pending lines at load). */
  inSpool: (qid: string) => boolean;
  now?: () => number;
}

export class IdempotencyStore {
  readonly #opts: IdempotencyOptions;
  readonly #now: () => number;
  /** Insertion order = age order. */
  readonly #entries = new Map<string, Entry>();
  readonly #inFlight = new Set<string>();
  #fh: FileHandle;
  /** Appends run one after another, so lines never interleave. */
  #tail: Promise<void> = Promise.resolve();

  private constructor(opts: IdempotencyOptions, fh: FileHandle) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#fh = fh;
  }

  static async open(opts: IdempotencyOptions): Promise<IdempotencyStore> {
    const file = join(opts.dataDir, IDEMPOTENCY_FILE);
    const now = (opts.now ?? Date.now)();
    const entries = new Map<string, Entry>();
    let text = '';
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (!(err instanceof Error && 'code' in err && err.code === 'ENOENT')) throw err;
    }
    for (const raw of text.split('\n')) {
      const line = parseLine(raw);
      if (line === null || now - line.at > opts.windowMs) continue;
      if (line.t === 'pending') {
        entries.delete(line.k);
        if (opts.inSpool(line.qid))
          entries.set(line.k, {
            key: line.k,
            hash: line.h,
            at: line.at,
            qid: line.qid,
            answer: { status: 202, body: { id: line.qid } },
          });
      } else {
        entries.delete(line.k);
        entries.set(line.k, { key: line.k, hash: line.h, at: line.at, answer: line.a });
      }
    }
    while (entries.size > opts.maxEntries) entries.delete(entries.keys().next().value ?? '');
    // Compaction: the live entries as "done" lines, replacing the file atomically.
    const tmp = `${file}.tmp`;
    const out = await open(tmp, 'w', 0o600);
    try {
      const lines = [...entries.values()].map((e) =>
        JSON.stringify({ t: 'done', k: e.key, h: e.hash, at: e.at, a: e.answer }),
      );
      await out.writeFile(lines.map((l) => `${l}\n`).join(''));
      if (opts.fsync) await out.sync();
    } finally {
      await out.close();
    }
    await rename(tmp, file);
    if (opts.fsync) {
      const dh = await open(dirname(file), 'r');
      await dh.sync().finally(() => dh.close());
    }
    const store = new IdempotencyStore(opts, await open(file, 'a', 0o600));
    for (const [k, e] of entries) store.#entries.set(k, e);
    return store;
  }

  /**
   * What to do with a request carrying this key. 'new' reserves the key: the caller must call
   * pending()/done() or release() after.
   */
  begin(key: string, hash: string): Lookup {
    this.#expire();
    if (this.#inFlight.has(key)) return { kind: 'in-progress' };
    const e = this.#entries.get(key);
    if (e?.answer !== undefined) {
      return e.hash === hash ? { kind: 'replay', answer: e.answer } : { kind: 'mismatch' };
    }
    this.#inFlight.add(key);
    return { kind: 'new' };
  }

  /** Durably notes that `qid` is about to be committed for this key (before the spool commit). */
  pending(key: string, hash: string, qid: string): Promise<void> {
    return this.#append({ t: 'pending', k: key, h: hash, at: this.#now(), qid });
  }

  /** Durably records the answer; later begin() calls replay it. */
  async done(key: string, hash: string, answer: StoredAnswer): Promise<void> {
    const at = this.#now();
    try {
      await this.#append({ t: 'done', k: key, h: hash, at, a: answer });
    } finally {
      // Remembered even if the append failed: this process still answers retries the same way.
      this.#entries.delete(key);
      this.#entries.set(key, { key, hash, at, answer });
      this.#inFlight.delete(key);
      this.#expire();
    }
  }

  /** Gives the key up without an answer (the request failed before queuing; a retry may queue). */
  release(key: string): void {
    this.#inFlight.delete(key);
  }

  async close(): Promise<void> {
    await this.#tail;
    await this.#fh.close();
  }

  #append(line: Line): Promise<void> {
    const run = this.#tail.then(async () => {
      await this.#fh.write(`${JSON.stringify(line)}\n`);
      if (this.#opts.fsync) await this.#fh.datasync();
    });
    this.#tail = run.catch(() => undefined);
    return run;
  }

  #expire(): void {
    const cutoff = this.#now() - this.#opts.windowMs;
    for (const [k, e] of this.#entries) {
      if (e.at >= cutoff && this.#entries.size <= this.#opts.maxEntries) break;
      this.#entries.delete(k);
    }
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseLine(raw: string): Line | null {
  if (raw === '') return null;
  let o: unknown;
  try {
    o = JSON.parse(raw);
  } catch {
    return null; // a torn last line after a crash
  }
  if (!isRecord(o)) return null;
  const { t, k, h, at, qid, a } = o;
  if (typeof k !== 'string' || typeof h !== 'string' || typeof at !== 'number') return null;
  if (t === 'pending' && typeof qid === 'string') return { t, k, h, at, qid };
  if (t === 'done' && isRecord(a) && typeof a['status'] === 'number' && isRecord(a['body']))
    return { t, k, h, at, a: { status: a['status'], body: a['body'] } };
  return null;
}
