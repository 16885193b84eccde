/**
 * A small SMTP load generator for the latency figures: N concurrent sessions send messages of a
 * given size, one transaction after another on the same connection, without pipelining (each
 * command waits for its reply, as smtp-source does). It times each transaction from the moment
 * MAIL is written to the moment the final reply after the end-of-data dot arrives.
 * RFC 5321 (client side: 4.2 replies, 4.5.2 dot-stuffing is unnecessary because no body line
 * starts with "."). Benchmark code: trusted, talks only to 127.0.0.1.
 */
import { connect, type Socket } from 'node:net';
import { timedSessions, type TimedRun } from './machine.js';

export interface LoadOptions {
  host: string;
  port: number;
  sessions: number;
  /** Messages in total, shared among the sessions. */
  messages: number;
  /** Body size in bytes, headers excluded (like smtp-source -l). */
  bodyBytes: number;
  from: string;
  to: string;
  /** Give up on the whole run after this long. */
  timeoutMs: number;
}

export interface LoadResult extends TimedRun {
  /** Transactions that failed (a non-2xx/3xx reply or a lost connection); the first error is kept. */
  failed: number;
  firstError: string;
}

export interface Reply {
  code: number;
  text: string;
}

/**
 * Reads SMTP replies (possibly multi-line, RFC 5321 4.2.1) from a socket, one at a time. detach()
 * stops reading, so that a TLS layer can take the socket over after STARTTLS (RFC 3207 4.2: the
 * client discards what it knew from before the handshake).
 */
export class ReplyReader {
  #buffer = '';
  #lines: string[] = [];
  #waiting: ((reply: Reply | Error) => void) | null = null;
  #closed: Error | null = null;
  readonly #socket: Socket;
  readonly #onData = (chunk: Buffer | string): void => {
    this.#buffer += typeof chunk === 'string' ? chunk : chunk.toString('latin1');
    let at: number;
    while ((at = this.#buffer.indexOf('\r\n')) >= 0) {
      this.#lines.push(this.#buffer.slice(0, at));
      this.#buffer = this.#buffer.slice(at + 2);
    }
    this.#deliver();
  };
  readonly #onClose = (err?: Error): void => {
    this.#closed ??= err ?? new Error('connection closed');
    this.#deliver();
  };

  constructor(socket: Socket) {
    this.#socket = socket;
    socket.on('data', this.#onData);
    socket.on('error', this.#onClose);
    socket.on('close', this.#onClose);
  }

  /** Stops reading the socket (its error events still need a listener: the caller's). */
  detach(): void {
    this.#socket.off('data', this.#onData);
    this.#socket.off('close', this.#onClose);
    this.#socket.off('error', this.#onClose);
  }

  /** The next complete reply; rejects if the connection closes first. */
  next(): Promise<Reply> {
    return new Promise((resolve, reject) => {
      this.#waiting = (r) => (r instanceof Error ? reject(r) : resolve(r));
      this.#deliver();
    });
  }

  #deliver(): void {
    if (this.#waiting === null) return;
    // A reply ends with the line whose fourth character is a space (or that has only a code).
    const last = this.#lines.findIndex((l) => l.length <= 3 || l[3] === ' ');
    if (last >= 0) {
      const lines = this.#lines.splice(0, last + 1);
      const done = this.#waiting;
      this.#waiting = null;
      const final = lines.at(-1) ?? '';
      done({ code: Number(final.slice(0, 3)), text: lines.join('\n') });
    } else if (this.#closed !== null) {
      const done = this.#waiting;
      this.#waiting = null;
      done(this.#closed);
    }
  }
}

/** Message text of bodyBytes payload bytes in 78-character lines, ending with the dot line. */
export function buildMessage(bodyBytes: number, from: string, to: string): Buffer {
  const header =
    `From: <${from}>\r\nTo: <${to}>\r\nSubject: sterna benchmark\r\n` +
    `Message-ID: <bench@bench.local>\r\n\r\n`;
  const line = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmn\r\n';
  const full = Math.floor(bodyBytes / line.length);
  const rest = bodyBytes - full * line.length;
  const tail = rest > 2 ? `${'x'.repeat(rest - 2)}\r\n` : '';
  return Buffer.from(`${header}${line.repeat(full)}${tail}.\r\n`, 'latin1');
}

export class SmtpError extends Error {}

/** Reads the next reply and throws unless its code is `want`. */
export async function expect(reader: ReplyReader, want: number, what: string): Promise<Reply> {
  const reply = await reader.next();
  if (reply.code !== want) throw new SmtpError(`${what}: expected ${want}, got ${reply.text}`);
  return reply;
}

/** One mail transaction (MAIL, RCPT, DATA, the message) on an open session; throws on any other reply. */
export async function sendTransaction(
  socket: { write(data: string | Buffer): unknown },
  reader: ReplyReader,
  envelope: { from: string; to: string },
  message: Buffer,
): Promise<void> {
  socket.write(`MAIL FROM:<${envelope.from}>\r\n`);
  await expect(reader, 250, 'MAIL');
  socket.write(`RCPT TO:<${envelope.to}>\r\n`);
  await expect(reader, 250, 'RCPT');
  socket.write('DATA\r\n');
  await expect(reader, 354, 'DATA');
  socket.write(message);
  await expect(reader, 250, 'end of data');
}

/** Runs the load and resolves with throughput and latency; never leaves a socket open. */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const message = buildMessage(options.bodyBytes, options.from, options.to);
  const latencies: number[] = [];
  let next = 0;
  let failed = 0;
  let firstError = '';
  const sockets = new Set<Socket>();
  const fail = (err: unknown): void => {
    failed++;
    if (firstError === '') firstError = err instanceof Error ? err.message : String(err);
  };

  const session = async (): Promise<void> => {
    const socket = connect({ host: options.host, port: options.port });
    sockets.add(socket);
    socket.setNoDelay(true);
    const reader = new ReplyReader(socket);
    try {
      await expect(reader, 220, 'greeting');
      socket.write('EHLO load.bench.local\r\n');
      await expect(reader, 250, 'EHLO');
      while (next < options.messages) {
        next++;
        const start = performance.now();
        await sendTransaction(socket, reader, options, message);
        latencies.push(performance.now() - start);
      }
      socket.write('QUIT\r\n');
      await reader.next().catch(() => undefined);
    } catch (err) {
      fail(err);
    } finally {
      socket.destroy();
      sockets.delete(socket);
    }
  };

  const run = await timedSessions(
    options.sessions,
    options.timeoutMs,
    session,
    () => {
      fail(new Error(`timed out after ${options.timeoutMs} ms`));
      for (const s of sockets) s.destroy();
    },
    latencies,
  );
  return { ...run, failed, firstError };
}
