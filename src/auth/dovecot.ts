/**
 * Checks passwords against Dovecot's authentication service, the way Postfix does with
 * `smtpd_sasl_type = dovecot`: one Unix-socket connection to a Dovecot auth client listener,
 * shared by every session and opened again when it breaks. The Dovecot authentication protocol
 * (doc.dovecot.org, "Authentication Protocol"), version 1.2, lines of tab-separated fields:
 *
 *   us:      VERSION 1 2 / CPID <our pid>
 *   Dovecot: VERSION 1 2 / MECH <name> [flags] ... / SPID / CUID / COOKIE / DONE
 *   us:      AUTH <id> PLAIN service=smtp nologin rip=<client ip> [secured] resp=<base64>
 *   Dovecot: OK <id> user=<name> ...   |   FAIL <id> [temp] [reason=...] ...   |   CONT <id> <base64>
 *
 * Sterna decodes PLAIN and LOGIN itself (sasl.ts) and always asks Dovecot with PLAIN and the
 * whole response at once, so the SASL exchange with the client stays in the session and the
 * lock-out sees every attempt. The identity of the session is the user name Dovecot returns.
 * No answer within timeout_ms, a refused or broken connection, a handshake Dovecot does not
 * finish, or a FAIL marked "temp" throw TemporaryAuthError (454 4.7.0), never crash.
 *
 * Trust: Dovecot is trusted; the client's credentials are untrusted, base64-encoded before they
 * go on a line, and never logged.
 */
import net from 'node:net';
import type { Credentials } from './sasl.js';
import { TemporaryAuthError, type AuthContext, type PasswordBackend } from './store.js';
import type { VerifyResult } from './users.js';

export interface DovecotLogger {
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
}

export interface DovecotAuthOptions {
  /** Path of the auth client socket. */
  socket: string;
  /** The service name Dovecot sees (its %s). */
  service: string;
  /** Connect + handshake, and each request. */
  timeoutMs: number;
  log?: DovecotLogger;
}

/** A line longer than this from Dovecot is a protocol error (its lines are short). */
const MAX_LINE = 65_536;

interface Pending {
  resolve(r: VerifyResult): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
  authzid: string;
}

/** One handshaken connection. */
interface Conn {
  socket: net.Socket;
  mechanisms: ReadonlySet<string>;
}

export class DovecotAuthClient implements PasswordBackend {
  readonly #o: DovecotAuthOptions;
  #conn: Conn | null = null;
  #connecting: Promise<Conn> | null = null;
  readonly #pending = new Map<number, Pending>();
  #nextId = 0;
  #closed = false;

  constructor(opts: DovecotAuthOptions) {
    this.#o = opts;
  }

  async verify(creds: Credentials, ctx: AuthContext): Promise<VerifyResult> {
    // PLAIN and LOGIN only: the configuration refuses CRAM-MD5 with this backend, and tokens
    // are oauth.ts's.
    if (creds.kind !== 'password') return { ok: false };
    const conn = await this.#connection();
    if (!conn.mechanisms.has('PLAIN')) {
      throw new TemporaryAuthError(`Dovecot at ${this.#o.socket} does not offer PLAIN (auth_mechanisms)`);
    }
    this.#nextId = (this.#nextId % 0xffff_fffe) + 1;
    const id = this.#nextId;
    // RFC 4616: authzid NUL authcid NUL password. Our authzid rule (empty or the user itself)
    // is checked on the answer, so Dovecot is never asked for a master-user login.
    const resp = Buffer.from(`\0${creds.authcid}\0${creds.password}`, 'utf8').toString('base64');
    const fields = [
      'AUTH',
      String(id),
      'PLAIN',
      `service=${this.#o.service}`,
      'nologin',
      ...(net.isIP(ctx.ip) !== 0 ? [`rip=${ctx.ip}`] : []),
      ...(ctx.secured ? ['secured'] : []),
      `resp=${resp}`,
    ];
    return new Promise<VerifyResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new TemporaryAuthError(`Dovecot at ${this.#o.socket} did not answer in ${this.#o.timeoutMs} ms`),
        );
        // A connection that stopped answering (a hung auth process, or one a stopped Dovecot
        // left behind) is dropped, so the next attempt connects afresh.
        conn.socket.destroy();
      }, this.#o.timeoutMs);
      this.#pending.set(id, { resolve, reject, timer, authzid: creds.authzid });
      conn.socket.write(`${fields.join('\t')}\n`);
    });
  }

  close(): void {
    this.#closed = true;
    this.#conn?.socket.destroy();
    this.#conn = null;
  }

  #connection(): Promise<Conn> {
    if (this.#closed) return Promise.reject(new TemporaryAuthError('shutting down'));
    if (this.#conn !== null) return Promise.resolve(this.#conn);
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = null;
    });
    return this.#connecting;
  }

  #connect(): Promise<Conn> {
    const { socket: path, timeoutMs, log } = this.#o;
    return new Promise<Conn>((resolve, reject) => {
      const socket = net.connect(path);
      const mechanisms = new Set<string>();
      let handshaken = false;
      let buffer = '';
      const fail = (why: string): void => {
        socket.destroy();
        if (!handshaken) reject(new TemporaryAuthError(`Dovecot auth at ${path}: ${why}`));
      };
      const timer = setTimeout(() => fail(`no handshake within ${timeoutMs} ms`), timeoutMs);
      socket.setEncoding('utf8');
      socket.on('connect', () => socket.write(`VERSION\t1\t2\nCPID\t${process.pid}\n`));
      socket.on('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
      socket.on('close', () => {
        clearTimeout(timer);
        if (!handshaken) {
          reject(new TemporaryAuthError(`Dovecot auth at ${path}: connection closed during the handshake`));
          return;
        }
        if (this.#conn?.socket === socket) this.#conn = null;
        log?.warn({ socket: path, pending: this.#pending.size }, 'Dovecot auth connection closed');
        for (const [id, p] of this.#pending) {
          clearTimeout(p.timer);
          this.#pending.delete(id);
          p.reject(new TemporaryAuthError(`Dovecot auth at ${path}: connection closed`));
        }
      });
      socket.on('data', (chunk: string) => {
        buffer += chunk;
        let nl: number;
        while ((nl = buffer.indexOf('\n')) !== -1) {
          const fields = buffer.slice(0, nl).split('\t');
          buffer = buffer.slice(nl + 1);
          if (!handshaken) {
            const [verb, a, b] = fields;
            if (verb === 'VERSION' && a !== '1')
              return fail(`protocol version ${a ?? ''}.${b ?? ''}, need 1.x`);
            if (verb === 'MECH' && a !== undefined) mechanisms.add(a.toUpperCase());
            if (verb === 'DONE') {
              handshaken = true;
              clearTimeout(timer);
              const conn = { socket, mechanisms };
              this.#conn = conn;
              log?.info({ socket: path, mechanisms: [...mechanisms] }, 'Dovecot auth connected');
              resolve(conn);
            }
          } else {
            this.#answer(fields);
          }
        }
        if (buffer.length > MAX_LINE) fail('line too long');
      });
    });
  }

  /** OK / FAIL / CONT for one of our requests. */
  #answer(fields: string[]): void {
    const [verb, idText, ...rest] = fields;
    const id = Number(idText);
    const p = this.#pending.get(id);
    if (p === undefined) return; // timed out already, or not ours
    this.#pending.delete(id);
    clearTimeout(p.timer);
    const params = new Map<string, string>();
    for (const f of rest) {
      const eq = f.indexOf('=');
      params.set(eq === -1 ? f : f.slice(0, eq), eq === -1 ? '' : unescape(f.slice(eq + 1)));
    }
    switch (verb) {
      case 'OK': {
        const user = params.get('user');
        if (user === undefined || user === '') {
          p.reject(new TemporaryAuthError('Dovecot answered OK without user='));
          return;
        }
        // RFC 4954 5: no proxy authorisation; an authzid must name the user Dovecot returned.
        const authzOk = p.authzid === '' || p.authzid.toLowerCase() === user.toLowerCase();
        p.resolve(authzOk ? { ok: true, user } : { ok: false });
        return;
      }
      case 'FAIL':
        if (params.has('temp')) {
          p.reject(
            new TemporaryAuthError(`Dovecot: temporary failure (${params.get('reason') ?? 'no reason'})`),
          );
        } else {
          p.resolve({ ok: false });
        }
        return;
      case 'CONT':
        // PLAIN takes one response and we sent it whole: Dovecot asking for more is a failure.
        p.resolve({ ok: false });
        return;
      default:
        p.reject(new TemporaryAuthError(`Dovecot: unexpected answer ${JSON.stringify(verb)}`));
    }
  }
}

/** Dovecot's tab-escaping (str_tabescape): \x01 then 1, t, r, n for \x01, TAB, CR, LF. */
function unescape(s: string): string {
  return s.replace(/\x01([1trn])/g, (_m, c: string) =>
    c === '1' ? '\x01' : c === 't' ? '\t' : c === 'r' ? '\r' : '\n',
  );
}
