/**
 * The DMARC evaluations of the current report period, on disk: an append-only file of JSON lines
 * under `<data_dir>/dmarc/`, one line per evaluation (dmarc-report-record.ts). Lines are buffered
 * and written with one fdatasync per batch (every `flushMs`, and at close): a crash loses at most
 * the last batch of evaluations, which only makes a report's counts a little short, never the mail.
 *
 * Files: `current-<begin>.jsonl` receives the evaluations of the period that began at <begin> (ms
 * since the epoch). At report time it is sealed: renamed to `period-<begin>-<end>.jsonl` (and the
 * directory fsynced), and a new current file begins at <end>. A sealed period is read, reported,
 * and removed once every report for it is queued; `period-<begin>-<end>.done` lists the policy
 * domains already reported (one per line, fsynced), so that a crash half way repeats none.
 * A torn last line (a crash in the middle of a write) is skipped when read.
 * Trust level: the files are ours (mode 0600 in a 0700 directory); their content describes
 * untrusted mail and is parsed defensively.
 */
import { createReadStream } from 'node:fs';
import { appendFile, mkdir, open, readdir, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Logger } from '../observability/log.js';
import { syncDir } from '../queue/spool-log.js';
import type { DmarcEvaluation } from './dmarc-report-record.js';

export interface SealedPeriod {
  begin: number;
  end: number;
  file: string;
}

export interface DmarcReportStoreOptions {
  dir: string;
  /** Batch interval: buffered evaluations are written and fdatasync'd this often. */
  flushMs: number;
  log: Logger;
  now: () => number;
}

const CURRENT = /^current-(\d+)\.jsonl$/;
const PERIOD = /^period-(\d+)-(\d+)\.jsonl$/;

export class DmarcReportStore {
  readonly #o: DmarcReportStoreOptions;
  #begin: number;
  #fh: FileHandle;
  #pending: string[] = [];
  #timer: NodeJS.Timeout | null = null;
  /** Serializes writes, seals and closes. */
  #chain: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(o: DmarcReportStoreOptions, begin: number, fh: FileHandle) {
    this.#o = o;
    this.#begin = begin;
    this.#fh = fh;
  }

  /** Opens the store in `dir` (created 0700), continuing the current period if there is one. */
  static async open(o: DmarcReportStoreOptions): Promise<DmarcReportStore> {
    await mkdir(o.dir, { recursive: true, mode: 0o700 });
    const names = await readdir(o.dir);
    const begins = names.flatMap((n) => {
      const m = CURRENT.exec(n);
      return m?.[1] !== undefined ? [Number(m[1])] : [];
    });
    const begin = begins.length > 0 ? Math.min(...begins) : o.now();
    // More than one current file cannot happen by this code; keep the oldest, fold in nothing.
    const fh = await open(path.join(o.dir, `current-${begin}.jsonl`), 'a', 0o600);
    if (begins.length === 0) await syncDir(o.dir);
    return new DmarcReportStore(o, begin, fh);
  }

  /** When the current period began. */
  get begin(): number {
    return this.#begin;
  }

  /** Records one evaluation (written with the next batch). */
  add(e: DmarcEvaluation): void {
    if (this.#closed) return;
    this.#pending.push(`${JSON.stringify(e)}\n`);
    this.#timer ??= setTimeout(() => {
      this.#timer = null;
      void this.flush();
    }, this.#o.flushMs);
    this.#timer.unref();
  }

  /** Writes the buffered evaluations and fdatasyncs them. */
  flush(): Promise<void> {
    return this.#serial(() => this.#write());
  }

  async #write(): Promise<void> {
    if (this.#pending.length === 0) return;
    const batch = this.#pending.join('');
    this.#pending = [];
    try {
      await this.#fh.appendFile(batch);
      await this.#fh.datasync();
    } catch (err) {
      this.#o.log.error({ err }, 'DMARC evaluations not recorded; the next aggregate reports will miss them');
    }
  }

  /**
   * Ends the current period at now: its file becomes a sealed period, and a new current file
   * begins. Returns the sealed period (possibly with no evaluations).
   */
  seal(): Promise<SealedPeriod> {
    return this.#serialValue(async () => {
      await this.#write();
      const begin = this.#begin;
      const end = Math.max(this.#o.now(), begin + 1);
      await this.#fh.close();
      const file = path.join(this.#o.dir, `period-${begin}-${end}.jsonl`);
      await rename(path.join(this.#o.dir, `current-${begin}.jsonl`), file);
      this.#fh = await open(path.join(this.#o.dir, `current-${end}.jsonl`), 'a', 0o600);
      this.#begin = end;
      await syncDir(this.#o.dir);
      return { begin, end, file };
    });
  }

  /** The sealed periods not yet removed, oldest first (a crash may have left some). */
  async sealed(): Promise<SealedPeriod[]> {
    const out: SealedPeriod[] = [];
    for (const n of await readdir(this.#o.dir)) {
      const m = PERIOD.exec(n);
      if (m?.[1] === undefined || m[2] === undefined) continue;
      out.push({ begin: Number(m[1]), end: Number(m[2]), file: path.join(this.#o.dir, n) });
    }
    return out.sort((a, b) => a.begin - b.begin);
  }

  /** The evaluations of a sealed period; lines that do not parse (a torn write) are skipped. */
  async *read(p: SealedPeriod): AsyncGenerator<DmarcEvaluation> {
    const lines = createInterface({ input: createReadStream(p.file), crlfDelay: Infinity });
    let skipped = 0;
    for await (const line of lines) {
      if (line === '') continue;
      const e = parseEvaluation(line);
      if (e === null) skipped++;
      else yield e;
    }
    if (skipped > 0)
      this.#o.log.warn({ file: p.file, skipped }, 'DMARC evaluations that do not parse, skipped');
  }

  /** The policy domains of a sealed period already reported. */
  async done(p: SealedPeriod): Promise<Set<string>> {
    const text = await readFile(doneFile(p), 'utf8').catch(() => '');
    return new Set(text.split('\n').filter((l) => l !== ''));
  }

  /** Notes that the reports of `domain` for this period are queued. */
  async markDone(p: SealedPeriod, domain: string): Promise<void> {
    const file = doneFile(p);
    await appendFile(file, `${domain}\n`, { mode: 0o600 });
    const fh = await open(file, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  /** Removes a sealed period once every report for it is queued (data retention). */
  async remove(p: SealedPeriod): Promise<void> {
    await rm(p.file, { force: true });
    await rm(doneFile(p), { force: true });
    await syncDir(this.#o.dir);
  }

  /** Writes what is buffered and closes the current file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    await this.#serial(async () => {
      await this.#write();
      await this.#fh.close();
    });
  }

  #serial(fn: () => Promise<void>): Promise<void> {
    return this.#serialValue(fn);
  }

  #serialValue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn);
    this.#chain = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }
}

function doneFile(p: SealedPeriod): string {
  return p.file.replace(/\.jsonl$/, '.done');
}

/** A stored line back to an evaluation; null when it is not one (checked field by field). */
function parseEvaluation(line: string): DmarcEvaluation | null {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Partial<Record<keyof DmarcEvaluation, unknown>>; // each field is checked below
  const policy = o.policy as Partial<Record<keyof DmarcEvaluation['policy'], unknown>> | undefined;
  const ok =
    typeof o.t === 'number' &&
    typeof o.ip === 'string' &&
    typeof o.from === 'string' &&
    typeof o.mfrom === 'string' &&
    typeof o.disposition === 'string' &&
    typeof o.dkimAligned === 'string' &&
    typeof o.spfAligned === 'string' &&
    Array.isArray(o.reasons) &&
    Array.isArray(o.dkim) &&
    typeof o.spf === 'object' &&
    o.spf !== null &&
    typeof policy === 'object' &&
    policy !== null &&
    typeof policy.domain === 'string' &&
    Array.isArray(policy.rua);
  return ok ? (v as DmarcEvaluation) : null; // written by this module from a DmarcEvaluation
}
