/**
 * Local delivery into a Maildir, exactly once per (message, recipient).
 *
 * The file is written under tmp/, fsynced, renamed into new/ and the new/ directory is fsynced
 * (one fsync shared by the deliveries of a batch, maildir-write.ts), so a message is either
 * absent or complete in new/ (the Maildir protocol, cr.yp.to/proto/maildir.html; RFC 5321 4.4
 * for the Return-Path header the final delivery adds). The file name is derived from the queue
 * id and the recipient index, not from the clock or a random number, so a delivery retried after
 * a crash finds the copy the first attempt left and does not deliver it twice.
 * docs/local-delivery.md explains the layout and the reasoning.
 *
 * This module reads the body and hands it, in parts of up to GATHER_BYTES, to a writer: a
 * Maildir writer thread in the server (maildir-writers.ts), the calling thread in tests.
 *
 * Trust: runs with the rights of the mailbox owner (later, in a uid-dropping helper). Its inputs come
 * from the queue (trusted), but the local part of an address comes from the network, which is why
 * maildirPathFor() makes it safe for the file system.
 */
import path from 'node:path';
import {
  DEFAULT_OWNERSHIP,
  describe,
  type LocalResult,
  type MaildirJob,
  type MaildirOwnership,
  type MaildirSyncFs,
  type WriterReply,
} from './maildir-write.js';
import { InlineWriter, MaildirWriterThreads, type MaildirWriterPort } from './maildir-writers.js';

export type { LocalResult, MaildirOwnership, MaildirSyncFs };

export interface MaildirDelivery {
  /** Maildir directory of the mailbox (created with tmp/ new/ cur/ if missing, mode 0700). */
  maildir: string;
  /**
   * Stable unique name for this (message, recipient), see maildirUniqueName(): the same on every
   * retry and after a restart. Printable ASCII without '/', ':' or a leading '.'.
   */
  uniqueName: string;
  /** Header lines to prepend (already formatted, CRLF-terminated): Return-Path, Delivered-To. */
  prepend: string;
  /** The message body (CRLF line endings as received), streamed. */
  body: AsyncIterable<Buffer>;
}

export interface MaildirOptions {
  /**
   * Look for a copy left by an earlier attempt (new/<name>, then cur/<name>:2,<flags>) before writing.
   * Default true. Pass false only when this is certainly the first attempt for this recipient.
   */
  checkExisting?: boolean;
  /** Owner, group and modes of new files and directories; default Sterna's user, 0700 and 0600. */
  ownership?: MaildirOwnership;
  /** Who writes the files; default one process-wide Maildir writer thread. */
  writer?: MaildirWriterPort;
  /** File-system calls, run on the calling thread (tests); overrides `writer`. */
  fs?: MaildirSyncFs;
}

/** The writer of deliveries that name none: one thread for the process, started when first needed. */
let sharedWriter: MaildirWriterThreads | undefined;

/** Ids of deliveries, unique in this process. */
let nextDeliveryId = 1;

/** Body bytes gathered into one request, one write. */
const GATHER_BYTES = 256 * 1024;

/** Local parts are at most 64 octets (RFC 5321 4.5.3.1.1); percent-encoding triples that at worst. */
const MAX_COMPONENT_BYTES = 255;

/**
 * The Maildir file name for one recipient of one message: `<qid>.R<index>.<host>`.
 * Stable across retries and restarts. The queue id already sorts by time, as the conventional
 * `time.unique.host` name does. In the host part '/' and ':' are written \057 and \072, as the
 * Maildir specification asks. No `,S=<size>`: the name must be known before the size is.
 */
export function maildirUniqueName(qid: string, recipientIndex: number, hostname: string): string {
  const host = hostname.replaceAll('/', '\\057').replaceAll(':', '\\072');
  return `${qid}.R${recipientIndex}.${host}`;
}

/** The Maildir++ folder spam goes to (a content filter's Junk verdict, src/filters/). */
export const JUNK_FOLDER = '.Junk';

/**
 * The Junk folder of a mailbox's Maildir: the Maildir++ subfolder `<maildir>/.Junk`, itself a
 * Maildir (tmp/ new/ cur/), which IMAP servers (Dovecot's Maildir++ layout) show as "Junk".
 */
export function junkFolderOf(maildir: string): string {
  return path.join(maildir, JUNK_FOLDER);
}

/**
 * The Maildir of a mailbox: `<root>/<domain>/<local>`. The domain is lower-cased; the local part is
 * kept as given (the caller passes the mailbox's canonical name, see docs/local-delivery.md). Both are
 * made safe for the file system: bytes outside `A-Z a-z 0-9 . _ + = -` (and '%' itself) are written
 * %XX in upper-case hex, and a leading '.' is written %2E, so no component is empty, '.', '..',
 * hidden, or contains '/'. The encoding is one-to-one, so two addresses never share a Maildir.
 * Throws RangeError for an empty local part or domain, or a component longer than 255 bytes.
 */
export function maildirPathFor(root: string, address: { local: string; domain: string }): string {
  return path.join(
    root,
    safeComponent(address.domain.toLowerCase(), 'domain'),
    safeComponent(address.local, 'local part'),
  );
}

/** `Return-Path: <sender>` (RFC 5321 4.4) and `Delivered-To: recipient`, CRLF-terminated. */
export function deliveryHeaders(opts: { sender: string; recipient: string }): string {
  for (const value of [opts.sender, opts.recipient]) {
    // A CR, LF or NUL here would let an address inject header lines; the address parser never lets one through.
    if (/[\r\n\0]/.test(value))
      throw new RangeError(`address ${JSON.stringify(value)} contains a line break or NUL`);
  }
  return `Return-Path: <${opts.sender}>\r\nDelivered-To: ${opts.recipient}\r\n`;
}

/**
 * Delivers one message to one Maildir. Never throws: every outcome is a LocalResult. The body is
 * read to its end or closed (its iterator's return()) in every case, so a spool file never leaks.
 * A retry (checkExisting) looks for an earlier copy before it reads the body; a first attempt
 * sends the body's first part with the request that opens the file.
 */
export async function deliverToMaildir(d: MaildirDelivery, opts: MaildirOptions = {}): Promise<LocalResult> {
  const writer =
    opts.fs !== undefined
      ? new InlineWriter(opts.fs)
      : (opts.writer ?? (sharedWriter ??= new MaildirWriterThreads({ threads: 1 })));
  const id = nextDeliveryId++;
  const job: MaildirJob = {
    maildir: d.maildir,
    uniqueName: d.uniqueName,
    checkExisting: opts.checkExisting ?? true,
    ownership: opts.ownership ?? DEFAULT_OWNERSHIP,
  };
  const body = d.body[Symbol.asyncIterator]();
  let bodyOpen = true;
  let begun = false;
  try {
    if (job.checkExisting) {
      const reply = await writer.send({ kind: 'begin', id, job, data: null, end: false });
      if (reply.result !== null) return reply.result;
      begun = true;
    }
    let pieces: Buffer[] = [Buffer.from(d.prepend, 'utf8')];
    let bytes = pieces[0]?.length ?? 0;
    for (;;) {
      let next: IteratorResult<Buffer>;
      try {
        next = await body.next();
      } catch (err) {
        bodyOpen = false;
        if (begun) await writer.send({ kind: 'abort', id });
        return { kind: 'deferred', reason: `cannot read the message body from the spool: ${describe(err)}` };
      }
      const end = next.done === true;
      if (next.done === true) bodyOpen = false;
      else {
        pieces.push(next.value);
        bytes += next.value.length;
        // Awaiting each request before reading more of the body is the backpressure.
        if (bytes < GATHER_BYTES) continue;
      }
      const data = gather(pieces, bytes);
      const reply: WriterReply = await writer.send(
        begun ? { kind: 'more', id, data, end } : { kind: 'begin', id, job, data, end },
      );
      begun = true;
      if (reply.result !== null) return reply.result;
      if (end) return { kind: 'deferred', reason: 'the Maildir writer did not finish the delivery' };
      pieces = [];
      bytes = 0;
    }
  } finally {
    if (bodyOpen) await closeBody(body);
  }
}

/** The pieces copied into one buffer of their own (it may be transferred to the writer thread). */
function gather(pieces: readonly Buffer[], bytes: number): Uint8Array {
  const out = new Uint8Array(new ArrayBuffer(bytes));
  let at = 0;
  for (const piece of pieces) {
    out.set(piece, at);
    at += piece.length;
  }
  return out;
}

async function closeBody(body: AsyncIterator<Buffer>): Promise<void> {
  try {
    await body.return?.();
  } catch {
    // Closing is best effort; the result already says what happened.
  }
}

// ---------------------------------------------------------------------------------------------

const SAFE_BYTE = /^[A-Za-z0-9._+=-]$/;

function safeComponent(value: string, what: string): string {
  if (value === '') throw new RangeError(`empty ${what}: no Maildir for it`);
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const ch = String.fromCharCode(byte);
    const leadingDot = out === '' && ch === '.';
    out +=
      byte < 0x80 && SAFE_BYTE.test(ch) && !leadingDot
        ? ch
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  if (out.length > MAX_COMPONENT_BYTES)
    throw new RangeError(`${what} too long for a file name: ${out.length} bytes encoded`);
  return out;
}
