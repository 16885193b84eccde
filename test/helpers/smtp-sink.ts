/**
 * A small, scriptable SMTP server for tests of Sterna's outbound side: it plays the remote MX
 * or smarthost. Binds 127.0.0.x on a given or ephemeral port; offers the EHLO keywords it is
 * told to; answers each command by default like a permissive server, unless the test's
 * `respond` script returns another action (a reply, silence, or closing); optional STARTTLS or
 * implicit TLS with a given certificate; optional AUTH PLAIN / LOGIN against one user. Records
 * per session a transcript ("C: …" / "S: …") and every message received, byte for byte as it
 * came on the wire (DATA: dot-stuffed with its terminator; BDAT: the chunks joined) and
 * decoded. Never used by Sterna itself.
 */
import net from 'node:net';
import tls from 'node:tls';

/**
 * What the sink does for a command: a reply (lines separated by "\n", each with its code, e.g.
 * "250-a\n250 b"; CRLF added), possibly closing afterwards; or silence; or close without reply.
 */
export type SinkAction = string | { reply?: string; close?: boolean; silent?: boolean };

export interface SinkCommand {
  /** Upper-case verb, or 'GREETING', or 'DATA-END' (after the final "."), or 'BDAT' (after its chunk). */
  verb: string;
  /** The command line as received ('' for GREETING and DATA-END). */
  line: string;
  session: SinkSession;
}

export interface SinkMessage {
  via: 'DATA' | 'BDAT';
  mailFrom: string;
  rcptTo: string[];
  /** DATA: the bytes after 354, dot-stuffed, including the final ".\r\n". BDAT: all chunks joined. */
  raw: Buffer;
  /** The message content: DATA un-stuffed, without the terminating "." line; BDAT as raw. */
  body: Buffer;
}

export interface SinkSession {
  index: number;
  transcript: string[];
  messages: SinkMessage[];
  tls: boolean;
  /** The user authenticated with AUTH, if any. */
  authUser: string | null;
  /** Bytes received in clear after STARTTLS's 220 and before the handshake (should stay 0). */
  injectedBytes: number;
  /** The client's address as the sink saw it. */
  remoteAddress: string;
  /**
   * Command lines grouped by the network read that completed them: a pipelined batch (RFC 2920)
   * shows as one group of several lines (on loopback one write normally arrives as one read).
   */
  batches: string[][];
}

export interface SinkOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (ephemeral). */
  port?: number;
  /** EHLO keywords after the greeting line; null refuses EHLO with 502 (HELO fallback). */
  ehlo?: string[] | null;
  /** Certificate for STARTTLS (offered when set and the session is not yet encrypted) or implicit TLS. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  implicitTls?: boolean;
  /** Accepted AUTH credentials; AUTH is offered (PLAIN LOGIN, or `authMechanisms`) only over TLS. */
  auth?: { username: string; password: string };
  authMechanisms?: string[];
  /** Close the connection once this many DATA bytes (after 354) have arrived. */
  dropDataAfter?: number;
  /** With dropDataAfter: a reply sent just before closing (a server giving up mid-body). */
  dropDataReply?: string;
  /** Script: an action for this command, or undefined for the default. */
  respond?: (cmd: SinkCommand) => SinkAction | undefined;
}

export interface SmtpSink {
  host: string;
  port: number;
  sessions: SinkSession[];
  /** Every message received, all sessions, in order. */
  messages(): SinkMessage[];
  /** Client lines of all sessions, without the "C: " prefix. */
  commands(): string[];
  /** The open connections' sockets (e.g. to pause() one and simulate a peer that stops reading). */
  sockets(): net.Socket[];
  close(): Promise<void>;
}

const HOSTNAME = 'sink.test';

export async function startSmtpSink(opts: SinkOptions = {}): Promise<SmtpSink> {
  const host = opts.host ?? '127.0.0.1';
  const sessions: SinkSession[] = [];
  const sockets = new Set<net.Socket>();
  const secureContext =
    opts.tls === undefined ? undefined : tls.createSecureContext({ cert: opts.tls.cert, key: opts.tls.key });

  const onConnection = (socket: net.Socket): void => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const session: SinkSession = {
      index: sessions.length,
      transcript: [],
      messages: [],
      tls: socket instanceof tls.TLSSocket,
      authUser: null,
      injectedBytes: 0,
      remoteAddress: socket.remoteAddress ?? '',
      batches: [],
    };
    sessions.push(session);
    new SinkConnection(socket, session, opts, secureContext).start();
  };

  const server =
    opts.implicitTls === true && opts.tls !== undefined
      ? tls.createServer({ cert: opts.tls.cert, key: opts.tls.key }, onConnection)
      : net.createServer(onConnection);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('sink: no address');

  return {
    host,
    port: address.port,
    sessions,
    messages: () => sessions.flatMap((s) => s.messages),
    commands: () =>
      sessions.flatMap((s) => s.transcript.filter((l) => l.startsWith('C: ')).map((l) => l.slice(3))),
    sockets: () => [...sockets],
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

type Mode =
  | { kind: 'command' }
  | { kind: 'data'; from: number }
  | { kind: 'bdat'; size: number; last: boolean }
  | { kind: 'auth-login'; step: 'user' | 'password'; user: string }
  | { kind: 'closed' };

class SinkConnection {
  #socket: net.Socket;
  readonly #session: SinkSession;
  readonly #opts: SinkOptions;
  readonly #secureContext: tls.SecureContext | undefined;
  #buf = Buffer.alloc(0);
  #mode: Mode = { kind: 'command' };
  #mailFrom: string | null = null;
  #rcptTo: string[] = [];
  #bdat: Buffer[] = [];
  #upgrading = false;
  readonly #onData = (chunk: Buffer): void => {
    if (this.#upgrading) {
      this.#session.injectedBytes += chunk.length;
      return;
    }
    this.#buf = Buffer.concat([this.#buf, chunk]);
    this.#batch = [];
    this.#process();
    if (this.#batch.length > 0) this.#session.batches.push(this.#batch);
  };
  #batch: string[] = [];

  constructor(
    socket: net.Socket,
    session: SinkSession,
    opts: SinkOptions,
    secureContext: tls.SecureContext | undefined,
  ) {
    this.#socket = socket;
    this.#session = session;
    this.#opts = opts;
    this.#secureContext = secureContext;
  }

  start(): void {
    this.#socket.on('error', () => undefined);
    this.#socket.on('data', this.#onData);
    this.#act('GREETING', '', `220 ${HOSTNAME} ESMTP sink`);
  }

  #send(reply: string): void {
    for (const line of reply.split('\n')) this.#session.transcript.push(`S: ${line}`);
    this.#socket.write(
      reply
        .split('\n')
        .map((l) => `${l}\r\n`)
        .join(''),
    );
  }

  #close(): void {
    this.#mode = { kind: 'closed' };
    this.#socket.end();
    this.#socket.destroySoon();
  }

  /** Applies the script's action for this command, or `fallback`. Returns the reply sent, if any. */
  #act(verb: string, line: string, fallback: string, closeAfter = false): string | null {
    const action = this.#opts.respond?.({ verb, line, session: this.#session });
    if (action === undefined) {
      this.#send(fallback);
      if (closeAfter) this.#close();
      return fallback;
    }
    const a = typeof action === 'string' ? { reply: action } : action;
    if (a.silent === true) return null;
    if (a.reply !== undefined) this.#send(a.reply);
    if (a.close === true || (a.reply !== undefined && a.reply.startsWith('421'))) this.#close();
    return a.reply ?? null;
  }

  #process(): void {
    for (;;) {
      const mode = this.#mode;
      if (mode.kind === 'closed') return;
      if (mode.kind === 'data') {
        if (!this.#data(mode.from)) return;
        continue;
      }
      if (mode.kind === 'bdat') {
        if (this.#buf.length < mode.size) return;
        this.#bdatChunk(this.#buf.subarray(0, mode.size), mode.last);
        this.#buf = this.#buf.subarray(mode.size);
        continue;
      }
      const crlf = this.#buf.indexOf('\r\n');
      if (crlf === -1) return;
      const line = this.#buf.subarray(0, crlf).toString('utf8');
      this.#buf = this.#buf.subarray(crlf + 2);
      this.#session.transcript.push(`C: ${line}`);
      this.#batch.push(line);
      if (mode.kind === 'auth-login') this.#authLogin(mode, line);
      else this.#command(line);
      if (this.#upgrading) return;
    }
  }

  /** DATA mode: looks for the terminator; true if the data ended (mode changed). */
  #data(from: number): boolean {
    const buf = this.#buf;
    const drop = this.#opts.dropDataAfter;
    let end = -1;
    if (buf.subarray(0, 3).equals(Buffer.from('.\r\n'))) end = 3;
    else {
      const at = buf.indexOf('\r\n.\r\n', Math.max(0, from - 4));
      if (at !== -1) end = at + 5;
    }
    if (drop !== undefined && (end === -1 ? buf.length : end) >= drop) {
      if (this.#opts.dropDataReply !== undefined) this.#send(this.#opts.dropDataReply);
      this.#mode = { kind: 'closed' };
      this.#socket.destroy();
      return false;
    }
    if (end === -1) {
      this.#mode = { kind: 'data', from: buf.length };
      return false;
    }
    const raw = Buffer.from(buf.subarray(0, end));
    this.#buf = buf.subarray(end);
    this.#mode = { kind: 'command' };
    const content = raw.subarray(0, end - 3);
    const lines: Buffer[] = [];
    let pos = 0;
    while (pos < content.length) {
      const lf = content.indexOf('\n', pos);
      const next = lf === -1 ? content.length : lf + 1;
      const line = content.subarray(pos, next);
      lines.push(line[0] === 0x2e ? line.subarray(1) : line);
      pos = next;
    }
    this.#session.transcript.push(`C: <${raw.length} octets of DATA>`);
    this.#deliver('DATA', raw, Buffer.concat(lines), 'DATA-END', '250 2.0.0 Ok: queued as SINK');
    return true;
  }

  #deliver(via: 'DATA' | 'BDAT', raw: Buffer, body: Buffer, verb: string, fallback: string): void {
    const reply = this.#act(verb, '', fallback);
    if (reply !== null && reply.startsWith('2')) {
      this.#session.messages.push({ via, mailFrom: this.#mailFrom ?? '', rcptTo: this.#rcptTo, raw, body });
    }
    this.#mailFrom = null;
    this.#rcptTo = [];
  }

  #bdatChunk(data: Buffer, last: boolean): void {
    this.#bdat.push(Buffer.from(data));
    this.#mode = { kind: 'command' };
    if (!last) {
      this.#act('BDAT', '', `250 2.0.0 ${data.length} octets received`);
      return;
    }
    const raw = Buffer.concat(this.#bdat);
    this.#bdat = [];
    this.#deliver('BDAT', raw, raw, 'BDAT', '250 2.0.0 Ok: queued as SINK');
  }

  #ehloLines(): string {
    const keywords = [...(this.#opts.ehlo ?? [])];
    const secure = this.#socket instanceof tls.TLSSocket;
    if (this.#secureContext !== undefined && !secure) keywords.push('STARTTLS');
    if (this.#opts.auth !== undefined && secure) {
      keywords.push(`AUTH ${(this.#opts.authMechanisms ?? ['PLAIN', 'LOGIN']).join(' ')}`);
    }
    const lines = [HOSTNAME, ...keywords];
    return lines.map((l, i) => `250${i === lines.length - 1 ? ' ' : '-'}${l}`).join('\n');
  }

  #command(line: string): void {
    const sp = line.indexOf(' ');
    const verb = (sp === -1 ? line : line.slice(0, sp)).toUpperCase();
    const arg = sp === -1 ? '' : line.slice(sp + 1);
    switch (verb) {
      case 'EHLO':
        this.#act(
          verb,
          line,
          this.#opts.ehlo === null ? '502 5.5.1 EHLO not implemented' : this.#ehloLines(),
        );
        return;
      case 'HELO':
        this.#act(verb, line, `250 ${HOSTNAME}`);
        return;
      case 'MAIL': {
        const reply = this.#act(verb, line, '250 2.1.0 Ok');
        if (reply?.startsWith('2') === true) {
          this.#mailFrom = /^FROM:<([^>]*)>/i.exec(arg)?.[1] ?? '';
          this.#rcptTo = [];
        }
        return;
      }
      case 'RCPT': {
        const reply = this.#act(verb, line, '250 2.1.5 Ok');
        if (reply?.startsWith('2') === true) this.#rcptTo.push(/^TO:<([^>]*)>/i.exec(arg)?.[1] ?? '');
        return;
      }
      case 'DATA': {
        // As a real server does (RFC 2920 3.1): no DATA without MAIL and an accepted RCPT.
        const fallback =
          this.#mailFrom === null
            ? '503 5.5.1 Error: need MAIL command'
            : this.#rcptTo.length === 0
              ? '554 5.5.1 Error: no valid recipients'
              : '354 End data with <CR><LF>.<CR><LF>';
        const reply = this.#act(verb, line, fallback);
        if (reply?.startsWith('354') === true) this.#mode = { kind: 'data', from: 0 };
        return;
      }
      case 'BDAT': {
        const m = /^(\d+)( LAST)?$/i.exec(arg);
        if (m === null) {
          this.#act(verb, line, '501 5.5.4 bad BDAT');
          return;
        }
        this.#mode = { kind: 'bdat', size: Number(m[1]), last: m[2] !== undefined };
        return;
      }
      case 'RSET':
        this.#mailFrom = null;
        this.#rcptTo = [];
        this.#bdat = [];
        this.#act(verb, line, '250 2.0.0 Ok');
        return;
      case 'NOOP':
        this.#act(verb, line, '250 2.0.0 Ok');
        return;
      case 'QUIT':
        this.#act(verb, line, '221 2.0.0 Bye', true);
        return;
      case 'STARTTLS': {
        if (this.#secureContext === undefined || this.#socket instanceof tls.TLSSocket) {
          this.#act(verb, line, '502 5.5.1 STARTTLS not available');
          return;
        }
        const reply = this.#act(verb, line, '220 2.0.0 Ready to start TLS');
        if (reply?.startsWith('220') === true) this.#upgrade();
        return;
      }
      case 'AUTH':
        this.#auth(line, arg);
        return;
      default:
        this.#act(verb, line, '500 5.5.1 Command not recognized');
    }
  }

  #upgrade(): void {
    const plain = this.#socket;
    this.#upgrading = true;
    this.#session.injectedBytes += this.#buf.length;
    this.#buf = Buffer.alloc(0);
    plain.off('data', this.#onData);
    const secure = new tls.TLSSocket(plain, { isServer: true, secureContext: this.#secureContext });
    secure.on('error', () => undefined);
    secure.once('secure', () => {
      this.#upgrading = false;
      this.#socket = secure;
      this.#session.tls = true;
      this.#mailFrom = null;
      this.#rcptTo = [];
      secure.on('data', this.#onData);
    });
  }

  #auth(line: string, arg: string): void {
    const [mech = '', initial] = arg.split(' ');
    const want = this.#opts.auth;
    if (want === undefined) {
      this.#act('AUTH', line, '502 5.5.1 AUTH not available');
      return;
    }
    if (mech.toUpperCase() === 'PLAIN' && initial !== undefined) {
      const [, user, pass] = Buffer.from(initial, 'base64').toString('utf8').split('\0');
      this.#authResult(line, user === want.username && pass === want.password, user ?? '');
      return;
    }
    if (mech.toUpperCase() === 'LOGIN' && initial === undefined) {
      const reply = this.#act('AUTH', line, '334 VXNlcm5hbWU6');
      if (reply?.startsWith('334') === true) this.#mode = { kind: 'auth-login', step: 'user', user: '' };
      return;
    }
    this.#act('AUTH', line, '504 5.5.4 mechanism not supported here');
  }

  #authLogin(mode: Extract<Mode, { kind: 'auth-login' }>, line: string): void {
    const text = Buffer.from(line, 'base64').toString('utf8');
    if (mode.step === 'user') {
      this.#mode = { kind: 'auth-login', step: 'password', user: text };
      this.#send('334 UGFzc3dvcmQ6');
      return;
    }
    this.#mode = { kind: 'command' };
    const want = this.#opts.auth;
    this.#authResult(
      '',
      want !== undefined && mode.user === want.username && text === want.password,
      mode.user,
    );
  }

  #authResult(line: string, ok: boolean, user: string): void {
    const reply = this.#act(
      'AUTH-RESULT',
      line,
      ok ? '235 2.7.0 Authentication successful' : '535 5.7.8 Authentication credentials invalid',
    );
    if (ok && reply?.startsWith('235') === true) this.#session.authUser = user;
  }
}
