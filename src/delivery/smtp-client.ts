/**
 * One outbound SMTP session: connect to one address, read the greeting, EHLO (HELO when EHLO is
 * refused with 5xx), STARTTLS by policy, AUTH for a smarthost, then one or more mail
 * transactions. The caller (router and queue manager) chooses the address, keeps recipient
 * state and decides on retries; this module only speaks SMTP and reports outcomes. The wire
 * under it (connect, implicit TLS, the STARTTLS upgrade, writes with backpressure, reply
 * reading with timeouts) is smtp-wire.ts; this file is the session on top.
 *
 * Standards: RFC 5321 (SMTP; 4.5.3.2 timeouts, 4.2 replies), RFC 3207 (STARTTLS), RFC 8314
 * (implicit TLS), RFC 4954 / 4616 (AUTH PLAIN, and LOGIN), RFC 2920 (PIPELINING), RFC 1870
 * (SIZE), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8), RFC 3030 (CHUNKING / BDAT), RFC 3461 (DSN
 * parameters, xtext), RFC 3463 (enhanced status codes).
 *
 * Choices:
 * - PIPELINING: MAIL, every RCPT and (without CHUNKING) DATA go in one write, DATA last as
 *   RFC 2920 3.1 allows; all their replies are read; the body follows only if a recipient was
 *   accepted and DATA got 354, else RSET (a 354 with nothing accepted gets an empty "." first).
 *   The body's last piece and the final "." go in one write. With PIPELINING and CHUNKING, BDAT
 *   follows the replies, and its chunks are sent without waiting for each reply.
 * - Several transactions per session: a transaction left open, or a reused connection (send's
 *   `reset`), gets RSET first; with PIPELINING the RSET leads the MAIL and RCPT batch. A refused
 *   or lost RSET is 'connection-failed', so a stale cached connection costs no deferral.
 * - 8-bit body, no 8BITMIME offered: the message is sent as it is, without BODY=; no 7-bit
 *   conversion is ever attempted (most servers accept 8-bit data anyway). A message Sterna
 *   signed with DKIM is not sent at all: it fails permanently, 554 5.6.3, nothing sent, since a
 *   conversion on the way (by the next hop) would break the signature (docs/mail-auth.md).
 * - SMTPUTF8 needed but not offered: the message fails permanently, 553 5.6.7, nothing sent.
 * - SIZE: a declared size above the server's SIZE limit fails permanently, 552 5.3.4, nothing sent.
 * - DSN parameters (RET, ENVID, NOTIFY, ORCPT) are sent only when the server offers DSN; relaying
 *   a NOTIFY=SUCCESS request to a server without DSN is the caller's business (RFC 3461 4.1).
 * - CHUNKING: the body goes by BDAT, byte for byte (no dot-stuffing, nothing added). With DATA
 *   it is dot-stuffed and a missing final CRLF is added before ".".
 * - Opportunistic TLS: a refused STARTTLS continues in clear; a failed handshake is retried once
 *   on a new connection without TLS (Postfix "may" behaves the same). 'required' and
 *   'required-verify' never send mail in clear: missing STARTTLS or a failed handshake is a
 *   temporary failure (stage 'tls').
 * - AUTH only over TLS (STARTTLS or implicit); an AUTH failure is temporary (like Postfix's
 *   smtp_sasl_auth_soft_bounce), since a bad password must not bounce the queue.
 * - A 421 at any step, a timeout, a broken reply, or a lost connection ends the session: every
 *   recipient without a final answer is deferred. A recipient refused at RCPT keeps that answer.
 * - A connection lost (timeout, reset, close) after the final "." or BDAT LAST was handed over
 *   is marked `maybeDelivered`: the server may hold the message (RFC 5321 6.1), so the caller
 *   must not send it to another host in the same attempt.
 * - Outcomes the client makes itself (connection lost, timeout, TLS policy, SIZE, SMTPUTF8)
 *   carry a reply marked `local` (its outcome, from the reply table); such a reply never came
 *   from the server.
 *
 * Trust: replies come from an untrusted remote server and are parsed strictly (ReplyParser).
 * The message (addresses, parameters, body) comes from our own spool; addresses holding CR, LF
 * or NUL are still refused so they can never inject a command. Credentials are never logged or
 * put in an outcome.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { MailParams, RcptParams } from '../message/envelope.js';
import { localOutcome, type LocalReason, type Outcome, type OutcomeStage } from '../message/outcome.js';
import { DotStuffer } from '../smtp/dot-stuffer.js';
import { encodeXtext } from '../smtp/params.js';
import type { ParsedReply } from '../smtp/reply-parser.js';
import { errorText, isLost, openSocket, Wire, type Lost } from './smtp-wire.js';

export interface ClientTimeouts {
  /** TCP connect (and, for implicit TLS, the handshake). */
  connectMs: number;
  /** RFC 5321 4.5.3.2.1: initial 220 message, 5 minutes. */
  greetingMs: number;
  /** RFC 5321 4.5.3.2.2-3: MAIL, RCPT, and every other command (EHLO, STARTTLS, AUTH, RSET, BDAT chunks), 5 minutes. */
  commandMs: number;
  /** RFC 5321 4.5.3.2.4: the 354 reply to DATA, 2 minutes. */
  dataInitMs: number;
  /** RFC 5321 4.5.3.2.5: each write of the body (waiting for the socket to drain), 3 minutes. */
  dataBlockMs: number;
  /** RFC 5321 4.5.3.2.6: the reply to the final "." (or to BDAT LAST), 10 minutes. */
  dataEndMs: number;
}

export interface ClientOptions {
  /** An IP address (the caller resolved the MX) or a host name, and the port. */
  host: string;
  port: number;
  /** Local address to bind the connection to. */
  localAddress?: string;
  /** Our host name, sent in EHLO / HELO. */
  heloName: string;
  /**
   * 'opportunistic': STARTTLS when offered, clear otherwise. 'required': never send in clear; a
   * peer without STARTTLS is a temporary failure. 'required-verify': as required, and the
   * certificate must verify against `servername` (or `host` when no servername is given).
   * 'none': never STARTTLS.
   */
  tls: 'opportunistic' | 'required' | 'required-verify' | 'none';
  /** MX host name: SNI and certificate verification. */
  servername?: string;
  /** Extra TLS options (e.g. `ca` in tests); rejectUnauthorized is set by the policy above. */
  tlsOptions?: tls.ConnectionOptions;
  /** Smarthost credentials: AUTH PLAIN, or LOGIN when PLAIN is not offered; only over TLS. */
  auth?: { username: string; password: string };
  timeouts: ClientTimeouts;
  /** TLS from the first byte (port 465 smarthosts, RFC 8314). */
  implicitTls?: boolean;
  /**
   * RFC 2033 LMTP: LHLO instead of EHLO (no HELO fallback), the body by DATA, and one reply per
   * accepted recipient after the final ".". Used for the `lmtp:` transport (e.g. Dovecot).
   */
  lmtp?: boolean;
  /** A Unix-domain socket to connect to instead of host and port (an `lmtp:unix:` transport). */
  path?: string;
}

export interface OutboundMessage {
  /** Reverse-path; '' is the null sender. */
  sender: string;
  mailParams: MailParams;
  recipients: { address: string; params: RcptParams }[];
  /** Octets of the message, as SIZE= declares it (RFC 1870). */
  size: number;
  /** A fresh iterator each call; CRLF line endings, NOT dot-stuffed. */
  body: () => AsyncIterable<Buffer>;
  needsSmtputf8: boolean;
  eightBit: boolean;
  /** Sterna signed it with DKIM (envelope.dkimSigned): its octets must not be converted. */
  dkimSigned?: boolean;
}

/** A reply from the server, or one made by this client (`local`: its outcome), e.g. for a lost connection. */
export interface ClientReply extends ParsedReply {
  local?: Outcome;
}

export interface RecipientResult {
  address: string;
  /** 2xx delivered, 4xx deferred, 5xx failed. */
  kind: 'delivered' | 'deferred' | 'failed';
  /** The RCPT reply if the recipient was refused there, else the message reply (or a local one). */
  reply: ClientReply;
  /** Where the reply came: 'rcpt', 'data' (DATA or a body chunk refused), 'end-of-data', or where the session was lost. */
  stage: OutcomeStage;
  /**
   * The whole message went out (the final "." or BDAT LAST) but its reply never came: the server
   * may hold the message. It must not go to another host in the same attempt (a duplicate).
   */
  maybeDelivered?: true;
}

export interface SendOptions {
  /**
   * RSET before MAIL even if the previous transaction ended cleanly: checks that a connection
   * reused after idling is still alive and in step (RFC 5321 4.1.1.5), as Postfix does for a
   * cached session. A refused or lost RSET is a 'connection-failed' (nothing taken for the
   * message), so the caller may try again on a new connection.
   */
  reset?: boolean;
}

export type RejectStage = 'greeting' | 'ehlo' | 'tls' | 'auth' | 'mail';

export type TransactionResult =
  /** Per-recipient outcomes; messageReply is the final reply to the message (DATA / BDAT), if any. */
  | { kind: 'done'; recipients: RecipientResult[]; messageReply: ClientReply | null }
  /** Nothing was attempted for the message: the caller tries the next address or MX. */
  | { kind: 'connection-failed'; reason: string; permanent: false; stage: OutcomeStage }
  /** The whole transaction was refused before any recipient got an answer. */
  | { kind: 'rejected'; reply: ClientReply; permanent: boolean; stage: RejectStage };

export type ConnectFailure = Extract<TransactionResult, { kind: 'connection-failed' } | { kind: 'rejected' }>;

export interface TlsState {
  version: string;
  cipher: string;
  /** The certificate chain and name verified (always true under 'required-verify'). */
  verified: boolean;
}

/**
 * A reply this client makes itself (never sent on the wire): an outcome from the one reply
 * table (smtp/replies.ts via message/outcome.ts), in the shape of a server reply.
 */
function local(reason: LocalReason, stage: OutcomeStage, vars: Record<string, string | number>): ClientReply {
  const o = localOutcome(reason, stage, vars);
  return { code: o.code, enhanced: o.enhanced, lines: [`${o.enhanced} ${o.text}`], local: o };
}

/** Bytes sent per BDAT chunk (the body iterator's pieces are gathered up to this size). */
const BDAT_CHUNK_BYTES = 64 * 1024;
/** DATA: body pieces read from the spool are gathered up to this size before a write. */
const WRITE_BATCH_BYTES = 64 * 1024;
const UNSAFE = /[\r\n\0]/;

function classOf(code: number): 2 | 3 | 4 | 5 {
  const c = Math.floor(code / 100);
  return c === 2 || c === 3 || c === 4 ? c : 5;
}

function outcome(reply: ParsedReply): RecipientResult['kind'] {
  const c = classOf(reply.code);
  return c === 2 ? 'delivered' : c === 5 ? 'failed' : 'deferred';
}

function describe(reply: ParsedReply): string {
  return `${reply.code} ${reply.lines.join(' ')}`;
}

/** The peer as logs and errors name it: "mx.example[192.0.2.1]:25", or "unix:/run/dovecot/lmtp". */
function peerName(opts: ClientOptions): string {
  return opts.path !== undefined
    ? `unix:${opts.path}`
    : `${opts.servername ?? opts.host}[${opts.host}]:${opts.port}`;
}

/** Parses EHLO keyword lines (all lines after the first) into upper-case keyword → parameters. */
function parseExtensions(reply: ParsedReply): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of reply.lines.slice(1)) {
    const trimmed = line.trim();
    if (trimmed === '') continue;
    const sp = trimmed.indexOf(' ');
    const keyword = (sp === -1 ? trimmed : trimmed.slice(0, sp)).toUpperCase();
    const params = sp === -1 ? '' : trimmed.slice(sp + 1).trim();
    if (!map.has(keyword)) map.set(keyword, params);
  }
  return map;
}

export class SmtpClientSession {
  readonly #opts: ClientOptions;
  readonly #wire: Wire;
  readonly #peer: string;
  #extensions: Map<string, string> = new Map();
  #tls: TlsState | null = null;
  /** A transaction was opened (MAIL accepted) and not closed by a final reply or RSET. */
  #dirty = false;
  #busy = false;

  private constructor(opts: ClientOptions, wire: Wire) {
    this.#opts = opts;
    this.#wire = wire;
    this.#peer = peerName(opts);
  }

  /** EHLO keywords (upper case) and their parameters; empty after a HELO fallback. */
  get extensions(): ReadonlyMap<string, string> {
    return this.#extensions;
  }

  get tls(): TlsState | null {
    return this.#tls;
  }

  /** Why the connection is no longer usable, or null while it is. */
  get closedReason(): string | null {
    return this.#wire.failure;
  }

  /**
   * Connects, reads the greeting, EHLO (HELO on a 5xx to EHLO), STARTTLS by policy (then EHLO
   * again), AUTH if configured. A 4xx greeting or any loss before the session is ready is a
   * 'connection-failed'; a 5xx greeting, a refused EHLO and HELO, a TLS policy failure or an
   * AUTH failure is 'rejected' with its stage. Only 5xx greeting and 5xx HELO are permanent.
   */
  static async connect(opts: ClientOptions): Promise<SmtpClientSession | ConnectFailure> {
    const first = await SmtpClientSession.#open(opts);
    if (first instanceof SmtpClientSession) return first;
    if (first.handshakeFailed !== true) return first.result;
    // Opportunistic TLS whose handshake failed: once more, in clear.
    const second = await SmtpClientSession.#open({ ...opts, tls: 'none' });
    return second instanceof SmtpClientSession ? second : second.result;
  }

  static async #open(
    opts: ClientOptions,
  ): Promise<SmtpClientSession | { result: ConnectFailure; handshakeFailed?: true }> {
    const peer = peerName(opts);
    const implicit = opts.implicitTls === true;
    const opened = await openSocket(opts, implicit ? SmtpClientSession.#tlsOptions(opts) : null);
    if ('error' in opened) {
      if (implicit && opened.tlsStage) {
        return {
          result: {
            kind: 'rejected',
            reply: local(opened.certificate === true ? 'tls-certificate-unverified' : 'tls-failed', 'tls', {
              peer,
              reason: opened.error,
            }),
            permanent: false,
            stage: 'tls',
          },
        };
      }
      return { result: failed(`cannot connect to ${peer}: ${opened.error}`) };
    }
    const session = new SmtpClientSession(opts, new Wire(opened.socket));
    if (opened.socket instanceof tls.TLSSocket) session.#tls = tlsState(opened.socket);
    const result = await session.#handshake();
    if (result === null) return session;
    session.close();
    return result;
  }

  static #tlsOptions(opts: ClientOptions): tls.ConnectionOptions {
    const name = opts.servername;
    return {
      ...opts.tlsOptions,
      ...(name !== undefined && net.isIP(name) === 0 ? { servername: name } : {}),
      // Identity checked against servername, else against the address we connected to.
      checkServerIdentity: (_host, cert) =>
        (opts.tlsOptions?.checkServerIdentity ?? tls.checkServerIdentity)(name ?? opts.host, cert),
      rejectUnauthorized: opts.tls === 'required-verify',
    };
  }

  /** Greeting, EHLO, STARTTLS, AUTH. null when ready. */
  async #handshake(): Promise<{ result: ConnectFailure; handshakeFailed?: true } | null> {
    const { timeouts } = this.#opts;
    const w = this.#wire;
    const greeting = await w.reply(timeouts.greetingMs, 'the greeting');
    if (isLost(greeting)) {
      return { result: failed(`no greeting from ${this.#peer}: ${greeting.lost}`, 'greeting') };
    }
    if (greeting.code !== 220) {
      if (classOf(greeting.code) === 5) {
        return { result: { kind: 'rejected', reply: greeting, permanent: true, stage: 'greeting' } };
      }
      return {
        result: failed(`${this.#peer} refused the session at greeting: ${describe(greeting)}`, 'greeting'),
      };
    }

    const ehlo = await this.#ehlo();
    if (ehlo !== null) return { result: ehlo };

    if (this.#tls === null && this.#opts.tls !== 'none') {
      const required = this.#opts.tls !== 'opportunistic';
      if (!this.#extensions.has('STARTTLS')) {
        if (required)
          return { result: this.#rejectTls(local('tls-not-offered', 'tls', { peer: this.#peer })) };
      } else {
        const r = await w.command('STARTTLS', timeouts.commandMs, 'STARTTLS');
        if (isLost(r)) return { result: this.#lostAt('after STARTTLS', r) };
        if (r.code === 220) {
          const secure = await w.startTls(SmtpClientSession.#tlsOptions(this.#opts), timeouts.commandMs);
          if ('lost' in secure) {
            const reply = local(
              secure.certificate === true ? 'tls-certificate-unverified' : 'tls-failed',
              'tls',
              {
                peer: this.#peer,
                reason: secure.lost,
              },
            );
            if (required) return { result: this.#rejectTls(reply) };
            return { result: failed(describe(reply), 'tls'), handshakeFailed: true };
          }
          this.#tls = tlsState(secure);
          this.#extensions = new Map();
          const again = await this.#ehlo();
          if (again !== null) return { result: again };
        } else if (r.code === 421 || required) {
          if (r.code === 421) w.destroy(`${this.#peer} closed the session: ${describe(r)}`);
          return { result: this.#rejectTls(r) };
        }
        // Opportunistic and STARTTLS refused: RFC 3207 4 lets the session continue in clear.
      }
    }

    if (this.#opts.auth !== undefined) {
      const auth = await this.#authenticate(this.#opts.auth);
      if (auth !== null) return { result: auth };
    }
    return null;
  }

  #rejectTls(reply: ClientReply): ConnectFailure {
    return { kind: 'rejected', reply, permanent: false, stage: 'tls' };
  }

  #lostAt(when: string, lost: Lost): ConnectFailure {
    return failed(`connection with ${this.#peer} lost ${when}: ${lost.lost}`);
  }

  /** EHLO, or HELO when EHLO gets a 5xx (RFC 5321 4.1.4, 3.2). null on success. */
  async #ehlo(): Promise<ConnectFailure | null> {
    const { timeouts, heloName } = this.#opts;
    const w = this.#wire;
    // RFC 2033 4.1: LMTP greets with LHLO; a server that refuses it has no HELO to fall back to.
    const verb = this.#opts.lmtp === true ? 'LHLO' : 'EHLO';
    const r = await w.command(`${verb} ${heloName}`, timeouts.commandMs, verb);
    if (isLost(r)) return this.#lostAt(`after ${verb}`, r);
    if (classOf(r.code) === 2) {
      this.#extensions = parseExtensions(r);
      return null;
    }
    if (classOf(r.code) !== 5 || w.failure !== null || this.#opts.lmtp === true) {
      if (r.code === 421) w.destroy(`${this.#peer} closed the session: ${describe(r)}`);
      return { kind: 'rejected', reply: r, permanent: false, stage: 'ehlo' };
    }
    const h = await w.command(`HELO ${heloName}`, timeouts.commandMs, 'HELO');
    if (isLost(h)) return this.#lostAt('after HELO', h);
    if (classOf(h.code) === 2) {
      this.#extensions = new Map();
      return null;
    }
    if (h.code === 421) w.destroy(`${this.#peer} closed the session: ${describe(h)}`);
    return { kind: 'rejected', reply: h, permanent: classOf(h.code) === 5, stage: 'ehlo' };
  }

  /** RFC 4954 AUTH PLAIN (RFC 4616) with an initial response, or AUTH LOGIN. null on success. */
  async #authenticate(auth: { username: string; password: string }): Promise<ConnectFailure | null> {
    const reject = (reply: ClientReply): ConnectFailure => ({
      kind: 'rejected',
      reply,
      permanent: false,
      stage: 'auth',
    });
    if (this.#tls === null) return reject(local('auth-needs-tls', 'auth', { peer: this.#peer }));
    const mechanisms = (this.#extensions.get('AUTH') ?? '').toUpperCase().split(/\s+/);
    const w = this.#wire;
    const ms = this.#opts.timeouts.commandMs;
    const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
    let r: ParsedReply | Lost;
    if (mechanisms.includes('PLAIN')) {
      r = await w.command(`AUTH PLAIN ${b64(`\0${auth.username}\0${auth.password}`)}`, ms, 'AUTH PLAIN');
    } else if (mechanisms.includes('LOGIN')) {
      r = await w.command('AUTH LOGIN', ms, 'AUTH LOGIN');
      if (!isLost(r) && r.code === 334) r = await w.command(b64(auth.username), ms, 'AUTH LOGIN (user name)');
      if (!isLost(r) && r.code === 334) r = await w.command(b64(auth.password), ms, 'AUTH LOGIN (password)');
    } else {
      return reject(local('auth-not-offered', 'auth', { peer: this.#peer }));
    }
    if (isLost(r)) return this.#lostAt('during AUTH', r);
    if (r.code === 235) return null;
    if (r.code === 334) {
      // A challenge we cannot answer: cancel the exchange (RFC 4954 4) and give up on the session.
      w.destroy(`${this.#peer} sent an unexpected AUTH challenge`);
    }
    if (r.code === 421) w.destroy(`${this.#peer} closed the session: ${describe(r)}`);
    return reject(r);
  }

  /**
   * One mail transaction. Call again after it returns for the next message on the same
   * connection; a previous transaction left open is reset first (RSET), and so is any when
   * `options.reset` is set. One call at a time.
   */
  async send(msg: OutboundMessage, options: SendOptions = {}): Promise<TransactionResult> {
    if (this.#busy) throw new Error('SmtpClientSession.send: a transaction is already in progress');
    this.#busy = true;
    try {
      return await this.#send(msg, options.reset === true);
    } finally {
      this.#busy = false;
    }
  }

  async #send(msg: OutboundMessage, forceReset: boolean): Promise<TransactionResult> {
    const w = this.#wire;
    const { timeouts } = this.#opts;
    const peer = this.#peer;
    if (w.failure !== null) return failed(`connection with ${peer} is closed: ${w.failure}`);
    if (w.hasReply) {
      // A reply nobody asked for (often a 421 before an idle timeout): the session is out of step.
      w.destroy(`${peer} sent a reply between transactions`);
      return failed(`${peer} sent a reply between transactions; connection closed`);
    }

    const ext = this.#extensions;
    if (msg.needsSmtputf8 && !ext.has('SMTPUTF8')) {
      return {
        kind: 'rejected',
        reply: local('smtputf8-not-offered', 'mail', { peer }),
        permanent: true,
        stage: 'mail',
      };
    }
    // RFC 6152 3: 8-bit content to a server without 8BITMIME must be converted or returned; a
    // DKIM-signed message cannot be converted without breaking its signature, so it is returned.
    if (msg.eightBit && msg.dkimSigned === true && !ext.has('8BITMIME')) {
      return {
        kind: 'rejected',
        reply: local('8bitmime-not-offered', 'mail', { peer }),
        permanent: true,
        stage: 'mail',
      };
    }
    const sizeLimit = /^[0-9]{1,20}$/.test(ext.get('SIZE') ?? '') ? Number(ext.get('SIZE')) : 0;
    if (sizeLimit > 0 && msg.size > sizeLimit) {
      return {
        kind: 'rejected',
        reply: local('size-exceeded', 'mail', { peer, size: msg.size, limit: sizeLimit }),
        permanent: true,
        stage: 'mail',
      };
    }
    const commands = this.#envelopeCommands(msg);
    if (commands === null) {
      return { kind: 'rejected', reply: local('bad-envelope', 'mail', {}), permanent: true, stage: 'mail' };
    }

    // RSET closes a transaction left open, or checks that a reused connection still works
    // (RFC 5321 4.1.1.5). With PIPELINING it leads the MAIL and RCPT batch (RFC 2920 3.1 lets
    // RSET go anywhere in a group), so it costs no round trip; its reply is read first. A
    // refused or lost RSET is a 'connection-failed': no answer was taken for the message.
    const reset = this.#dirty || forceReset;
    const pipelining = ext.has('PIPELINING');
    if (reset && !pipelining) {
      const refused = this.#resetFailure(await w.command('RSET', timeouts.commandMs, 'RSET'));
      if (refused !== null) return refused;
    }

    // MAIL and RCPT, in one batch when PIPELINING is offered (RFC 2920 3.1), and DATA too when
    // the body goes by DATA: it may end a group, so the whole envelope costs one round trip.
    const n = msg.recipients.length;
    const rcptReplies: (ParsedReply | undefined)[] = new Array<ParsedReply | undefined>(n);
    let mailReply: ParsedReply | Lost;
    let lostAt: Lost | null = null;
    // LMTP sends the body by DATA: RFC 2033 4.2 defines the per-recipient replies after ".".
    const chunking = ext.has('CHUNKING') && this.#opts.lmtp !== true;
    const dataInBatch = pipelining && !chunking;
    /** The reply to a pipelined DATA; undefined when DATA was not sent in the batch (or not read). */
    let dataReply: ParsedReply | Lost | undefined;
    if (pipelining) {
      const lines = [
        ...(reset ? ['RSET'] : []),
        commands.mail,
        ...commands.rcpts,
        ...(dataInBatch ? ['DATA'] : []),
      ];
      const batch = lines.map((c) => `${c}\r\n`).join('');
      const lost = await w.write(batch, timeouts.commandMs, reset ? 'RSET, MAIL and RCPT' : 'MAIL and RCPT');
      if (lost !== null) {
        return failed(`connection with ${peer} lost sending ${reset ? 'RSET' : 'MAIL'}: ${lost.lost}`);
      }
      if (reset) {
        const refused = this.#resetFailure(await w.reply(timeouts.commandMs, 'RSET'));
        if (refused !== null) return refused;
      }
      mailReply = await w.reply(timeouts.commandMs, 'MAIL');
      if (!isLost(mailReply) && mailReply.code !== 421) {
        for (let i = 0; i < n; i++) {
          const r = await w.reply(timeouts.commandMs, 'RCPT');
          if (isLost(r)) {
            lostAt = r;
            break;
          }
          rcptReplies[i] = r;
          if (r.code === 421) break;
        }
        if (dataInBatch && lostAt === null && !rcptReplies.some((r) => r?.code === 421)) {
          dataReply = await w.reply(timeouts.dataInitMs, 'DATA');
          if (isLost(dataReply)) lostAt = dataReply;
        }
      }
    } else {
      mailReply = await w.command(commands.mail, timeouts.commandMs, 'MAIL');
      if (!isLost(mailReply) && classOf(mailReply.code) === 2) {
        for (const [i, rcpt] of commands.rcpts.entries()) {
          const r = await w.command(rcpt, timeouts.commandMs, 'RCPT');
          if (isLost(r)) {
            lostAt = r;
            break;
          }
          rcptReplies[i] = r;
          if (r.code === 421) break;
        }
      }
    }
    if (isLost(mailReply))
      return failed(`connection with ${peer} lost after MAIL: ${mailReply.lost}`, 'mail');
    if (classOf(mailReply.code) !== 2) {
      if (mailReply.code === 421) w.destroy(`${peer} closed the session: ${describe(mailReply)}`);
      else if (lostAt === null) {
        await this.#endEmptyData(dataReply);
        this.#dirty = true; // RSET before the next transaction, to be safe.
      }
      return { kind: 'rejected', reply: mailReply, permanent: classOf(mailReply.code) === 5, stage: 'mail' };
    }
    this.#dirty = true;

    const results: (RecipientResult | undefined)[] = msg.recipients.map((rcpt, i) => {
      const r = rcptReplies[i];
      return r === undefined || classOf(r.code) === 2
        ? undefined
        : { address: rcpt.address, kind: outcome(r), reply: r, stage: 'rcpt' };
    });
    const closing = rcptReplies.find((r) => r?.code === 421);
    if (closing !== undefined || lostAt !== null) {
      // The session ended during RCPT: every recipient without a final answer is deferred.
      let reply: ClientReply;
      if (closing !== undefined) {
        w.destroy(`${peer} closed the session: ${describe(closing)}`);
        reply = closing;
      } else {
        reply = local('connection-lost', 'rcpt', { peer, when: 'after RCPT', reason: lostAt?.lost ?? '' });
      }
      return this.#done(msg, results, { kind: 'deferred', reply, stage: 'rcpt' }, null);
    }
    const accepted = rcptReplies.some((r) => r !== undefined && classOf(r.code) === 2);
    if (!accepted) {
      await this.#endEmptyData(dataReply);
      const r = await w.command('RSET', timeouts.commandMs, 'RSET');
      if (!isLost(r) && classOf(r.code) === 2) this.#dirty = false;
      // No recipient was accepted and none was left unanswered: every one has its RCPT reply.
      const recipients = results.filter((x): x is RecipientResult => x !== undefined);
      return { kind: 'done', recipients, messageReply: null };
    }

    const sent = chunking ? await this.#sendBdat(msg, pipelining) : await this.#sendData(msg, dataReply);
    if ('lost' in sent) {
      if (sent.afterEnd === true) {
        // RFC 5321 6.1: the server may already have taken responsibility for the message.
        const reply = local('lost-after-end-of-data', 'end-of-data', {
          peer,
          when: sent.when,
          reason: sent.lost,
        });
        return this.#done(
          msg,
          results,
          { kind: 'deferred', reply, stage: 'end-of-data', maybeDelivered: true },
          null,
        );
      }
      const reply = local('connection-lost', 'data', { peer, when: sent.when, reason: sent.lost });
      return this.#done(msg, results, { kind: 'deferred', reply, stage: 'data' }, null);
    }
    if ('bodyError' in sent) {
      const reply = local('body-read-error', 'data', { reason: sent.bodyError });
      return this.#done(msg, results, { kind: 'deferred', reply, stage: 'data' }, null);
    }
    if (sent.final && this.#opts.lmtp === true) return this.#lmtpReplies(msg, results, sent.reply);
    if (sent.final) this.#dirty = false;
    if (sent.reply.code === 421) w.destroy(`${peer} closed the session: ${describe(sent.reply)}`);
    return this.#done(
      msg,
      results,
      { kind: outcome(sent.reply), reply: sent.reply, stage: sent.final ? 'end-of-data' : 'data' },
      sent.reply,
    );
  }

  /**
   * RFC 2033 4.2: after the final ".", one reply per recipient accepted at RCPT, in RCPT order;
   * `first` is the first of them. A reply that never comes leaves its recipient (and the rest)
   * deferred as possibly delivered; a 421 answers its recipient and closes the session.
   */
  async #lmtpReplies(
    msg: OutboundMessage,
    results: (RecipientResult | undefined)[],
    first: ParsedReply,
  ): Promise<TransactionResult> {
    const w = this.#wire;
    const peer = this.#peer;
    let next: ParsedReply | Lost = first;
    for (const [i, rcpt] of msg.recipients.entries()) {
      if (results[i] !== undefined) continue;
      if (isLost(next)) break;
      results[i] = { address: rcpt.address, kind: outcome(next), reply: next, stage: 'end-of-data' };
      if (next.code === 421) {
        w.destroy(`${peer} closed the session: ${describe(next)}`);
        break;
      }
      if (results.includes(undefined)) next = await w.reply(this.#opts.timeouts.dataEndMs, 'the end of data');
    }
    if (results.includes(undefined)) {
      const reason = isLost(next) ? next.lost : describe(next);
      const reply = local('lost-after-end-of-data', 'end-of-data', {
        peer,
        when: 'after the end of data',
        reason,
      });
      return this.#done(
        msg,
        results,
        { kind: 'deferred', reply, stage: 'end-of-data', maybeDelivered: true },
        first,
      );
    }
    this.#dirty = false;
    return this.#done(msg, results, { kind: 'deferred', reply: first, stage: 'end-of-data' }, first);
  }

  /**
   * Checks the reply to RSET: null when 2xx (no transaction open any more); else the session is
   * closed (a pipelined MAIL and RCPT may follow the RSET, and must not be taken for accepted)
   * and the result is a 'connection-failed'.
   */
  #resetFailure(r: ParsedReply | Lost): Extract<TransactionResult, { kind: 'connection-failed' }> | null {
    const w = this.#wire;
    const peer = this.#peer;
    if (isLost(r)) return failed(`connection with ${peer} lost after RSET: ${r.lost}`);
    if (classOf(r.code) !== 2) {
      w.destroy(`${peer} refused RSET: ${describe(r)}`);
      return failed(`${peer} refused RSET: ${describe(r)}`);
    }
    this.#dirty = false;
    return null;
  }

  /** Fills every recipient without a result with `rest` (accepted ones too). */
  #done(
    msg: OutboundMessage,
    results: (RecipientResult | undefined)[],
    rest: { kind: RecipientResult['kind']; reply: ClientReply; stage: OutcomeStage; maybeDelivered?: true },
    messageReply: ClientReply | null,
  ): TransactionResult {
    const recipients = msg.recipients.map(
      (rcpt, i): RecipientResult =>
        results[i] ?? {
          address: rcpt.address,
          kind: rest.kind,
          reply: rest.reply,
          stage: rest.stage,
          ...(rest.maybeDelivered === true ? { maybeDelivered: true as const } : {}),
        },
    );
    return { kind: 'done', recipients, messageReply };
  }

  /** MAIL FROM and RCPT TO lines with the parameters the server supports; null if unsafe. */
  #envelopeCommands(msg: OutboundMessage): { mail: string; rcpts: string[] } | null {
    const ext = this.#extensions;
    const mp = msg.mailParams;
    const mail = [`MAIL FROM:<${msg.sender}>`];
    if (ext.has('SIZE')) mail.push(`SIZE=${msg.size}`);
    if (msg.eightBit && ext.has('8BITMIME')) mail.push('BODY=8BITMIME');
    if (msg.needsSmtputf8) mail.push('SMTPUTF8');
    const dsn = ext.has('DSN');
    if (dsn && mp.ret !== undefined) mail.push(`RET=${mp.ret}`);
    if (dsn && mp.envid !== undefined) mail.push(`ENVID=${encodeXtext(mp.envid)}`);
    const rcpts = msg.recipients.map((rcpt) => {
      const line = [`RCPT TO:<${rcpt.address}>`];
      if (dsn && rcpt.params.notify !== undefined && rcpt.params.notify.length > 0) {
        line.push(`NOTIFY=${rcpt.params.notify.join(',')}`);
      }
      if (dsn && rcpt.params.orcpt !== undefined) {
        line.push(`ORCPT=${rcpt.params.orcpt.type};${encodeXtext(rcpt.params.orcpt.address)}`);
      }
      return line.join(' ');
    });
    const all = [mail.join(' '), ...rcpts];
    if (all.some((line) => UNSAFE.test(line))) return null;
    return { mail: mail.join(' '), rcpts };
  }

  /** DATA, the dot-stuffed body with backpressure, ".", and the final reply. */
  /**
   * After a pipelined DATA that a server answered 354 although MAIL or every RCPT was refused
   * (RFC 2920 3.1 says it must not): end that empty message at once, so the session stays in
   * step. Its reply is read and ignored; nothing was accepted for delivery.
   */
  async #endEmptyData(dataReply: ParsedReply | Lost | undefined): Promise<void> {
    if (dataReply === undefined || isLost(dataReply) || dataReply.code !== 354) return;
    const w = this.#wire;
    const lost = await w.write('.\r\n', this.#opts.timeouts.dataBlockMs, 'the end of data');
    if (lost === null) await w.reply(this.#opts.timeouts.dataEndMs, 'the end of data');
  }

  /** The body by DATA; `pipelined` is the reply to a DATA already sent with MAIL and RCPT. */
  async #sendData(msg: OutboundMessage, pipelined?: ParsedReply | Lost): Promise<SendOutcome> {
    const w = this.#wire;
    const { timeouts } = this.#opts;
    const start = pipelined ?? (await w.command('DATA', timeouts.dataInitMs, 'DATA'));
    if (isLost(start)) return { lost: start.lost, when: 'after DATA' };
    if (start.code !== 354) {
      if (classOf(start.code) <= 3) {
        w.destroy(`${this.#peer} answered DATA with ${describe(start)}`);
        return { lost: `unexpected reply to DATA: ${describe(start)}`, when: 'after DATA' };
      }
      return { reply: start, final: false };
    }
    const stuffer = new DotStuffer();
    // Pieces are gathered until WRITE_BATCH_BYTES are held, and written when the next piece has
    // been read, so the last goes out with the end of data: a small message (its stored header
    // prefix, trace fields and body are separate pieces) leaves in one write.
    const held: Buffer[] = [];
    let heldBytes = 0;
    try {
      for await (const chunk of msg.body()) {
        const early = await this.#earlyReply();
        if (early !== null) return early;
        if (heldBytes >= WRITE_BATCH_BYTES) {
          const lost = await w.write(Buffer.concat(held, heldBytes), timeouts.dataBlockMs, 'the message');
          held.length = 0;
          heldBytes = 0;
          // A server that refuses mid-body often replies, then closes: its reply explains the loss.
          if (lost !== null)
            return (await this.#earlyReply()) ?? { lost: lost.lost, when: 'while sending the message' };
        }
        const stuffed = stuffer.push(chunk);
        held.push(stuffed);
        heldBytes += stuffed.length;
      }
    } catch (err) {
      // The server cannot be told to drop a half-sent DATA: only closing the connection is safe.
      w.destroy(`could not read the message: ${errorText(err)}`);
      return { bodyError: errorText(err) };
    }
    const tail = stuffer.end();
    // Handed to the socket, the final "." may reach the server even if the write then fails.
    const handedOver = w.failure === null;
    held.push(tail);
    const lost = await w.write(
      held.length === 1 ? tail : Buffer.concat(held, heldBytes + tail.length),
      timeouts.dataBlockMs,
      'the end of data',
    );
    if (lost !== null) {
      const early = await this.#earlyReply();
      if (early !== null) return early;
      return handedOver
        ? { lost: lost.lost, when: 'while sending the end of data', afterEnd: true }
        : { lost: lost.lost, when: 'while sending the message' };
    }
    const final = await w.reply(timeouts.dataEndMs, 'the end of data');
    if (isLost(final)) return { lost: final.lost, when: 'after the end of data', afterEnd: true };
    return { reply: final, final: true };
  }

  /**
   * A reply that arrived while the body was being sent (before "." or BDAT): the server gave up
   * on the message. The connection's state is unknown, so it is closed.
   */
  async #earlyReply(): Promise<SendOutcome | null> {
    const w = this.#wire;
    if (!w.hasReply) return null;
    const r = await w.reply(0, 'the message');
    w.destroy(`${this.#peer} replied before the end of the message`);
    if (isLost(r)) return { lost: r.lost, when: 'while sending the message' };
    if (classOf(r.code) === 5) return { reply: r, final: false };
    return { lost: `early reply ${describe(r)}`, when: 'while sending the message' };
  }

  /**
   * RFC 3030: the body in BDAT chunks, the last one marked LAST, byte for byte. With PIPELINING
   * the chunks are not held back waiting for replies; the replies are checked as they come and
   * all are read before returning. The first non-2xx reply is the message's answer.
   */
  async #sendBdat(msg: OutboundMessage, pipelining: boolean): Promise<SendOutcome> {
    const w = this.#wire;
    const { timeouts } = this.#opts;
    const state: { outstanding: number; refused: ParsedReply | null; last: ParsedReply | null } = {
      outstanding: 0,
      refused: null,
      last: null,
    };
    /** Reads owed replies: all of them if `wait`, else those already here. */
    const collect = async (wait: boolean, lastTimeoutMs: number): Promise<Lost | null> => {
      while (state.outstanding > 0 && (wait || w.hasReply)) {
        const r = await w.reply(state.outstanding === 1 ? lastTimeoutMs : timeouts.commandMs, 'BDAT');
        if (isLost(r)) return r;
        state.outstanding--;
        state.last = r;
        if (classOf(r.code) !== 2 && state.refused === null) state.refused = r;
      }
      return null;
    };
    const chunk = async (data: Buffer, last: boolean): Promise<Lost | null> => {
      // The command and its chunk (at most about BDAT_CHUNK_BYTES) leave in one write.
      const header = Buffer.from(`BDAT ${data.length}${last ? ' LAST' : ''}\r\n`, 'latin1');
      const lost = await w.write(Buffer.concat([header, data]), timeouts.dataBlockMs, 'the message');
      if (lost !== null) return lost;
      state.outstanding++;
      return collect(!pipelining || last, last ? timeouts.dataEndMs : timeouts.commandMs);
    };

    let held: Buffer[] = [];
    let heldBytes = 0;
    try {
      for await (const piece of msg.body()) {
        held.push(piece);
        heldBytes += piece.length;
        if (heldBytes < BDAT_CHUNK_BYTES) continue;
        const lost = await chunk(Buffer.concat(held, heldBytes), false);
        held = [];
        heldBytes = 0;
        if (lost !== null) return { lost: lost.lost, when: 'while sending the message' };
        if (state.refused !== null) break;
      }
    } catch (err) {
      // A half-sent chunk cannot be taken back: only closing the connection is safe.
      w.destroy(`could not read the message: ${errorText(err)}`);
      return { bodyError: errorText(err) };
    }
    if (state.refused === null) {
      // Once BDAT LAST is handed to the socket, the server may take the message even if its
      // reply (or an earlier chunk's) never comes.
      const handedOver = w.failure === null;
      const lost = await chunk(Buffer.concat(held, heldBytes), true);
      if (lost !== null) {
        return handedOver
          ? { lost: lost.lost, when: 'after BDAT LAST', afterEnd: true }
          : { lost: lost.lost, when: 'while sending the message' };
      }
    } else {
      // RFC 3030 2: no further chunk after a refused one; read the replies still owed.
      const lost = await collect(true, timeouts.commandMs);
      if (lost !== null) return { lost: lost.lost, when: 'while sending the message' };
    }
    if (state.refused !== null) return { reply: state.refused, final: false };
    if (state.last === null) return { lost: 'no reply to BDAT LAST', when: 'after BDAT LAST' };
    return { reply: state.last, final: true };
  }

  /**
   * Asks whether the server would take mail for `address`, without sending any: MAIL FROM:<>,
   * RCPT TO, then RSET (address verification, as Postfix's verify(8) does). The reply to RCPT,
   * the reply to MAIL when that was refused, or the loss of the connection.
   */
  async probe(address: string): Promise<ParsedReply | Lost> {
    if (this.#busy) throw new Error('SmtpClientSession.probe: a transaction is already in progress');
    if (UNSAFE.test(address)) return { lost: 'the address cannot be sent' };
    this.#busy = true;
    try {
      const w = this.#wire;
      const { commandMs } = this.#opts.timeouts;
      const mail = await w.command('MAIL FROM:<>', commandMs, 'MAIL');
      if (isLost(mail) || classOf(mail.code) !== 2) return mail;
      this.#dirty = true;
      const rcpt = await w.command(`RCPT TO:<${address}>`, commandMs, 'RCPT');
      if (isLost(rcpt)) return rcpt;
      const reset = await w.command('RSET', commandMs, 'RSET');
      if (!isLost(reset) && classOf(reset.code) === 2) this.#dirty = false;
      return rcpt;
    } finally {
      this.#busy = false;
    }
  }

  /** Sends QUIT and waits (commandMs at most) for the reply, then closes. Never throws. */
  async quit(): Promise<void> {
    const w = this.#wire;
    if (w.failure === null) {
      await w.command('QUIT', this.#opts.timeouts.commandMs, 'QUIT');
    }
    w.destroy('the session was closed by QUIT');
  }

  /** Closes the connection at once. */
  close(): void {
    this.#wire.destroy('the session was closed');
  }
}

/** afterEnd: the loss came after the whole message (final "." or BDAT LAST) was handed over. */
type SendOutcome =
  | { reply: ParsedReply; final: boolean }
  | { lost: string; when: string; afterEnd?: true }
  | { bodyError: string };

function failed(
  reason: string,
  stage: OutcomeStage = 'connect',
): { kind: 'connection-failed'; reason: string; permanent: false; stage: OutcomeStage } {
  return { kind: 'connection-failed', reason, permanent: false, stage };
}

function tlsState(socket: tls.TLSSocket): TlsState {
  return {
    version: socket.getProtocol() ?? 'unknown',
    cipher: socket.getCipher().name,
    verified: socket.authorized,
  };
}
