/**
 * A deliberately small SMTP client for tests: sends raw bytes (so tests can send anything,
 * including malformed input) and parses replies strictly (RFC 5321 4.2). Never used by Sterna.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';

export interface TestReply {
  code: number;
  /** Text of each line after "NNN-" / "NNN ". */
  lines: string[];
  /** The enhanced status code of the last line, if any. */
  enhanced: string | undefined;
  /** All lines joined with newlines, without codes. */
  text: string;
}

export class TestClient {
  #socket: net.Socket;
  #buffer = '';
  #replies: TestReply[] = [];
  #waiters: ((r: TestReply | null) => void)[] = [];
  #closed = false;
  #closeWaiters: (() => void)[] = [];
  /** The TLS sessions (tickets) the server handed out on this connection, latest last. */
  sessions: Buffer[] = [];

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    this.#listen(socket);
  }

  static async connect(
    port: number,
    opts: {
      host?: string;
      tls?: boolean;
      timeoutMs?: number;
      localAddress?: string;
      /** More options for the implicit TLS handshake (a session to resume, sigalgs, ...). */
      tlsOptions?: tls.ConnectionOptions;
    } = {},
  ): Promise<TestClient> {
    const host = opts.host ?? '127.0.0.1';
    // localAddress: the client's own address (127.0.0.5, ...), to act as another host.
    const local = opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {};
    const sessions: Buffer[] = [];
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s =
        opts.tls === true
          ? tls
              .connect(
                {
                  host,
                  port,
                  rejectUnauthorized: false,
                  servername: 'localhost',
                  ...local,
                  ...opts.tlsOptions,
                },
                () => resolve(s),
              )
              .on('session', (session: Buffer) => sessions.push(session))
          : net.connect({ host, port, ...local }, () => resolve(s));
      s.once('error', reject);
    });
    socket.setTimeout(opts.timeoutMs ?? 10_000, () => socket.destroy(new Error('test client timeout')));
    const client = new TestClient(socket);
    client.sessions = sessions; // the array the 'session' listener above fills
    return client;
  }

  get socket(): net.Socket {
    return this.#socket;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #listen(socket: net.Socket): void {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.#buffer += chunk;
      this.#parse();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.#closed = true;
      for (const w of this.#waiters) w(null);
      this.#waiters = [];
      for (const w of this.#closeWaiters) w();
    });
  }

  #parse(): void {
    let lines: string[] = [];
    let consumed = 0;
    for (;;) {
      const nl = this.#buffer.indexOf('\r\n', consumed);
      if (nl === -1) break;
      const line = this.#buffer.slice(consumed, nl);
      consumed = nl + 2;
      const m = /^(\d{3})([ -])(.*)$/.exec(line);
      if (m === null) throw new Error(`malformed reply line: ${JSON.stringify(line)}`);
      lines.push(m[3] ?? '');
      if (m[2] === ' ') {
        const code = Number(m[1]);
        const last = lines[lines.length - 1] ?? '';
        const enh = /^([245]\.\d{1,3}\.\d{1,3}) /.exec(last)?.[1];
        const reply: TestReply = { code, lines, enhanced: enh, text: lines.join('\n') };
        lines = [];
        this.#buffer = this.#buffer.slice(consumed);
        consumed = 0;
        const w = this.#waiters.shift();
        if (w !== undefined) w(reply);
        else this.#replies.push(reply);
      }
    }
  }

  /** The next reply, or null if the connection closed first. */
  read(): Promise<TestReply | null> {
    const r = this.#replies.shift();
    if (r !== undefined) return Promise.resolve(r);
    if (this.#closed) return Promise.resolve(null);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** The next reply; fails the test if the connection closed. */
  async expect(code: number, enhanced?: string): Promise<TestReply> {
    const r = await this.read();
    if (r === null) throw new Error(`expected ${code}, connection closed`);
    if (r.code !== code || (enhanced !== undefined && r.enhanced !== enhanced)) {
      throw new Error(
        `expected ${code}${enhanced === undefined ? '' : ` ${enhanced}`}, got ${r.code} ${r.text}`,
      );
    }
    return r;
  }

  send(data: string | Buffer): void {
    this.#socket.write(data);
  }

  /** Sends one command line and returns its reply. */
  async cmd(line: string): Promise<TestReply> {
    this.send(`${line}\r\n`);
    const r = await this.read();
    if (r === null) throw new Error(`connection closed after ${line}`);
    return r;
  }

  /**
   * STARTTLS already accepted (220 read): run the handshake on this connection, with `options`
   * (a session to resume, sigalgs, ...). Returns the TLS socket (isSessionReused() and so on).
   */
  async upgrade(options: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
    const raw = this.#socket;
    raw.removeAllListeners('data');
    raw.removeAllListeners('close');
    const secure = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect(
        {
          socket: raw,
          rejectUnauthorized: false,
          servername: 'localhost',
          ...options,
        },
        () => resolve(s),
      );
      s.on('session', (ticket: Buffer) => this.sessions.push(ticket));
      s.once('error', reject);
    });
    this.#socket = secure;
    this.#buffer = '';
    this.#listen(secure);
    return secure;
  }

  waitClosed(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#closeWaiters.push(resolve));
  }

  close(): void {
    this.#socket.destroy();
  }
}

/** Asserts a reply's code and, when given, its enhanced status code (RFC 3463); the text is in the message. */
export function assertReply(r: TestReply, code: number, enhanced?: string): void {
  assert.equal(
    `${r.code} ${r.enhanced ?? ''}`,
    `${code} ${enhanced ?? r.enhanced ?? ''}`,
    `expected ${code}${enhanced === undefined ? '' : ` ${enhanced}`}, got ${r.code} ${r.text}`,
  );
}

/**
 * A session on `port` after EHLO, STARTTLS (RFC 3207), the handshake and a second EHLO: where a
 * submission client authenticates. The second EHLO's reply is returned beside the client.
 */
export async function startTlsSession(
  port: number,
  helo = 'client.example',
): Promise<{ client: TestClient; ehlo: TestReply }> {
  const c = await TestClient.connect(port);
  await c.expect(220);
  await c.cmd(`EHLO ${helo}`);
  const r = await c.cmd('STARTTLS');
  assert.equal(r.code, 220, r.text);
  await c.upgrade();
  const ehlo = await c.cmd(`EHLO ${helo}`);
  assert.equal(ehlo.code, 250, ehlo.text);
  return { client: c, ehlo };
}
