/**
 * One client connection: the I/O shell around smtp/Session. Reads bytes with backpressure
 * (the socket is paused while a batch is processed), cuts them into command lines, DATA
 * bodies or BDAT chunks, runs them through the body decoder (the same rules for DATA and BDAT,
 * smtp/data-decoder.ts), feeds the session, writes its replies in order (RFC 2920), runs the
 * TLS handshake for STARTTLS and implicit TLS, and enforces the timeouts of RFC 5321 4.5.3.2:
 * limits.data_total_timeout_ms bounds a DATA body from 354 to the final dot, and a BDAT message
 * from its first chunk to the end of its LAST one, the commands between chunks included.
 * Early talkers ([early_talkers], docs/abuse.md, Postfix postscreen's pregreet test): input
 * before the greeting (after the optional greeting delay) is refused with 554 5.5.1 and closed,
 * and so, when configured, are commands sent ahead of their replies without PIPELINING
 * (RFC 2920 3.1: only after EHLO offered it, and never after HELO).
 * Faces untrusted clients.
 */
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { TlsInfo } from '../message/envelope.js';
import type { Logger } from '../observability/log.js';
import type { ConnectionObserver } from '../observability/mail-events.js';
import type { SessionOutcome } from '../observability/metrics.js';
import { BdatDecoder, ChunkReader, DataDecoder, type DataDecoderOptions } from '../smtp/data-decoder.js';
import { LineReader } from '../smtp/line-reader.js';
import type { MessageBody } from '../smtp/message-body.js';
import { formatReply, reply, type Reply } from '../smtp/replies.js';
import { Session, type Action, type SessionEvent } from '../smtp/session.js';

export interface ConnectionOptions {
  commandTimeoutMs: number;
  dataBlockTimeoutMs: number;
  dataTotalTimeoutMs: number;
  tlsHandshakeTimeoutMs: number;
  textLineBytes: number;
  messageBytes: number;
  bareLineEndings: 'reject' | 'normalize';
  hostname: string;
  /** The TLS context for STARTTLS and implicit TLS; read at each handshake so a reload applies. */
  secureContext: () => SecureContext | null;
  minTlsVersion: 'TLSv1.2' | 'TLSv1.3';
  /** Metrics and recent events (observability/mail-events.ts). */
  observer?: ConnectionObserver;
}

/** Where decoded body octets go, and the first error writing them (a spool failure). */
interface BodyTarget {
  body: MessageBody | null;
  writeError?: unknown;
}

/** A message arriving by BDAT: one decoder and one total-time limit across all its chunks. */
interface BdatMessage extends BodyTarget {
  body: MessageBody;
  decoder: BdatDecoder;
  timer: NodeJS.Timeout;
}

type Mode =
  | { kind: 'lines' }
  | (BodyTarget & { kind: 'data'; decoder: DataDecoder; timer: NodeJS.Timeout })
  /** message is null when the chunk is discarded (a refused BDAT). */
  | { kind: 'chunk'; reader: ChunkReader; message: BdatMessage | null; last: boolean }
  | { kind: 'tls' }
  | { kind: 'closed' };

export class Connection {
  #socket: Socket;
  readonly #opts: ConnectionOptions;
  readonly #log: Logger;
  #session: Session | null = null;
  readonly #lines: LineReader;
  #mode: Mode = { kind: 'lines' };
  /** The BDAT message in progress, kept between its chunks. */
  #bdat: BdatMessage | null = null;
  readonly #inbox: Buffer[] = [];
  #busy = false;
  /** The first reply (greeting or refusal) went out; input before it is an early talker's. */
  #greeted = false;
  /** The client has half-closed: no more input will come. */
  #ended = false;
  readonly #makeSession: (tls: TlsInfo | undefined) => Session;
  readonly #onClose: () => void;
  /** The last reply sent, and how the session ended once known (metrics). */
  #lastReply: Reply | null = null;
  #outcome: SessionOutcome | null = null;
  /** The server drains (SIGTERM): the open transaction may finish, then 421 4.3.2. */
  #draining = false;
  /**
   * Replies formatted while a batch of input is processed, sent as one socket write when the
   * batch is drained (RFC 2920 3.2): one string, not one write (and one stream request) each.
   */
  #out = '';
  /** A batch of input is being processed: replies wait in #out. */
  #holding = false;

  constructor(
    socket: Socket,
    opts: ConnectionOptions,
    log: Logger,
    makeSession: (tls: TlsInfo | undefined) => Session,
    onClose: () => void,
  ) {
    this.#socket = socket;
    this.#opts = opts;
    this.#log = log;
    this.#makeSession = makeSession;
    this.#onClose = onClose;
    this.#lines = new LineReader({
      maxLineBytes: Session.maxLineBytes,
      bareLineEndings: opts.bareLineEndings,
    });
  }

  /** Starts a plain connection (smtp, submission): greet and read. */
  start(): void {
    this.#attach(this.#socket);
    this.#begin(undefined);
  }

  /** Starts an implicit-TLS connection (submissions, RFC 8314): handshake first, then greet. */
  startTls(): void {
    this.#mode = { kind: 'tls' };
    this.#socket.on('error', () => undefined);
    this.#upgrade((info) => {
      this.#mode = { kind: 'lines' };
      this.#begin(info);
    });
  }

  /** Ends the session politely (server shutdown). */
  shutdown(): void {
    if (this.#mode.kind === 'closed') return;
    this.#outcome ??= 'shutdown';
    this.#send(reply('SHUTTING_DOWN', { hostname: this.#opts.hostname }));
    this.#close();
  }

  /**
   * Drain (SIGTERM): a session outside a transaction ends now with 421 4.3.2; one inside its
   * transaction ends so once the transaction does (the message's reply, or RSET).
   */
  drain(): void {
    this.#draining = true;
    if (!this.#busy) this.#shutdownIfIdle();
  }

  #shutdownIfIdle(): void {
    if (this.#draining && this.#mode.kind === 'lines' && this.#session?.inTransaction !== true)
      this.shutdown();
  }

  #begin(tls: TlsInfo | undefined): void {
    const session = this.#makeSession(tls);
    this.#session = session;
    this.#log.info({ tls: tls?.version }, 'connected');
    this.#armCommandTimeout();
    void session
      .connect()
      .then((actions) => this.#greet(session, actions))
      .catch((err: unknown) => {
        this.#log.error({ err }, 'internal error in the connect-time policy');
        this.#send(reply('SPOOL_ERROR'));
        this.#close();
      });
  }

  /** Sends the greeting (after the delay) or the refusal, unless the client talked first. */
  async #greet(session: Session, actions: Action[]): Promise<void> {
    for (const a of actions) {
      if (this.#mode.kind === 'closed') return;
      if (a.kind === 'delay') {
        await new Promise((resolve) => setTimeout(resolve, a.ms));
        continue;
      }
      if (!this.#greeted && this.#inbox.length > 0 && session.earlyTalkers?.pregreet === 'reject') {
        this.#earlyTalker('pregreet');
        return;
      }
      this.#perform([a]);
      this.#greeted = true;
    }
    if (this.#mode.kind !== 'closed' && this.#inbox.length > 0) this.#kick();
  }

  /** Refuses a client that did not wait (554 5.5.1) and closes. */
  #earlyTalker(kind: 'pregreet' | 'improper-pipelining'): void {
    const buffered = this.#inbox.reduce((n, b) => n + b.length, 0) + this.#lines.buffered;
    this.#log.warn({ kind, buffered }, 'early talker refused');
    this.#inbox.length = 0;
    this.#send(
      reply(kind === 'pregreet' ? 'EARLY_TALKER' : 'IMPROPER_PIPELINING', { hostname: this.#opts.hostname }),
    );
    this.#close();
  }

  #attach(socket: Socket): void {
    socket.on('data', (chunk: Buffer) => {
      socket.pause();
      this.#inbox.push(chunk);
      this.#kick();
    });
    socket.on('error', (err) => {
      this.#log.debug({ err: err.message }, 'socket error');
      this.#finish();
    });
    socket.on('close', () => this.#finish());
    socket.on('end', () => this.#peerEnded());
    socket.on('timeout', () => this.#timeout('idle'));
  }

  /**
   * The client half-closed (FIN, or TLS close_notify). What it sent before still counts: a
   * pipelined "... . QUIT" followed by FIN gets every reply, and a message whose final dot was
   * received is answered, not queued in silence. Needs allowHalfOpen on the listener.
   */
  #peerEnded(): void {
    this.#ended = true;
    if (!this.#busy) this.#endIfInputDone();
  }

  /** After the client's FIN, once its input is processed: end our side (replies flush first). */
  #endIfInputDone(): void {
    if (!this.#ended || this.#inbox.length > 0 || this.#mode.kind === 'closed') return;
    if (this.#mode.kind === 'tls') return; // the handshake's own error or close ends it
    // A message cut off before its end (DATA without the final dot, a BDAT chunk short of its
    // size) is dropped by #close through Session.abort(); so is a partial command line.
    this.#log.info({ mode: this.#mode.kind }, 'client closed its side');
    this.#outcome ??= 'client-closed';
    this.#close();
  }

  /**
   * Resumes reading once the replies written so far have drained to the kernel: a client that
   * pipelines commands without reading the replies cannot make the server buffer them without
   * bound (DESIGN rule 7). The command timeout still runs while we wait.
   */
  #resumeWhenWritable(): void {
    const socket = this.#socket;
    if (!socket.writableNeedDrain) {
      socket.resume();
      return;
    }
    socket.once('drain', () => {
      if (this.#socket !== socket || this.#busy) return;
      if (this.#mode.kind === 'closed' || this.#mode.kind === 'tls') return;
      socket.resume();
    });
  }

  #kick(): void {
    if (this.#busy || !this.#greeted) return;
    this.#busy = true;
    void this.#drain().finally(() => {
      this.#busy = false;
      this.#shutdownIfIdle();
      if (this.#mode.kind === 'closed') return;
      if (this.#inbox.length > 0) this.#kick();
      else if (this.#ended) this.#endIfInputDone();
      else if (this.#mode.kind !== 'tls') this.#resumeWhenWritable();
    });
  }

  /**
   * Runs every chunk of input received so far, holding the replies; they go out together once
   * the input is drained, before the socket is read again (RFC 2920 3.2: "send all pending
   * responses immediately whenever the local TCP input buffer is emptied"). A lone command's
   * reply therefore leaves as soon as it is made: nothing waits on a timer.
   */
  async #drain(): Promise<void> {
    this.#holding = true;
    try {
      while (this.#inbox.length > 0 && this.#mode.kind !== 'closed' && this.#mode.kind !== 'tls') {
        const chunk = this.#inbox.shift()!;
        await this.#consume(chunk);
      }
    } catch (err) {
      this.#log.error({ err }, 'internal error in session');
      this.#send(reply('SPOOL_ERROR'));
      this.#close();
    } finally {
      this.#holding = false;
      this.#flush();
    }
  }

  /** Feeds one chunk of input through whatever mode the session is in; mode changes pass the rest on. */
  async #consume(chunk: Buffer): Promise<void> {
    let input: Buffer | null = chunk;
    // An empty remainder still goes round once when a BDAT 0 chunk is waiting: it is complete
    // without a single byte, and its reply must not wait for the client's next packet.
    while (input !== null && (input.length > 0 || this.#emptyChunkPending())) {
      const mode = this.#mode;
      switch (mode.kind) {
        case 'lines':
          this.#lines.append(input);
          input = await this.#commandLines();
          break;
        case 'data':
          input = await this.#dataBytes(mode, input);
          break;
        case 'chunk':
          input = await this.#chunkBytes(mode, input);
          break;
        case 'tls':
        case 'closed':
          return;
        default: {
          const never: never = mode;
          throw new Error(`unhandled mode ${JSON.stringify(never)}`);
        }
      }
    }
  }

  #emptyChunkPending(): boolean {
    return this.#mode.kind === 'chunk' && this.#mode.reader.done;
  }

  /** Runs complete command lines; returns the bytes left over when the mode changed. */
  async #commandLines(): Promise<Buffer | null> {
    for (;;) {
      const ev = this.#lines.next();
      if (ev === null) return null;
      if (ev.kind === 'line' && this.#pipelinedAhead()) {
        this.#earlyTalker('improper-pipelining');
        return null;
      }
      const event: SessionEvent =
        ev.kind === 'line'
          ? { kind: 'line', line: ev.line }
          : ev.kind === 'too-long'
            ? { kind: 'line-too-long' }
            : { kind: 'line-bare-lf' };
      this.#armCommandTimeout();
      await this.#feed(event);
      if (this.#mode.kind !== 'lines') {
        const rest = this.#lines.takeRemainder();
        if (this.#mode.kind === 'tls' || this.#mode.kind === 'closed') return null; // discarded (CVE-2011-0411)
        return rest;
      }
    }
  }

  /** More input is already here while PIPELINING was not offered, and the listener refuses that. */
  #pipelinedAhead(): boolean {
    const session = this.#session;
    if (session === null || session.earlyTalkers?.improperPipelining !== 'reject') return false;
    if (session.pipeliningOffered) return false;
    return this.#lines.buffered > 0 || this.#inbox.length > 0;
  }

  /** Writes decoded body octets, unless the body is discarded, refused, or already failed to write. */
  async #writeBody(target: BodyTarget, pieces: Buffer[], error: unknown): Promise<void> {
    if (target.body === null || target.writeError !== undefined || error !== null) return;
    for (const piece of pieces) {
      try {
        await target.body.write(piece);
      } catch (err) {
        target.writeError = err;
        return;
      }
    }
  }

  async #dataBytes(mode: Extract<Mode, { kind: 'data' }>, input: Buffer): Promise<Buffer | null> {
    const r = mode.decoder.push(input);
    await this.#writeBody(mode, r.body, mode.decoder.error);
    if (!r.done) return null;
    clearTimeout(mode.timer);
    this.#mode = { kind: 'lines' };
    this.#armCommandTimeout();
    const t0 = performance.now();
    await this.#feed({
      kind: 'data-end',
      error: mode.decoder.error,
      ...(mode.writeError !== undefined ? { writeError: mode.writeError } : {}),
    });
    this.#endOfData(t0);
    return r.rest ?? null;
  }

  async #chunkBytes(mode: Extract<Mode, { kind: 'chunk' }>, input: Buffer): Promise<Buffer | null> {
    const r = mode.reader.push(input);
    const m = mode.message;
    if (m !== null && r.body.length > 0) await this.#writeBody(m, m.decoder.write(r.body), m.decoder.error);
    if (!r.done) return null;
    // RFC 3030 2: the message ends with the LAST chunk (a lone CR at its very end is bare).
    if (m !== null && mode.last) {
      await this.#writeBody(m, m.decoder.end(), m.decoder.error);
      this.#endBdat(); // received in time; the commit that follows is not the client's time
    }
    this.#mode = { kind: 'lines' };
    this.#armCommandTimeout();
    const t0 = performance.now();
    await this.#feed({
      kind: 'chunk-end',
      error: m?.decoder.error ?? null,
      ...(m?.writeError !== undefined ? { writeError: m.writeError } : {}),
    });
    if (m !== null && mode.last) this.#endOfData(t0);
    return r.rest ?? null;
  }

  /** Reports the reply to a message's end (sent by the #feed that began at t0). */
  #endOfData(t0: number): void {
    if (this.#lastReply !== null)
      this.#opts.observer?.endOfData(this.#lastReply, (performance.now() - t0) / 1000);
  }

  /** The decoder and timer of the BDAT message whose body is `body`, started at its first chunk. */
  #bdatMessage(body: MessageBody): BdatMessage {
    if (this.#bdat?.body === body) return this.#bdat;
    this.#endBdat();
    const timer = setTimeout(() => this.#timeout('BDAT total time'), this.#opts.dataTotalTimeoutMs);
    timer.unref();
    this.#bdat = { body, decoder: new BdatDecoder(this.#bodyRules()), timer };
    return this.#bdat;
  }

  #endBdat(): void {
    if (this.#bdat === null) return;
    clearTimeout(this.#bdat.timer);
    this.#bdat = null;
  }

  #bodyRules(): DataDecoderOptions {
    return {
      maxMessageBytes: this.#opts.messageBytes,
      maxLineBytes: this.#opts.textLineBytes,
      bareLineEndings: this.#opts.bareLineEndings,
    };
  }

  async #feed(event: SessionEvent): Promise<void> {
    const session = this.#session;
    if (session === null) return;
    const actions = await session.handle(event);
    // The BDAT message ended (LAST chunk, a refused chunk, RSET, ...): stop its clock.
    if (!session.receivingChunks) this.#endBdat();
    await this.#performAsync(actions);
  }

  async #performAsync(actions: Action[]): Promise<void> {
    for (const a of actions) {
      if (a.kind === 'delay') {
        this.#flush(); // what came before the delay is not held back by it
        await new Promise((resolve) => setTimeout(resolve, a.ms));
        continue;
      }
      this.#perform([a]);
    }
  }

  #perform(actions: Action[]): void {
    for (const a of actions) {
      switch (a.kind) {
        case 'reply':
          this.#send(a.reply);
          break;
        case 'delay':
          break; // handled by #performAsync
        case 'close':
          this.#close();
          break;
        case 'start-tls':
          this.#beginStartTls();
          break;
        case 'receive-data': {
          const timer = setTimeout(() => this.#timeout('DATA total time'), this.#opts.dataTotalTimeoutMs);
          timer.unref();
          this.#mode = { kind: 'data', decoder: new DataDecoder(this.#bodyRules()), body: a.body, timer };
          this.#socket.setTimeout(this.#opts.dataBlockTimeoutMs);
          break;
        }
        case 'receive-chunk':
          this.#mode = {
            kind: 'chunk',
            reader: new ChunkReader(a.size),
            message: a.body === null ? null : this.#bdatMessage(a.body),
            last: a.last,
          };
          this.#socket.setTimeout(this.#opts.dataBlockTimeoutMs);
          break;
        default: {
          const never: never = a;
          throw new Error(`unhandled action ${JSON.stringify(never)}`);
        }
      }
    }
  }

  #beginStartTls(): void {
    // Anything the client pipelined after STARTTLS is thrown away (RFC 3207 5, CVE-2011-0411).
    this.#lines.takeRemainder();
    this.#inbox.length = 0;
    this.#mode = { kind: 'tls' };
    this.#flush(); // the 220 goes out in clear, before the handshake
    this.#socket.removeAllListeners('data');
    this.#socket.removeAllListeners('end');
    this.#socket.removeAllListeners('close');
    this.#socket.removeAllListeners('timeout');
    this.#socket.on('close', () => this.#finish());
    this.#upgrade((info) => {
      this.#mode = { kind: 'lines' };
      void this.#session
        ?.handle({ kind: 'tls-started', tls: info })
        .then((actions) => this.#perform(actions))
        .then(() => this.#armCommandTimeout());
    });
  }

  /** Runs a server-side TLS handshake on the current socket, then reads from the TLS socket. */
  #upgrade(onSecure: (info: TlsInfo) => void): void {
    const context = this.#opts.secureContext();
    if (context === null) {
      this.#close();
      return;
    }
    const raw = this.#socket;
    raw.setTimeout(0);
    const secure = new TLSSocket(raw, { isServer: true, secureContext: context });
    this.#socket = secure;
    const timer = setTimeout(() => {
      this.#log.info('TLS handshake timed out');
      this.#outcome ??= 'tls-failed';
      secure.destroy();
      this.#finish();
    }, this.#opts.tlsHandshakeTimeoutMs);
    timer.unref();
    secure.once('secure', () => {
      clearTimeout(timer);
      const version = secure.getProtocol() ?? 'unknown';
      const cipher = secure.getCipher().name;
      this.#log.info({ tls: version, cipher, resumed: secure.isSessionReused() }, 'TLS established');
      this.#opts.observer?.tlsEstablished(version);
      this.#attach(secure);
      onSecure({ version, cipher });
      secure.resume();
    });
    secure.on('error', (err: Error) => {
      clearTimeout(timer);
      this.#log.info({ err: err.message }, 'TLS handshake failed');
      this.#outcome ??= 'tls-failed';
      this.#finish();
    });
  }

  #send(r: Reply): void {
    if (this.#mode.kind === 'closed' || this.#socket.destroyed) return;
    this.#out += formatReply(r);
    if (!this.#holding) this.#flush();
    this.#lastReply = r;
    this.#opts.observer?.reply(r);
    if (r.close === true) this.#close();
  }

  /** Writes the held replies, if any, in one socket write. */
  #flush(): void {
    if (this.#out === '') return;
    const out = this.#out;
    this.#out = '';
    if (!this.#socket.destroyed) this.#socket.write(out);
  }

  #armCommandTimeout(): void {
    if (this.#mode.kind === 'lines') this.#socket.setTimeout(this.#opts.commandTimeoutMs);
  }

  #timeout(limit: string): void {
    if (this.#mode.kind === 'closed') return;
    this.#log.info({ mode: this.#mode.kind, limit }, 'timeout');
    this.#outcome ??= 'timeout';
    this.#send(reply('TIMEOUT', { hostname: this.#opts.hostname }));
    this.#close();
  }

  #close(): void {
    this.#outcome ??= this.#lastReply?.code === 221 ? 'quit' : 'server-closed';
    if (this.#mode.kind === 'data') clearTimeout(this.#mode.timer);
    this.#endBdat();
    this.#mode = { kind: 'closed' };
    this.#session?.abort();
    this.#flush();
    const socket = this.#socket;
    if (this.#outcome === 'quit' && socket.writableLength === 0 && !(socket instanceof TLSSocket)) {
      // After 221 the session is over and the reply is with the kernel: close at once, as
      // Postfix does, instead of half-closing and reading on. A client that closes without
      // waiting for the 221 (smtp-source does) then cannot make the read fail with ECONNRESET,
      // which costs an Error and its stack trace on every such connection. Over TLS, end()
      // still sends close_notify first (RFC 8446 6.1).
      socket.destroy();
    } else {
      socket.end();
      setTimeout(() => socket.destroy(), 2000).unref();
    }
    this.#finish();
  }

  #finished = false;

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#mode.kind === 'data') clearTimeout(this.#mode.timer);
    this.#endBdat();
    if (this.#mode.kind !== 'closed') {
      this.#mode = { kind: 'closed' };
      this.#session?.abort();
      this.#socket.destroy();
    }
    this.#log.info('disconnected');
    this.#opts.observer?.ended(this.#outcome ?? 'client-closed');
    this.#onClose();
  }
}
