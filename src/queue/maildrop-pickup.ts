/**
 * The server's side of the maildrop (maildrop-format.ts, docs/sendmail.md): picks up the
 * messages `sterna sendmail` left there and queues them, like Postfix's pickup. The directory is
 * watched (fs.watch) and also scanned every [sendmail] scan_interval_ms in case an event was
 * missed; at start it is scanned at once, so mail dropped while the server was stopped goes
 * out now. Files are handled one at a time, oldest name first.
 *
 * Each file is untrusted input from a local user. The submitter is the file's owner as the
 * kernel recorded it (fstat uid), never anything the file says; a file with other hard links is
 * refused (its owner may not be the one who put it here), so is a symbolic link or anything not
 * a regular file. The record is bounded and validated; the sender must be one the user may use
 * (policy/local-sender.ts); the message goes through the DATA decoder's body rules
 * (smtp/data-decoder.ts: size = limits.message_bytes, line length, NUL, bare line endings) and
 * the Received-header loop limit, then into the spool with a Received header naming the user
 * and, as on submission (RFC 6409 8.1-8.3), Message-ID, Date and From when missing. The
 * maildrop file is removed only after the spool's commit is durable: a crash between the two
 * may queue the message twice, never lose it. A refused file is moved to maildrop-refused/ for
 * the operator, with a log line saying why; a spool failure leaves it for the next scan.
 * The content filters whose scope names "sendmail" run before the commit, as at the end of an
 * SMTP DATA (src/filters/pipeline.ts): a 5xx verdict bounces the message to its sender (RFC
 * 3464, as Postfix's cleanup does for a milter's reject of pickup mail; the user's command has
 * long exited), a 4xx verdict leaves the file for a later scan, a discard removes it.
 * Trust: reads files written by any local user; runs as the server's user.
 */
import { constants, watch, type FSWatcher } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Envelope, MailParams } from '../message/envelope.js';
import { formatRfc5322Date, localReceivedHeader, messageIdFor } from '../message/headers.js';
import type { Logger } from '../observability/log.js';
import { mayUseLocalSender, originDomain, ownAddress } from '../policy/local-sender.js';
import { formatMailbox, parseForwardPath, parseReversePath } from '../smtp/address.js';
import { BdatDecoder, type DataError } from '../smtp/data-decoder.js';
import { forgedResultsFilter } from '../mailauth/forged-results.js';
import { MessageBody } from '../smtp/message-body.js';
import { isQueueId } from './ids.js';
import {
  COMPLETE_BIT,
  decodeFooter,
  decodeRecord,
  FOOTER_BYTES,
  MAILDROP_DIR,
  MAILDROP_DIR_MODE,
  MAILDROP_REFUSED_DIR,
  maxRecordBytes,
  type MaildropRecord,
} from './maildrop-format.js';
import { systemUserLookup, type LocalUser, type UserLookup } from './maildrop-users.js';
import type { RateLimits } from '../policy/rate-limits.js';
import type { Spool } from './spool.js';
import type { DkimSigning } from '../mailauth/dkim-sign.js';
import { filterBeforeCommit, type ContentFilters } from '../filters/pipeline.js';
import { formatReply, type Reply } from '../smtp/replies.js';
import { buildDsn } from './dsn.js';
import { spoolDsn } from './reports.js';

/** An incomplete file this old is a writer that died: it is moved aside. */
const STALE_INCOMPLETE_MS = 24 * 3600 * 1000;
const READ_BYTES = 64 * 1024;

export interface MaildropPickupOptions {
  config: Config;
  spool: Spool;
  log: Logger;
  lookupUser?: UserLookup;
  now?: () => number;
  /** Signs the picked-up mail: the kernel vouches for its local user (src/mailauth/dkim-sign.ts). */
  dkim?: DkimSigning;
  /**
   * The shared rate limits ([rate_limits]): the local user counts as login@origin, like an
   * SMTP AUTH user. A file over a limit stays in the maildrop and is tried again later.
   */
  rates?: RateLimits;
  /** The content filters ([[filters]]); those whose `listeners` name "sendmail" check every file. */
  filters?: ContentFilters;
}

/** A file that may not go yet (a rate limit, a filter's 4xx): it stays in the maildrop for a later scan. */
class Deferral extends Error {
  /** The log line's text. */
  readonly logText: string;
  constructor(reason: string, logText: string) {
    super(reason);
    this.logText = logText;
  }
}

/** A reason to refuse a file; it is moved to maildrop-refused/. */
class Refusal extends Error {}

/**
 * Creates <data_dir>/maildrop (mode 3733) and <data_dir>/maildrop-refused (0700), or checks the
 * ones there: directories, not links, owned by this process's user. Returns their paths.
 */
export async function prepareMaildropDirs(
  dataDir: string,
  log: Logger,
): Promise<{ dir: string; refused: string }> {
  const dir = join(dataDir, MAILDROP_DIR);
  const refused = join(dataDir, MAILDROP_REFUSED_DIR);
  const uid = process.getuid?.() ?? 0;
  for (const [path, mode] of [
    [dir, MAILDROP_DIR_MODE],
    [refused, 0o700],
  ] as const) {
    await mkdir(path, { recursive: true, mode: 0o700 });
    const st = await lstat(path);
    if (!st.isDirectory()) throw new Error(`${path} is not a directory; remove it and start again`);
    if (st.uid !== uid)
      throw new Error(`${path} belongs to uid ${st.uid}, not to the server's user (uid ${uid}); chown it`);
    // chmod is not subject to the umask; the set-group-id bit needs the directory's group to be ours.
    if ((st.mode & 0o7777) !== mode) await chmod(path, mode);
  }
  const data = await lstat(dataDir);
  if ((data.mode & 0o001) === 0)
    log.warn(
      { data_dir: dataDir },
      'other users cannot reach the maildrop: data_dir has no search permission for others (chmod o+x); only root and the server user can use sterna sendmail',
    );
  return { dir, refused };
}

export class MaildropPickup {
  readonly #opts: MaildropPickupOptions;
  readonly #dir: string;
  readonly #refusedDir: string;
  readonly #lookup: UserLookup;
  readonly #now: () => number;
  readonly #serverUid = process.getuid?.() ?? 0;
  /** Files that could be neither queued nor moved aside: not tried again until a restart. */
  readonly #skip = new Set<string>();
  #watcher: FSWatcher | null = null;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;
  #again = false;
  #closed = false;

  private constructor(opts: MaildropPickupOptions, dirs: { dir: string; refused: string }) {
    this.#opts = opts;
    this.#dir = dirs.dir;
    this.#refusedDir = dirs.refused;
    this.#lookup = opts.lookupUser ?? systemUserLookup();
    this.#now = opts.now ?? Date.now;
  }

  /** Starts watching the directories prepareMaildropDirs() returned and runs a first scan. */
  static start(opts: MaildropPickupOptions, dirs: { dir: string; refused: string }): MaildropPickup {
    const p = new MaildropPickup(opts, dirs);
    try {
      p.#watcher = watch(p.#dir, () => p.kick());
      p.#watcher.on('error', (err) => {
        opts.log.warn({ err }, 'maildrop watch failed; relying on the periodic scan');
        p.#watcher?.close();
        p.#watcher = null;
      });
    } catch (err) {
      opts.log.warn({ err }, 'maildrop cannot be watched; relying on the periodic scan');
    }
    p.#timer = setInterval(() => p.kick(), opts.config.sendmail.scan_interval_ms);
    p.#timer.unref();
    p.kick();
    return p;
  }

  /** Scans the maildrop now (again, once more, if a scan is running). */
  kick(): void {
    if (this.#closed) return;
    if (this.#running !== null) {
      this.#again = true;
      return;
    }
    this.#running = this.#loop().finally(() => {
      this.#running = null;
    });
  }

  /** Stops watching; waits for the file being picked up, if any. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#watcher?.close();
    if (this.#timer !== null) clearInterval(this.#timer);
    await this.#running;
  }

  async #loop(): Promise<void> {
    do {
      this.#again = false;
      let names: string[];
      try {
        names = await readdir(this.#dir);
      } catch (err) {
        this.#opts.log.error({ err, dir: this.#dir }, 'maildrop cannot be read');
        return;
      }
      for (const name of names.filter(isQueueId).sort()) {
        if (this.#closed) return;
        if (this.#skip.has(name)) continue;
        try {
          await this.#pick(name);
        } catch (err) {
          if (err instanceof Deferral)
            this.#opts.log.warn({ maildrop: name, reason: err.message }, err.logText);
          else this.#opts.log.error({ err, maildrop: name }, 'maildrop file not picked up; will try again');
        }
      }
    } while (this.#again && !this.#closed);
  }

  async #pick(name: string): Promise<void> {
    const path = join(this.#dir, name);
    let fh: FileHandle;
    try {
      fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (err) {
      const code = err instanceof Error && 'code' in err ? err.code : undefined;
      if (code === 'ENOENT') return;
      if (code === 'ELOOP') await this.#refuse(name, 'a symbolic link');
      else await this.#refuse(name, `cannot be opened: ${String(code ?? err)}`);
      return;
    }
    let uid: number | undefined;
    try {
      const st = await fh.stat();
      uid = st.uid;
      if (!st.isFile()) throw new Refusal('not a regular file');
      if ((st.mode & COMPLETE_BIT) === 0) {
        // Still being written, or its writer died long ago.
        if (this.#now() - st.mtimeMs > STALE_INCOMPLETE_MS)
          throw new Refusal('never completed by its writer');
        return;
      }
      if (st.nlink !== 1) throw new Refusal('it has other hard links, so its owner may not have written it');
      const user = await this.#lookup(st.uid);
      if (user === null) throw new Refusal(`its owner, uid ${st.uid}, has no entry in the user database`);
      const { record, bodyBytes } = await this.#readRecord(fh, st.size);
      await this.#queue(name, fh, user, record, bodyBytes);
    } catch (err) {
      if (!(err instanceof Refusal)) throw err;
      await this.#refuse(name, err.message, uid);
      return;
    } finally {
      await fh.close().catch(() => undefined);
    }
    await unlink(path).catch((err: unknown) => {
      // Queued already; if it stays it would be queued again: never pick it up twice here.
      this.#skip.add(name);
      this.#opts.log.error(
        { err, maildrop: name },
        'maildrop file queued but not removed; remove it by hand',
      );
    });
  }

  async #readRecord(fh: FileHandle, size: number): Promise<{ record: MaildropRecord; bodyBytes: number }> {
    const { limits } = this.#opts.config;
    if (size < FOOTER_BYTES + 1) throw new Refusal('too short to be a maildrop file');
    const footer = await readAt(fh, size - FOOTER_BYTES, FOOTER_BYTES);
    const recordBytes = decodeFooter(footer);
    if (recordBytes === null) throw new Refusal('no maildrop footer');
    if (recordBytes > maxRecordBytes(limits.recipients)) throw new Refusal('record too large');
    const bodyBytes = size - FOOTER_BYTES - 1 - recordBytes;
    if (bodyBytes < 0) throw new Refusal('record longer than the file');
    if (bodyBytes > limits.message_bytes)
      throw new Refusal(`message larger than limits.message_bytes (${limits.message_bytes} octets)`);
    const tail = await readAt(fh, bodyBytes, recordBytes + 1);
    if (tail[recordBytes] !== 0x0a) throw new Refusal('record not followed by a line feed');
    const record = decodeRecord(tail.subarray(0, recordBytes), limits.recipients);
    if (record instanceof Error) throw new Refusal(record.message);
    return { record, bodyBytes };
  }

  async #queue(
    name: string,
    fh: FileHandle,
    user: LocalUser,
    record: MaildropRecord,
    bodyBytes: number,
  ): Promise<void> {
    const { config, spool, log } = this.#opts;
    const submitter = { login: user.login, uid: user.uid };
    const sender = record.sender ?? ownAddress(config, user.login);
    const senderPath = parseReversePath(`<${sender}>`, { smtputf8: true });
    if (!senderPath.ok) throw new Refusal(`sender <${sender}> is not a valid address`);
    const senderText = senderPath.mailbox === null ? '' : formatMailbox(senderPath.mailbox);
    if (!mayUseLocalSender(config, submitter, this.#serverUid, senderText))
      throw new Refusal(`${user.login} may not use the sender <${senderText}> ([sendmail] allowed_senders)`);
    const recipients: string[] = [];
    for (const r of record.recipients) {
      const path = parseForwardPath(`<${r.includes('@') ? r : `${r}@${originDomain(config)}`}>`, {
        smtputf8: true,
      });
      if (!path.ok) throw new Refusal(`recipient <${r}> is not a valid address`);
      recipients.push(formatMailbox(path.mailbox));
    }

    await this.#checkRates(ownAddress(config, user.login), senderText, recipients.length);
    const now = this.#now();
    const spooled = spool.begin();
    const writer = this.#opts.dkim?.wrap(spooled, 'local-user', log) ?? spooled;
    const fromAddress = senderText === '' ? ownAddress(config, user.login) : senderText;
    const body = new MessageBody(writer, {
      // RFC 8601 5: a forged Authentication-Results claiming our id is removed, as on SMTP.
      fieldFilter: forgedResultsFilter(config.mailauth.authserv_id || config.hostname),
      prefix: localReceivedHeader({
        login: user.login,
        uid: user.uid,
        byHost: config.hostname,
        qid: writer.qid,
        date: now,
      }),
      addMissing: (facts) =>
        (facts.hasMessageId ? '' : `Message-ID: ${messageIdFor(writer.qid, config.hostname)}\r\n`) +
        (facts.hasDate ? '' : `Date: ${formatRfc5322Date(now)}\r\n`) +
        (facts.hasFrom ? '' : `From: ${fromValue(record.full_name ?? user.fullName, fromAddress)}\r\n`),
    });
    const decoder = new BdatDecoder({
      maxMessageBytes: config.limits.message_bytes,
      maxLineBytes: config.limits.text_line_bytes,
      bareLineEndings: 'reject',
    });
    let eightBit = false;
    try {
      for (let at = 0; at < bodyBytes && decoder.error === null;) {
        const chunk = await readAt(fh, at, Math.min(READ_BYTES, bodyBytes - at));
        if (chunk.length === 0) throw new Refusal('the file shrank while being read');
        at += chunk.length;
        eightBit ||= chunk.some((b) => b > 0x7f);
        for (const piece of decoder.write(chunk)) await body.write(piece);
      }
      for (const piece of decoder.end()) await body.write(piece);
      if (decoder.error !== null) throw new Refusal(dataErrorText(decoder.error, config));
      const facts = await body.end();
      if (facts.receivedCount > config.limits.received_headers)
        throw new Refusal(`mail loop: ${facts.receivedCount} Received headers (limits.received_headers)`);
      const mailParams: MailParams = {};
      if (eightBit) mailParams.body = '8BITMIME';
      if (![senderText, ...recipients].every((a) => /^[\x00-\x7f]*$/.test(a))) mailParams.smtputf8 = true;
      const envelope: Envelope = {
        sender: senderText,
        mailParams,
        recipients: recipients.map((address) => ({ address, params: {} })),
        client: { ip: '127.0.0.1', port: 0, helo: record.helo ?? 'localhost' },
        listener: 'sendmail',
        localUser: submitter,
        receivedAt: now,
      };
      const plan = await filterBeforeCommit(
        this.#opts.filters,
        {
          qid: writer.qid,
          sender: senderText,
          recipients,
          helo: envelope.client.helo,
          client: { ip: envelope.client.ip, port: envelope.client.port },
          listener: 'sendmail',
          // The kernel's word for the user, as the rate limits count it (login@origin).
          authUser: ownAddress(config, user.login),
          tls: undefined,
        },
        writer,
        envelope,
        log,
      );
      switch (plan.kind) {
        case 'commit':
          await writer.commit(plan.envelope, plan.prefix);
          break;
        case 'discard':
          writer.abort();
          return;
        case 'refuse':
          if (plan.reply.code < 500)
            throw new Deferral(
              `content filter: ${formatReply(plan.reply).trim()}`,
              'maildrop file deferred: content filter',
            );
          await this.#bounce(
            writer.qid,
            writer.readBack !== undefined ? await writer.readBack() : Buffer.alloc(0),
            envelope,
            plan.reply,
            name,
          );
          writer.abort();
          return;
        default: {
          const never: never = plan;
          throw new Error(`unhandled commit plan ${JSON.stringify(never)}`);
        }
      }
    } catch (err) {
      writer.abort();
      throw err;
    }
    log.info(
      {
        qid: writer.qid,
        size: writer.size,
        sender: senderText,
        rcpts: recipients,
        user: user.login,
        uid: user.uid,
        via: record.via,
        maildrop: name,
      },
      'queued',
    );
  }

  /**
   * A content filter refused the message: a bounce (RFC 3464) to its sender, for every
   * recipient, with the filter's reply as the diagnostic and the original's header section.
   * From <> nothing goes back (RFC 5321 4.5.5); the refusal is logged. A bounce that cannot be
   * stored throws, so the file stays for a later scan.
   */
  async #bounce(
    qid: string,
    stored: AsyncIterable<Buffer> | Buffer,
    envelope: Envelope,
    refusal: Reply,
    name: string,
  ): Promise<void> {
    const { config, spool, log } = this.#opts;
    const diagnostic = formatReply(refusal).trim();
    if (envelope.sender === '') {
      log.warn(
        { qid, maildrop: name, reply: diagnostic },
        'maildrop file refused by a content filter; from <>, so no bounce',
      );
      return;
    }
    const now = this.#now();
    const recipients = envelope.recipients.map((r) => ({
      address: r.address,
      action: 'failed' as const,
      status: refusal.enhanced ?? '5.7.1',
      diagnostic: { type: 'smtp' as const, text: diagnostic },
      lastAttempt: now,
      tried: `a check by the content filter before the message was queued (it came by sendmail, maildrop file ${name})`,
    }));
    const dsn = await buildDsn({
      reportingMta: config.hostname,
      qid,
      arrivalDate: envelope.receivedAt,
      originalSender: envelope.sender,
      recipients,
      ret: 'HDRS',
      originalMessage: stored,
      now,
      kind: 'failure',
      messageIdDomain: config.hostname,
    });
    const ctx = {
      spool,
      log,
      hostname: config.hostname,
      now: this.#now,
      ...(this.#opts.dkim !== undefined ? { dkim: this.#opts.dkim } : {}),
    };
    if ((await spoolDsn(ctx, qid, 'failure', dsn, recipients)) === 'error')
      throw new Error('the bounce for a message a content filter refused could not be stored');
    log.info(
      { qid, maildrop: name, sender: envelope.sender, reply: diagnostic },
      'maildrop file refused by a content filter; bounced to the sender',
    );
  }

  /** One rule, every path: the maildrop counts against [rate_limits] like SMTP. Throws Deferral. */
  async #checkRates(user: string, sender: string, recipients: number): Promise<void> {
    const rates = this.#opts.rates;
    if (rates === undefined) return;
    const subject = { user, senderDomain: sender.slice(sender.lastIndexOf('@') + 1) };
    let v = await rates.messages(subject);
    if (v.kind === 'ok') v = await rates.recipients(subject, recipients);
    if (v.kind === 'refused')
      throw new Deferral(
        `rate_limits.${v.name} (${v.limit} per hour for ${v.subject}); tried again in about ${v.retryAfterSeconds} s`,
        'maildrop file deferred: rate limit reached',
      );
  }

  async #refuse(name: string, reason: string, uid?: number): Promise<void> {
    const { log } = this.#opts;
    try {
      await rename(join(this.#dir, name), join(this.#refusedDir, name));
      log.error(
        { maildrop: name, uid, reason, moved_to: this.#refusedDir },
        `maildrop file refused: ${reason}; moved aside for inspection`,
      );
    } catch (err) {
      this.#skip.add(name);
      log.error({ maildrop: name, uid, reason, err }, `maildrop file refused: ${reason}; left in place`);
    }
  }
}

async function readAt(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got === length ? buf : buf.subarray(0, got);
}

function dataErrorText(error: DataError, config: Config): string {
  switch (error) {
    case 'too-big':
      return `message larger than limits.message_bytes (${config.limits.message_bytes} octets)`;
    case 'bare-lf':
      return 'a bare CR or LF in the message (the sendmail command writes CRLF)';
    case 'line-too-long':
      return `a line longer than limits.text_line_bytes (${config.limits.text_line_bytes} octets)`;
    case 'nul':
      return 'a NUL octet in the message';
    default: {
      const never: never = error;
      throw new Error(`unhandled data error ${String(never)}`);
    }
  }
}

/**
 * The From field's value (RFC 5322 3.4): `"Full Name" <address>`, the name as a quoted-string,
 * or as RFC 2047 encoded-words when it is not ASCII; control characters are dropped.
 */
export function fromValue(fullName: string, address: string): string {
  const segmenter = new Intl.Segmenter('en', { granularity: 'grapheme' });
  const graphemes = Array.from(segmenter.segment(fullName.replace(/[\x00-\x1f\x7f]/g, '')), (g) => g.segment);
  const name = graphemes.slice(0, 128).join('').trim();
  if (name === '') return `<${address}>`;
  if (/^[\x20-\x7e]*$/.test(name)) return `"${name.replace(/(["\\])/g, '\\$1')}" <${address}>`;
  // Encoded-words of at most 45 octets of UTF-8 (60 of base64) stay under 75 (RFC 2047 2),
  // cut between characters as the user sees them.
  const words: string[] = [];
  let word = '';
  for (const { segment } of segmenter.segment(name)) {
    if (word !== '' && Buffer.byteLength(word + segment, 'utf8') > 45) {
      words.push(word);
      word = '';
    }
    word += segment;
  }
  words.push(word);
  return `${words.map((w) => `=?UTF-8?B?${Buffer.from(w, 'utf8').toString('base64')}?=`).join(' ')} <${address}>`;
}
