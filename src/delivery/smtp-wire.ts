/**
 * The wire under one outbound SMTP session: opening the connection (TCP, or TLS from the first
 * byte, RFC 8314), the STARTTLS upgrade on it (RFC 3207 5: nothing read in clear after the 220
 * counts as encrypted), writing commands and data with backpressure, and reading replies
 * through the strict reply parser (smtp/reply-parser.ts, RFC 5321 4.2). Every wait has a
 * timeout; a timeout, a socket error, a close or a parse error marks the connection lost and
 * destroys it. A TLS handshake that fails because the peer's certificate does not verify says
 * so (`certificate`), so the session can report it as such. The session (smtp-client.ts) runs
 * EHLO, AUTH and the mail transactions on top of this.
 *
 * Trust: everything read comes from an untrusted remote server and is only parsed, never
 * interpreted here.
 */
import net from 'node:net';
import tls from 'node:tls';
import { ReplyParseError, ReplyParser, type ParsedReply } from '../smtp/reply-parser.js';

/** certificate: a TLS handshake that failed because the peer's certificate did not verify. */
export type Lost = { lost: string; certificate?: true };

/**
 * Error codes of a certificate that did not verify: OpenSSL's X509_V_ERR_* names as Node gives
 * them, and Node's own host name check (tls.checkServerIdentity).
 */
const CERTIFICATE_ERRORS: ReadonlySet<string> = new Set([
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
]);

/** True for an error raised because the peer's certificate did not verify. */
function isCertificateError(err: Error): boolean {
  return 'code' in err && typeof err.code === 'string' && CERTIFICATE_ERRORS.has(err.code);
}

export function isLost(x: ParsedReply | Lost): x is Lost {
  return 'lost' in x;
}

/** An error's message on one line (OpenSSL messages end with a newline). */
export function errorText(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s+/g, ' ').trim();
}

/**
 * The connection: socket, reply parser, queued replies and the one pending wait. Every wait has
 * a timeout; a timeout, a socket error, a close or a parse error marks the connection failed
 * (`failure` says why) and destroys it. Replies received before the failure can still be read.
 */
export class Wire {
  #socket: net.Socket;
  readonly #parser = new ReplyParser();
  readonly #queue: ParsedReply[] = [];
  #failure: string | null = null;
  #wake: (() => void) | null = null;

  readonly #onData = (chunk: Buffer): void => {
    try {
      this.#queue.push(...this.#parser.push(chunk));
    } catch (err) {
      if (!(err instanceof ReplyParseError)) throw err;
      this.#queue.push(...err.parsed);
      this.destroy(`protocol error in the server's reply: ${err.message}`);
    }
    this.#notify();
  };
  readonly #onError = (err: Error): void => this.#fail(`connection error: ${errorText(err)}`);
  readonly #onClose = (): void => this.#fail('the server closed the connection');
  readonly #onDrain = (): void => this.#notify();

  constructor(socket: net.Socket) {
    this.#socket = socket;
    this.#attach(socket);
  }

  get failure(): string | null {
    return this.#failure;
  }

  /** A reply has arrived and not been read. */
  get hasReply(): boolean {
    return this.#queue.length > 0;
  }

  #attach(s: net.Socket): void {
    s.on('data', this.#onData);
    s.on('error', this.#onError);
    s.on('close', this.#onClose);
    s.on('drain', this.#onDrain);
  }

  #detach(s: net.Socket): void {
    s.off('data', this.#onData);
    s.off('error', this.#onError);
    s.off('close', this.#onClose);
    s.off('drain', this.#onDrain);
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  #fail(reason: string): void {
    if (this.#failure === null) this.#failure = reason;
    this.#notify();
  }

  /** Marks the connection failed with `reason` (unless it already failed) and destroys it. */
  destroy(reason: string): void {
    this.#fail(reason);
    this.#socket.destroy();
  }

  /** Waits until `ready` returns a value, a failure, or the timeout (which destroys the connection). */
  #wait<T>(ready: () => T | undefined, timeoutMs: number, what: string): Promise<T | Lost> {
    return new Promise((resolve) => {
      const check = (): boolean => {
        const value = ready();
        if (value !== undefined) {
          resolve(value);
          return true;
        }
        if (this.#failure !== null) {
          resolve({ lost: this.#failure });
          return true;
        }
        return false;
      };
      if (check()) return;
      const timer = setTimeout(() => {
        this.#wake = null;
        this.destroy(`timeout after ${timeoutMs} ms ${what}`);
        resolve({ lost: this.#failure ?? 'timeout' });
      }, timeoutMs);
      const wake = (): void => {
        if (check()) clearTimeout(timer);
        else this.#wake = wake;
      };
      this.#wake = wake;
    });
  }

  /** The next reply (replies queued before a failure come first). */
  reply(timeoutMs: number, what: string): Promise<ParsedReply | Lost> {
    return this.#wait(() => this.#queue.shift(), timeoutMs, `waiting for the reply to ${what}`);
  }

  /** Writes, then waits for the socket to drain if its buffer is full. null when written. */
  async write(data: Buffer | string, timeoutMs: number, what: string): Promise<Lost | null> {
    if (this.#failure !== null) return { lost: this.#failure };
    if (this.#socket.write(data)) return null;
    const done = await this.#wait(
      () => (this.#socket.writableNeedDrain ? undefined : true),
      timeoutMs,
      `sending ${what}`,
    );
    return done === true ? null : done;
  }

  /** Writes a command line and reads its reply. */
  async command(line: string, timeoutMs: number, what: string): Promise<ParsedReply | Lost> {
    const lost = await this.write(`${line}\r\n`, timeoutMs, what);
    return lost ?? this.reply(timeoutMs, what);
  }

  /**
   * RFC 3207: after "220" to STARTTLS, runs the handshake on this connection. Refuses if the
   * server sent anything after the 220 (bytes sent in clear must not be read as if encrypted).
   */
  async startTls(options: tls.ConnectionOptions, timeoutMs: number): Promise<tls.TLSSocket | Lost> {
    if (this.#failure !== null) return { lost: this.#failure };
    if (!this.#parser.idle || this.#queue.length > 0) {
      this.destroy('the server sent data after its 220 reply to STARTTLS (RFC 3207 5)');
      return { lost: this.#failure ?? '' };
    }
    const plain = this.#socket;
    this.#detach(plain);
    plain.on('error', () => undefined);
    const secure = tls.connect({ ...options, socket: plain });
    this.#socket = secure;
    const result = await handshake(secure, timeoutMs);
    if (result !== null) {
      this.#failure = result.reason;
      secure.destroy();
      plain.destroy();
      return { lost: result.reason, ...(result.certificate ? { certificate: true as const } : {}) };
    }
    this.#attach(secure);
    return secure;
  }
}

/** Waits for 'secureConnect'; null on success, else why it failed (certificate: it did not verify). */
function handshake(
  socket: tls.TLSSocket,
  timeoutMs: number,
): Promise<{ reason: string; certificate: boolean } | null> {
  return new Promise((resolve) => {
    const finish = (why: { reason: string; certificate: boolean } | null): void => {
      clearTimeout(timer);
      socket.off('secureConnect', onSecure);
      socket.off('error', onError);
      socket.off('close', onClose);
      if (why !== null) socket.on('error', () => undefined);
      resolve(why);
    };
    const onSecure = (): void => finish(null);
    const onError = (err: Error): void =>
      finish({ reason: errorText(err), certificate: isCertificateError(err) });
    const onClose = (): void =>
      finish({ reason: 'the connection closed during the TLS handshake', certificate: false });
    const timer = setTimeout(
      () => finish({ reason: `TLS handshake timed out after ${timeoutMs} ms`, certificate: false }),
      timeoutMs,
    );
    socket.once('secureConnect', onSecure);
    socket.once('error', onError);
    socket.once('close', onClose);
  });
}

/** Where to connect, and how long the connection (and an implicit TLS handshake) may take. */
export interface SocketTarget {
  host: string;
  port: number;
  localAddress?: string;
  /** A Unix-domain socket instead of host and port (LMTP to a local Dovecot). */
  path?: string;
  timeouts: { connectMs: number };
}

/** Opens TCP (or TLS for implicit TLS); resolves with the socket or why it failed. */
export function openSocket(
  opts: SocketTarget,
  tlsConnect: tls.ConnectionOptions | null,
): Promise<{ socket: net.Socket } | { error: string; tlsStage: boolean; certificate?: true }> {
  return new Promise((resolve) => {
    const base =
      opts.path !== undefined
        ? { path: opts.path }
        : {
            host: opts.host,
            port: opts.port,
            ...(opts.localAddress === undefined ? {} : { localAddress: opts.localAddress }),
          };
    const socket = tlsConnect === null ? net.connect(base) : tls.connect({ ...tlsConnect, ...base });
    let tcpUp = false;
    const ready = tlsConnect === null ? 'connect' : 'secureConnect';
    const finish = (
      result: { socket: net.Socket } | { error: string; tlsStage: boolean; certificate?: true },
    ): void => {
      clearTimeout(timer);
      socket.off(ready, onReady);
      socket.off('error', onError);
      socket.off('close', onClose);
      if ('error' in result) {
        socket.on('error', () => undefined);
        socket.destroy();
      }
      resolve(result);
    };
    const onReady = (): void => {
      // Commands and pipelined batches are written whole, so Nagle only adds delay.
      if (opts.path === undefined) socket.setNoDelay(true);
      finish({ socket });
    };
    const onError = (err: Error): void =>
      finish({
        error: errorText(err),
        tlsStage: tcpUp,
        ...(tcpUp && isCertificateError(err) ? { certificate: true as const } : {}),
      });
    const onClose = (): void => finish({ error: 'connection closed', tlsStage: tcpUp });
    const timer = setTimeout(
      () =>
        finish({
          error: `${tcpUp ? 'TLS handshake' : 'connection'} timed out after ${opts.timeouts.connectMs} ms`,
          tlsStage: tcpUp,
        }),
      opts.timeouts.connectMs,
    );
    socket.once('connect', () => {
      tcpUp = true;
    });
    socket.once(ready, onReady);
    socket.once('error', onError);
    socket.once('close', onClose);
  });
}
