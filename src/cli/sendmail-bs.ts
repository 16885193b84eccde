/**
 * `sterna sendmail -bs`: SMTP on stdin and stdout, in this process, for programs that would
 * rather speak SMTP to the sendmail command than pass it arguments. It drives Sterna's own
 * protocol engine (smtp/session.ts, the same one the listeners run: "the protocol is data")
 * with the same line reader and body decoders; a message it accepts goes into the maildrop
 * (queue/maildrop-writer.ts) and "250 ... queued as ID" names the maildrop file. The session is
 * an smtp-listener one without AUTH or TLS: the local user is known already (the kernel's uid).
 * The sender must be one the user may use (policy/local-sender.ts): MAIL is answered first,
 * and each RCPT after a sender the user may not use gets 553 5.7.1; the maildrop commit checks
 * it again. Limits, timeouts and the bare-line-ending rule are the configuration's.
 * Trust: the peer is the local user's program; its input is checked as a network client's.
 */
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/schema.js';
import type { Envelope } from '../message/envelope.js';
import { mayUseLocalSender, type LocalSubmitter } from '../policy/local-sender.js';
import { MaildropWriter } from '../queue/maildrop-writer.js';
import { BdatDecoder, ChunkReader, DataDecoder, type DataDecoderOptions } from '../smtp/data-decoder.js';
import { LineReader } from '../smtp/line-reader.js';
import type { MessageBody } from '../smtp/message-body.js';
import { formatReply, reply, type Reply } from '../smtp/replies.js';
import {
  Session,
  type Action,
  type AuthOutcome,
  type MessageSink,
  type RecipientVerdict,
  type SessionEvent,
  type SessionHooks,
} from '../smtp/session.js';

export interface StdioSmtpOptions {
  config: Config;
  user: LocalSubmitter;
  serverUid: number;
  maildropDir: string;
  fullName?: string;
  input: AsyncIterable<Buffer | string> & { destroy?: () => void };
  output: NodeJS.WritableStream;
  /** Problems for the operator (the maildrop cannot be written ...). */
  stderr: NodeJS.WritableStream;
}

/** The sender refused at the maildrop commit (a second check, after RCPT's). */
class SenderRefused extends Error {
  constructor(readonly address: string) {
    super(`sender <${address}> not allowed`);
  }
}

/** A maildrop file as the session's message sink. */
class MaildropSink implements MessageSink {
  readonly #writer: MaildropWriter;
  readonly #opts: StdioSmtpOptions;

  constructor(opts: StdioSmtpOptions) {
    this.#opts = opts;
    this.#writer = new MaildropWriter(opts.maildropDir);
  }

  get qid(): string {
    return this.#writer.id;
  }

  get size(): number {
    return this.#writer.size;
  }

  write(chunk: Buffer): Promise<void> {
    return this.#writer.write(chunk);
  }

  async commit(envelope: Envelope): Promise<void> {
    const { config, user, serverUid, fullName } = this.#opts;
    if (!mayUseLocalSender(config, user, serverUid, envelope.sender))
      throw new SenderRefused(envelope.sender);
    await this.#writer.commit({
      v: 1,
      sender: envelope.sender,
      recipients: envelope.recipients.map((r) => r.address),
      via: 'smtp',
      helo: envelope.client.helo,
      ...(fullName !== undefined ? { full_name: fullName } : {}),
    });
  }

  abort(): void {
    void this.#writer.abort();
  }
}

class StdioHooks implements SessionHooks {
  readonly #opts: StdioSmtpOptions;
  /** The sender of the transaction in progress, from the session's "mail" event. */
  #sender: string | null = null;

  constructor(opts: StdioSmtpOptions) {
    this.#opts = opts;
  }

  now(): number {
    return Date.now();
  }

  nonce(): string {
    return randomBytes(12).toString('hex');
  }

  checkRecipient(): Promise<RecipientVerdict> {
    const { config, user, serverUid } = this.#opts;
    const sender = this.#sender ?? '';
    if (!mayUseLocalSender(config, user, serverUid, sender))
      return Promise.resolve({
        kind: 'reject',
        reply: reply('SENDER_NOT_OWNED', { address: sender, user: user.login, hostname: config.hostname }),
      });
    return Promise.resolve({ kind: 'accept' });
  }

  verifyAddress(): Promise<boolean> {
    return Promise.resolve(false);
  }

  isAuthLockedOut(): boolean {
    return false;
  }

  authenticate(): Promise<AuthOutcome> {
    return Promise.resolve({ kind: 'fail', delayMs: 0 });
  }

  mayUseSender(): boolean {
    return true;
  }

  beginMessage(): MessageSink {
    return new MaildropSink(this.#opts);
  }

  spoolFailureReply(err: unknown): Reply {
    const { config, user, stderr } = this.#opts;
    if (err instanceof SenderRefused)
      return reply('SENDER_NOT_OWNED', { address: err.address, user: user.login, hostname: config.hostname });
    stderr.write(
      `sendmail -bs: the maildrop cannot be written: ${err instanceof Error ? err.message : String(err)}\n`,
    );
    const code = err instanceof Error && 'code' in err ? err.code : undefined;
    return code === 'ENOSPC' || code === 'EDQUOT' ? reply('SPOOL_FULL') : reply('SPOOL_ERROR');
  }

  event(name: string, fields: Record<string, unknown>): void {
    if (name === 'mail') this.#sender = typeof fields['sender'] === 'string' ? fields['sender'] : '';
  }
}

type Mode =
  | { kind: 'lines' }
  | { kind: 'data'; decoder: DataDecoder; body: MessageBody | null; writeError?: unknown }
  | { kind: 'chunk'; reader: ChunkReader; body: MessageBody | null; last: boolean; writeError?: unknown }
  | { kind: 'closed' };

/** Runs the session until QUIT, a closing reply or the end of input; resolves to the exit code. */
export async function runStdioSmtp(opts: StdioSmtpOptions): Promise<number> {
  const { config } = opts;
  const l = config.limits;
  const session = new Session(
    {
      hostname: config.hostname,
      banner: config.smtp.banner,
      listener: 'smtp',
      limits: {
        commandLineBytes: l.command_line_bytes,
        textLineBytes: l.text_line_bytes,
        messageBytes: l.message_bytes,
        recipients: l.recipients,
        errors: l.errors,
        receivedHeaders: l.received_headers,
      },
      vrfy: 'ambiguous',
      authMechanisms: [],
      authAllowPlaintext: false,
      authOnSmtp: false,
      tlsAvailable: false,
      enforceSender: false,
    },
    new StdioHooks(opts),
    { ip: '127.0.0.1', port: 0 },
  );
  const rules: DataDecoderOptions = {
    maxMessageBytes: l.message_bytes,
    maxLineBytes: l.text_line_bytes,
    bareLineEndings: config.smtp.bare_line_endings,
  };
  const lines = new LineReader({
    maxLineBytes: Session.maxLineBytes,
    bareLineEndings: config.smtp.bare_line_endings,
  });
  let mode: Mode = { kind: 'lines' };
  /** The BDAT message in progress: one decoder across its chunks. */
  let bdat: { body: MessageBody; decoder: BdatDecoder } | null = null;
  let timedOut = false;
  // A function, so that TypeScript does not narrow `mode` across the awaits that change it.
  const closed = (): boolean => mode.kind === 'closed';
  let timer: NodeJS.Timeout | undefined;
  const arm = (): void => {
    clearTimeout(timer);
    const ms = mode.kind === 'lines' ? l.command_timeout_ms : l.data_block_timeout_ms;
    timer = setTimeout(() => {
      timedOut = true;
      opts.output.write(formatReply(reply('TIMEOUT', { hostname: config.hostname })));
      opts.input.destroy?.();
    }, ms);
    timer.unref();
  };

  const perform = async (actions: Action[]): Promise<void> => {
    for (const a of actions) {
      switch (a.kind) {
        case 'reply':
          opts.output.write(formatReply(a.reply));
          if (a.reply.close === true) mode = { kind: 'closed' };
          break;
        case 'delay':
          await new Promise((resolve) => setTimeout(resolve, a.ms));
          break;
        case 'close':
        case 'start-tls': // never offered: no certificate here
          mode = { kind: 'closed' };
          break;
        case 'receive-data':
          mode = { kind: 'data', decoder: new DataDecoder(rules), body: a.body };
          break;
        case 'receive-chunk': {
          if (a.body !== null && bdat?.body !== a.body)
            bdat = { body: a.body, decoder: new BdatDecoder(rules) };
          mode = { kind: 'chunk', reader: new ChunkReader(a.size), body: a.body, last: a.last };
          break;
        }
        default: {
          const never: never = a;
          throw new Error(`unhandled action ${JSON.stringify(never)}`);
        }
      }
    }
  };
  const feed = async (ev: SessionEvent): Promise<void> => {
    await perform(await session.handle(ev));
    if (!session.receivingChunks) bdat = null;
  };
  const writeBody = async (
    target: { body: MessageBody | null; writeError?: unknown },
    pieces: Buffer[],
    failed: boolean,
  ): Promise<void> => {
    if (target.body === null || failed || target.writeError !== undefined) return;
    for (const piece of pieces) {
      try {
        await target.body.write(piece);
      } catch (err) {
        target.writeError = err;
        return;
      }
    }
  };

  /** Feeds one chunk of input through whatever mode the session is in. */
  const consume = async (chunk: Buffer): Promise<void> => {
    let input: Buffer | null = chunk;
    while (input !== null && (input.length > 0 || (mode.kind === 'chunk' && mode.reader.done))) {
      const m: Mode = mode;
      switch (m.kind) {
        case 'lines': {
          lines.append(input);
          input = null;
          for (
            let ev = lines.next();
            ev !== null && mode.kind === 'lines';
            ev = mode.kind === 'lines' ? lines.next() : null
          ) {
            await feed(
              ev.kind === 'line'
                ? { kind: 'line', line: ev.line }
                : ev.kind === 'too-long'
                  ? { kind: 'line-too-long' }
                  : { kind: 'line-bare-lf' },
            );
          }
          if (mode.kind === 'data' || mode.kind === 'chunk') input = lines.takeRemainder();
          break;
        }
        case 'data': {
          const r = m.decoder.push(input);
          await writeBody(m, r.body, m.decoder.error !== null);
          input = null;
          if (r.done) {
            mode = { kind: 'lines' };
            await feed({
              kind: 'data-end',
              error: m.decoder.error,
              ...(m.writeError !== undefined ? { writeError: m.writeError } : {}),
            });
            input = r.rest ?? null;
          }
          break;
        }
        case 'chunk': {
          const r = m.reader.push(input);
          input = null;
          const msg = m.body !== null ? bdat : null;
          const target = { body: m.body, writeError: m.writeError };
          if (msg !== null && r.body.length > 0)
            await writeBody(target, msg.decoder.write(r.body), msg.decoder.error !== null);
          if (r.done) {
            if (msg !== null && m.last)
              await writeBody(target, msg.decoder.end(), msg.decoder.error !== null);
            mode = { kind: 'lines' };
            await feed({
              kind: 'chunk-end',
              error: msg?.decoder.error ?? null,
              ...(target.writeError !== undefined ? { writeError: target.writeError } : {}),
            });
            input = r.rest ?? null;
          } else {
            m.writeError = target.writeError;
          }
          break;
        }
        case 'closed':
          return;
        default: {
          const never: never = m;
          throw new Error(`unhandled mode ${JSON.stringify(never)}`);
        }
      }
    }
  };

  await perform(session.greeting());
  arm();
  try {
    for await (const chunk of opts.input) {
      await consume(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
      if (closed()) break;
      arm();
    }
  } catch (err) {
    if (!timedOut) throw err;
  } finally {
    clearTimeout(timer);
    // End of input without QUIT: a half-received message is dropped, as on a network close.
    session.abort();
  }
  return 0;
}
