/**
 * `sterna log`: the story of one message (by queue id), or of one sender's or recipient's
 * messages, from Sterna's JSON log (docs/operations.md, "Tracing a message"): one line per event
 * in time order, grouped per message, with the session that brought it in (connected, MAIL,
 * RCPT) and the reports it caused (a bounce is a message of its own, linked by its queue id).
 * Reads the files given (gzip-compressed ones too, by their magic bytes) or stdin, one pass,
 * keeping only the lines of selected messages and of sessions still open. Exit codes: 0 lines
 * found, 1 none found or a file unreadable, 2 usage error. Trust: the log is Sterna's own, but it
 * quotes what clients and peers sent; lines that are not JSON objects are skipped.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { Readable, type Writable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { describe, linkedQids, printable, type LogLine } from './log-events.js';

export const LOG_HELP = `Usage: sterna log [QID ...] [--sender ADDRESS] [--rcpt ADDRESS] [--file FILE ...]

Tells the story of messages from Sterna's JSON log: one line per event in time order (connected,
MAIL, RCPT, accepted with its size and recipients, each delivery attempt with its peer and reply,
delivered, deferred, failed, bounce queued, removed), grouped per message. Reports a message
caused (bounces, delay warnings) follow it as messages of their own.

  QID                 a queue id (as in "250 2.0.0 Ok: queued as QID"); several may be given
  --sender ADDRESS    every message from ADDRESS
  --rcpt ADDRESS      every message to ADDRESS
  --file FILE         a log file (repeatable; gzip-compressed files too; "-" is stdin); rotated
                      files oldest first. Without --file: stdin, e.g.
                      journalctl -u sterna -o cat | sterna log QID

Exit codes: 0 lines found, 1 nothing found or a file unreadable, 2 usage error.
`;

export interface LogIo {
  stdin: Readable & { isTTY?: boolean };
  stdout: Writable;
  stderr: Writable;
}

interface Selection {
  qids: string[];
  senders: string[];
  rcpts: string[];
  files: string[];
}

function parseArgs(args: readonly string[]): Selection | { help: true } | { error: string } {
  const sel: Selection = { qids: [], senders: [], rcpts: [], files: [] };
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (a === '--help' || a === '-h') return { help: true };
    const m = /^(--sender|--rcpt|--file)(?:=(.*))?$/.exec(a);
    if (m !== null) {
      const value = m[2] ?? args[++i];
      if (value === undefined || value === '') return { error: `${m[1] ?? a} needs a value` };
      if (m[1] === '--file') sel.files.push(value);
      else (m[1] === '--sender' ? sel.senders : sel.rcpts).push(value.toLowerCase());
    } else if (a.startsWith('-')) return { error: `unknown option "${a}"` };
    else if (/^[A-Za-z0-9]+$/.test(a)) sel.qids.push(a);
    else return { error: `"${a}" is not a queue id` };
  }
  if (sel.qids.length + sel.senders.length + sel.rcpts.length === 0) {
    return { error: 'say which messages: a queue id, --sender ADDRESS or --rcpt ADDRESS' };
  }
  return sel;
}

/** A log line, or null for a line that is not one of Sterna's JSON objects (a syslog prefix is skipped). */
export function parseLogLine(text: string): LogLine | null {
  const start = text.indexOf('{');
  if (start === -1) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.slice(start));
  } catch {
    return null;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return null;
  const fields: Record<string, unknown> = { ...parsed };
  const { msg, time } = fields;
  if (typeof msg !== 'string') return null;
  const t = typeof time === 'string' ? time : typeof time === 'number' ? new Date(time).toISOString() : '';
  return { time: t, msg, fields };
}

/** The lines of a stream, gunzipped first when it starts with the gzip magic bytes (RFC 1952 2.3.1). */
async function* streamLines(stream: Readable): AsyncGenerator<string> {
  const chunks: AsyncIterator<unknown> = stream[Symbol.asyncIterator]();
  const first = await chunks.next();
  if (first.done === true) return;
  const toBuffer = (v: unknown): Buffer => (Buffer.isBuffer(v) ? v : Buffer.from(String(v)));
  const head = toBuffer(first.value);
  async function* all(): AsyncGenerator<Buffer> {
    yield head;
    for (;;) {
      const next = await chunks.next();
      if (next.done === true) return;
      yield toBuffer(next.value);
    }
  }
  let input: Readable = Readable.from(all());
  if (head[0] === 0x1f && head[1] === 0x8b) {
    const gunzip = createGunzip();
    input.on('error', (err) => gunzip.destroy(err));
    input = input.pipe(gunzip);
  }
  yield* createInterface({ input, crlfDelay: Infinity });
}

/** Lines that belong to a session rather than to one transaction: kept for every message of it. */
const SESSION_EVENTS = new Set(['connected', 'TLS established', 'auth']);
/** Lines kept per open session at most (a session sending many refused commands stays bounded). */
const MAX_SESSION_LINES = 200;

function addressList(v: unknown): string[] {
  const one = (x: unknown): string =>
    typeof x === 'string'
      ? x
      : typeof x === 'object' && x !== null && 'address' in x && typeof x.address === 'string'
        ? x.address
        : '';
  return (Array.isArray(v) ? v.map(one) : [one(v)]).map((a) => a.toLowerCase()).filter((a) => a !== '');
}

/** Gathers the stories of the selected messages from log lines given in time order. */
class StoryCollector {
  readonly #sel: Selection;
  readonly #wanted: Set<string>;
  /** A report's queue id -> the queue id of the message it is about. */
  readonly reportOf = new Map<string, string>();
  readonly stories = new Map<string, LogLine[]>();
  /** Lines of open sessions not yet part of a story, by session id. */
  readonly #sessions = new Map<string, LogLine[]>();

  constructor(sel: Selection) {
    this.#sel = sel;
    this.#wanted = new Set(sel.qids);
  }

  add(line: LogLine): void {
    const qid = typeof line.fields['qid'] === 'string' ? line.fields['qid'] : undefined;
    const sid = typeof line.fields['sid'] === 'string' ? line.fields['sid'] : undefined;
    if (qid === undefined) {
      if (sid === undefined) return;
      if (line.msg === 'disconnected') {
        this.#sessions.delete(sid);
        return;
      }
      const pending = this.#sessions.get(sid) ?? [];
      if (pending.length >= MAX_SESSION_LINES) pending.splice(1, 1);
      pending.push(line);
      this.#sessions.set(sid, pending);
      return;
    }
    const endsTransaction = sid !== undefined && (line.msg === 'queued' || line.msg === 'rejected');
    if (this.#selects(qid, line)) {
      this.#wanted.add(qid);
      const story = this.stories.get(qid) ?? [];
      if (endsTransaction) story.push(...(this.#sessions.get(sid) ?? []));
      story.push(line);
      this.stories.set(qid, story);
      for (const linked of linkedQids(line)) {
        this.#wanted.add(linked);
        this.reportOf.set(linked, qid);
      }
    }
    if (endsTransaction) {
      // The next transaction of the session starts afresh; the session's own lines stay.
      const pending = this.#sessions.get(sid);
      if (pending !== undefined)
        this.#sessions.set(
          sid,
          pending.filter((l) => SESSION_EVENTS.has(l.msg)),
        );
    }
  }

  #selects(qid: string, line: LogLine): boolean {
    if (this.#wanted.has(qid)) return true;
    const { senders, rcpts } = this.#sel;
    if (line.msg === 'queued') {
      const sender = addressList(line.fields['sender'])[0] ?? '';
      if (senders.includes(sender)) return true;
      if (addressList(line.fields['rcpts']).some((r) => rcpts.includes(r))) return true;
    }
    // A message queued before the log begins is found by its deliveries.
    return rcpts.length > 0 && addressList(line.fields['rcpt']).some((r) => rcpts.includes(r));
  }
}

function timeOf(line: LogLine): number {
  const t = Date.parse(line.time);
  return Number.isNaN(t) ? 0 : t;
}

/** The stories as text: a header per message, then one line per event, a blank line between messages. */
export function renderStories(
  stories: ReadonlyMap<string, LogLine[]>,
  reportOf: ReadonlyMap<string, string>,
): string {
  const ordered = [...stories.entries()].sort(
    ([, a], [, b]) =>
      timeOf(a[0] ?? { time: '', msg: '', fields: {} }) - timeOf(b[0] ?? { time: '', msg: '', fields: {} }),
  );
  const out: string[] = [];
  for (const [qid, lines] of ordered) {
    const about = reportOf.get(qid);
    if (out.length > 0) out.push('');
    out.push(`message ${qid}${about !== undefined ? ` (a report about ${about})` : ''}`);
    const sorted = [...lines].sort((a, b) => timeOf(a) - timeOf(b));
    for (const line of sorted) out.push(`  ${line.time}  ${printable(describe(line))}`);
  }
  return out.length > 0 ? `${out.join('\n')}\n` : '';
}

export async function runLogCommand(args: readonly string[], io: LogIo): Promise<number> {
  const sel = parseArgs(args);
  if ('help' in sel) {
    io.stdout.write(LOG_HELP);
    return 0;
  }
  if ('error' in sel) {
    io.stderr.write(`sterna log: ${sel.error}\n\n${LOG_HELP}`);
    return 2;
  }
  const sources = sel.files.length > 0 ? sel.files : ['-'];
  if (sel.files.length === 0 && io.stdin.isTTY === true) {
    io.stderr.write(
      'sterna log: no log to read: give --file FILE, or pipe the log in (journalctl -u sterna -o cat | sterna log ...)\n',
    );
    return 2;
  }
  const collector = new StoryCollector(sel);
  for (const source of sources) {
    const stream = source === '-' ? io.stdin : createReadStream(source);
    try {
      for await (const text of streamLines(stream)) {
        const line = parseLogLine(text);
        if (line !== null) collector.add(line);
      }
    } catch (err) {
      io.stderr.write(
        `sterna log: cannot read ${source === '-' ? 'stdin' : source}: ${err instanceof Error ? err.message : String(err)}\n`,
      );
      return 1;
    }
  }
  const text = renderStories(collector.stories, collector.reportOf);
  if (text === '') {
    io.stderr.write('sterna log: no log line about these messages\n');
    return 1;
  }
  io.stdout.write(text);
  return 0;
}
