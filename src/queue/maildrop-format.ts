/**
 * The maildrop: where `sterna sendmail` leaves messages for the server to pick up, whether the
 * server is running or not (as Postfix's postdrop/pickup). This module holds what the writer
 * (the sendmail command, run by any local user) and the reader (the server's pick-up) must
 * agree on: the directory, its mode, file names, the completion mark and the file format.
 * docs/sendmail.md explains the design and why.
 *
 * Directory: <data_dir>/maildrop, owned by the server's user and group, mode 3733: anyone may
 * create files in it (-wx), nobody but the owner may list it (no r), the sticky bit keeps users
 * from renaming or removing each other's files, and the set-group-id bit gives each new file
 * the directory's group, so the server can read a file of mode 0740 that another user owns.
 *
 * A file: created under its final name (a queue-id-shaped random name, O_EXCL) with mode 0600,
 * written, fsynced, then marked complete by fchmod to 0740 (the owner's execute bit, Postfix's
 * own mark) and fsynced again. The pick-up ignores files without the mark. Temp name + rename
 * would need a directory fsync to be durable, and a submitter cannot open a directory it may
 * not read; an fsync of the new file itself commits its directory entry on ext4 and XFS.
 *
 * Format: the message (CRLF lines, the body rules applied) ‖ the record (JSON, one line) ‖ LF ‖
 * the footer "STERNA-MAILDROP-1 NNNNNNNN\n" (NNNNNNNN: the record's length in octets, 8 digits).
 * The record comes last because -bs learns the envelope only at the end of DATA.
 *
 * Trust: files are written by local users, so the reader treats every octet as untrusted:
 * the footer and record are bounded and validated here, the body by the DATA decoder's rules.
 */
import { z } from 'zod';

export const MAILDROP_DIR = 'maildrop';
/** Files the pick-up refused, kept for the operator (mode 0700). */
export const MAILDROP_REFUSED_DIR = 'maildrop-refused';
/** Sticky + set-group-id + rwx-wx-wx. */
export const MAILDROP_DIR_MODE = 0o3733;
/** While being written. */
export const WRITING_MODE = 0o600;
/** Complete: the owner's execute bit is the mark; group read lets the server read it. */
export const COMPLETE_MODE = 0o740;
export const COMPLETE_BIT = 0o100;

const FOOTER_MAGIC = 'STERNA-MAILDROP-1 ';
const LENGTH_DIGITS = 8;
export const FOOTER_BYTES = FOOTER_MAGIC.length + LENGTH_DIGITS + 1;

/** The largest record: some room for sender and name, then 1 KiB per recipient allowed. */
export function maxRecordBytes(maxRecipients: number): number {
  return 64 * 1024 + 1024 * maxRecipients;
}

/** What the sendmail command says about the message, beside its content. */
export interface MaildropRecord {
  v: 1;
  /** The -f sender; '' the null sender; null: the submitter's own address (login@origin). */
  sender: string | null;
  recipients: string[];
  /** -F: the full name for a From header the server adds. */
  full_name?: string;
  /** How it came: "sendmail" (stdin) or "smtp" (-bs, with the client's HELO name). */
  via: 'sendmail' | 'smtp';
  helo?: string;
}

function recordSchema(maxRecipients: number) {
  return z.strictObject({
    v: z.literal(1),
    sender: z.string().max(1024).nullable(),
    recipients: z.array(z.string().min(1).max(1024)).min(1).max(maxRecipients),
    full_name: z.string().max(256).optional(),
    via: z.enum(['sendmail', 'smtp']),
    helo: z.string().max(255).optional(),
  });
}

/** The bytes written after the message: record, LF, footer. */
export function encodeTrailer(record: MaildropRecord): Buffer {
  const json = Buffer.from(JSON.stringify(record), 'utf8');
  const footer = `${FOOTER_MAGIC}${String(json.length).padStart(LENGTH_DIGITS, '0')}\n`;
  return Buffer.concat([json, Buffer.from(`\n${footer}`, 'latin1')]);
}

/** The record's length, read from a file's last FOOTER_BYTES octets; null when not a footer. */
export function decodeFooter(footer: Buffer): number | null {
  const text = footer.toString('latin1');
  const m = /^STERNA-MAILDROP-1 (\d{8})\n$/.exec(text);
  return m === null ? null : Number(m[1]);
}

/** Parses and validates a record (the JSON before the footer's LF); an Error says what is wrong. */
export function decodeRecord(json: Buffer, maxRecipients: number): MaildropRecord | Error {
  let value: unknown;
  try {
    value = JSON.parse(json.toString('utf8'));
  } catch {
    return new Error('the record is not JSON');
  }
  const parsed = recordSchema(maxRecipients).safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return new Error(`bad record: ${issue?.path.join('.') ?? ''} ${issue?.message ?? ''}`.trim());
  }
  const r = parsed.data;
  return {
    v: 1,
    sender: r.sender,
    recipients: r.recipients,
    via: r.via,
    ...(r.full_name !== undefined ? { full_name: r.full_name } : {}),
    ...(r.helo !== undefined ? { helo: r.helo } : {}),
  };
}
