/**
 * The SMTP session state machine (RFC 5321 with 1870, 2920, 3030, 3207, 3461, 4954, 6152, 6409,
 * 6531). It is fed events (a command line, the end of a body, the TLS handshake) and returns
 * actions (replies, "start TLS", "receive a body"). It does no I/O: every decision that needs
 * the outside world (recipient lookup, password check, the spool) goes through the injected
 * SessionHooks, so tests drive it without sockets. Faces untrusted clients.
 */
import type { Envelope, ListenerKind, MailParams, Recipient, TlsInfo } from '../message/envelope.js';
import { formatRfc5322Date, messageIdFor, receivedHeader, withProtocol } from '../message/headers.js';
import type { Credentials, Mechanism } from '../auth/sasl.js';
import {
  claimedUser,
  createExchange,
  failedTokenFollowUp,
  parseMechanism,
  type SaslExchange,
} from '../auth/sasl.js';
import {
  formatMailbox,
  parseForwardPath,
  parseReversePath,
  splitPathAndParams,
  type Mailbox,
} from './address.js';
import { parseCommand, type Verb } from './command.js';
import { ehloKeywords } from './extensions.js';
import type { DataError } from './data-decoder.js';
import { MessageBody, type HeaderFacts } from './message-body.js';
import { forgedResultsFilter } from '../mailauth/forged-results.js';
import { applyFilterEnvelope } from '../filters/pipeline.js';
import { parseMailParams, parseRcptParams } from './params.js';
import { ehloReply, reply, type Reply, type ReplyId } from './replies.js';

export interface SessionLimits {
  commandLineBytes: number;
  textLineBytes: number;
  messageBytes: number;
  recipients: number;
  errors: number;
  receivedHeaders: number;
}

export interface SessionConfig {
  hostname: string;
  banner: string;
  listener: ListenerKind;
  limits: SessionLimits;
  vrfy: 'ambiguous' | 'verify';
  /** Mechanisms enabled in the configuration. */
  authMechanisms: readonly Mechanism[];
  /** Offer AUTH without TLS. */
  authAllowPlaintext: boolean;
  /** Offer AUTH on the smtp listener. */
  authOnSmtp: boolean;
  /** A certificate is configured, so STARTTLS can be offered. */
  tlsAvailable: boolean;
  /** On authenticated sessions, MAIL FROM must be an address the user owns. */
  enforceSender: boolean;
  /**
   * Our authserv-id (RFC 8601 2.2): incoming Authentication-Results fields that claim it are
   * removed from every message, on every listener (RFC 8601 5). Unset: nothing is removed.
   */
  authservId?: string;
  /**
   * Early-talker checks on this listener ([early_talkers], docs/abuse.md); the connection
   * applies them (it sees the bytes). Absent: none.
   */
  earlyTalkers?: EarlyTalkerChecks;
}

export interface EarlyTalkerChecks {
  /** Wait this long before the greeting. */
  greetingDelayMs: number;
  /** Input before the greeting. */
  pregreet: 'reject' | 'ignore';
  /** Commands ahead of replies without PIPELINING (before EHLO's reply, or after HELO). */
  improperPipelining: 'reject' | 'ignore';
}

export interface ClientView {
  ip: string;
  port: number;
  hostname?: string;
}

/**
 * The spool's writer for one message, as the session sees it. The session calls exactly one of
 * commit() (which resolves only once the message is durable) and abort(); after a commit that
 * rejects it calls abort() too, so the writer can release what it holds. abort() is never
 * called after a commit that resolved.
 */
export interface MessageSink {
  readonly qid: string;
  /** Octets written so far (the stored message, trace header included). */
  readonly size: number;
  write(chunk: Buffer): Promise<void>;
  /** prefix: octets stored before everything written (our Authentication-Results field). */
  commit(envelope: Envelope, prefix?: Buffer): Promise<void>;
  abort(): void;
  /**
   * Content filters (src/filters/): the octets written so far, read back from storage, while the
   * message is still open. Absent on sinks that cannot read back (then no filter runs).
   */
  readBack?(): Promise<AsyncIterable<Buffer>>;
  /** Forgets the octets written so far: the next writes are the whole message again (a filter's rewrite). */
  restart?(): void;
}

/**
 * Mail authentication of one message (src/mailauth/), as the session sees it: fed the client's
 * octets as they are stored, asked for a verdict at the end of data (DATA and BDAT alike),
 * before the reply, so that a refusal is still possible.
 */
export interface MessageCheck {
  write(chunk: Buffer): Promise<void>;
  /** Runs what is left of the checks and decides; never rejects. */
  finish(): Promise<CheckVerdict>;
  /** The message was dropped: stop and release everything. */
  abort(): void;
}

export type CheckVerdict =
  /**
   * prepend: the header field(s) to put at the top of the stored message, CRLF-terminated;
   * junk: local copies go to the Junk folder (DMARC quarantine).
   */
  { kind: 'accept'; prepend: string; junk?: boolean } | { kind: 'refuse'; reply: Reply };

export interface CheckContext {
  qid: string;
  /** MAIL FROM, '' for the null reverse-path. */
  sender: string;
  helo: string;
  client: ClientView;
  listener: ListenerKind;
  authUser: string | undefined;
}

/** What a content filter needs to know of a message, beside its stored octets. */
export interface FilterContext extends CheckContext {
  recipients: readonly string[];
  tls: TlsInfo | undefined;
}

/**
 * The content filters' combined verdict (src/filters/), given before the reply. On accept the
 * stored message may already have been rewritten through the sink (header edits, a new body);
 * prepend goes on top of it, junk sends local copies to the Junk folder, and the recipient list
 * changes as the filters asked. discard: 250, nothing stored.
 */
export type FilterOutcome =
  | {
      kind: 'accept';
      prepend: string;
      junk: boolean;
      addRecipients: readonly string[];
      removeRecipients: readonly string[];
    }
  | { kind: 'refuse'; reply: Reply }
  | { kind: 'discard'; filter: string };

export type RecipientVerdict = { kind: 'accept' } | { kind: 'reject'; reply: Reply };

/**
 * The answer of a policy check (src/policy/): go on, or refuse with this reply. `reason` is a
 * stable id for the log ("list", "dnsbl", "greylist", "rate-limit", ...). `allowListed`: the
 * client is on an allow list, so the checks after it (early talkers among them) are skipped.
 */
export type PolicyVerdict =
  { kind: 'continue'; allowListed?: boolean } | { kind: 'refuse'; reply: Reply; reason: string };

/** What a policy check knows of the session. */
export interface PolicyContext {
  client: ClientView;
  listener: ListenerKind;
  /** The HELO/EHLO argument ('' before it). */
  helo: string;
  authUser: string | undefined;
}

export type AuthOutcome =
  | { kind: 'ok'; user: string }
  /**
   * `challenge`: a failed OAUTHBEARER / XOAUTH2 token; this base64 error status goes out in a
   * 334 first, and the 535 follows the client's dummy answer (RFC 7628 3.2.2-3.2.3).
   * `reason`: a stable id for the log (never a secret).
   */
  | { kind: 'fail'; delayMs: number; challenge?: string; reason?: string }
  | { kind: 'locked' };

/** The questions a session asks the rest of the server. */
export interface SessionHooks {
  now(): number;
  /** Random token for SASL challenges. */
  nonce(): string;
  /** The RCPT decision: relay and recipients, then the policy (lists, DNSBL, greylisting, rate limits). */
  checkRecipient(
    rcpt: Mailbox,
    ctx: { authUser: string | undefined; client: ClientView; sender?: string; helo?: string },
  ): Promise<RecipientVerdict>;
  /** Policy at connect: client lists, connection rate; may start lookups (DNSBL) for later. */
  checkConnect?(ctx: PolicyContext): Promise<PolicyVerdict>;
  /** Policy at HELO/EHLO (ctx.helo is the new name). */
  checkHelo?(ctx: PolicyContext): Promise<PolicyVerdict>;
  /** Policy at MAIL: sender lists, RHSBL, message rate limits. sender is '' for <>. */
  checkSender?(sender: string, ctx: PolicyContext): Promise<PolicyVerdict>;
  /** VRFY with smtp.vrfy = "verify". */
  verifyAddress(rcpt: Mailbox): Promise<boolean>;
  isAuthLockedOut(ip: string): boolean | Promise<boolean>;
  authenticate(creds: Credentials, ctx: { ip: string; secured: boolean }): Promise<AuthOutcome>;
  mayUseSender(user: string, sender: string): boolean;
  beginMessage(): MessageSink;
  /** Maps a spool failure to the reply the client gets (452 4.3.1 for a full disk, else 451 4.3.0). */
  spoolFailureReply(err: unknown): Reply;
  /** Starts mail authentication for a message, or null when it does not apply to this session. */
  beginCheck?(ctx: CheckContext): MessageCheck | null;
  /**
   * The message's spool sink with DKIM signing around it when this session's mail is signed
   * (src/mailauth/dkim-sign.ts: the signature goes into the commit's prefix), else `sink`.
   */
  signMessage?(sink: MessageSink, ctx: CheckContext): MessageSink;
  /** Runs the content filters on the stored message, or null when none applies to this session. */
  filterMessage?(ctx: FilterContext, sink: MessageSink): Promise<FilterOutcome> | null;
  /** Mail-log events (accepted, rejected) — the shell logs them with the session id. */
  event(name: string, fields: Record<string, unknown>): void;
}

export type Action =
  | { kind: 'reply'; reply: Reply }
  /** Wait before going on (after a failed AUTH). */
  | { kind: 'delay'; ms: number }
  /** Discard buffered input, run the TLS handshake, then send a 'tls-started' event. */
  | { kind: 'start-tls' }
  /** Switch the input to the DATA decoder; write decoded bytes to body (or discard if null); then send 'data-end'. */
  | { kind: 'receive-data'; body: MessageBody | null }
  /**
   * Read exactly size octets of BDAT chunk; pass them through the message's BDAT body decoder
   * (the same rules as DATA, one decoder per body object, across chunks, ended after the LAST
   * chunk) into body, or discard them if body is null; then send 'chunk-end'.
   */
  | { kind: 'receive-chunk'; size: number; body: MessageBody | null; last: boolean }
  | { kind: 'close' };

export type { DataError };

export type SessionEvent =
  | { kind: 'line'; line: Buffer }
  | { kind: 'line-too-long' }
  | { kind: 'line-bare-lf' }
  | { kind: 'tls-started'; tls: TlsInfo }
  /** The body ended (final dot); error is the decoder's first error; writeError a sink failure. */
  | { kind: 'data-end'; error: DataError | null; writeError?: unknown }
  /** A BDAT chunk was read; error is the body decoder's first error so far (at the LAST chunk, final). */
  | { kind: 'chunk-end'; error: DataError | null; writeError?: unknown };

interface Transaction {
  sender: Mailbox | null;
  mailParams: MailParams;
  recipients: Recipient[];
  /** BDAT state: the open message, its size so far, and whether a chunk failed. */
  bdat?: { sink: MessageSink; body: MessageBody; size: number; failed: Reply | null };
  usedData: boolean;
}

const AUTH_LINE_BYTES = 12_288; // RFC 4954 4: AUTH lines may be up to 12288 octets

export class Session {
  readonly #cfg: SessionConfig;
  readonly #hooks: SessionHooks;
  readonly #client: ClientView;
  #helo: string | null = null;
  #esmtp = false;
  #tls: TlsInfo | undefined;
  #authUser: string | undefined;
  #tx: Transaction | null = null;
  #errors = 0;
  #sasl: SaslExchange | null = null;
  #closed = false;
  /** The message being received by DATA, between 'receive-data' and 'data-end'. */
  #dataSink: MessageSink | null = null;
  #dataBody: MessageBody | null = null;
  /** The connect-time policy refused us (554): every command but QUIT gets 503 (RFC 5321 3.1). */
  #refusedAtConnect = false;
  /** The connect-time policy found the client on an allow list: no early-talker checks. */
  #allowListed = false;

  constructor(cfg: SessionConfig, hooks: SessionHooks, client: ClientView, tls?: TlsInfo) {
    this.#cfg = cfg;
    this.#hooks = hooks;
    this.#client = client;
    this.#tls = tls;
  }

  /** Longest line the line reader should accept (the session enforces the command limit itself). */
  static get maxLineBytes(): number {
    return AUTH_LINE_BYTES;
  }

  get authUser(): string | undefined {
    return this.#authUser;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** A transaction is open: MAIL accepted, its message not yet answered or reset. */
  get inTransaction(): boolean {
    return this.#tx !== null;
  }

  /** A message is being received by BDAT: its first chunk was accepted and it is not yet ended. */
  get receivingChunks(): boolean {
    return this.#tx?.bdat !== undefined;
  }

  greeting(): Action[] {
    return [this.#reply('GREETING', { banner: this.#cfg.banner })];
  }

  /**
   * The connect-time policy, then the greeting (after the greeting delay, when there is one):
   * a 421 that closes (a rate limit), or a 554 after which only QUIT is served (RFC 5321 3.1).
   */
  async connect(): Promise<Action[]> {
    const verdict: PolicyVerdict =
      this.#hooks.checkConnect === undefined
        ? { kind: 'continue' }
        : await this.#hooks.checkConnect(this.#policyContext());
    if (verdict.kind === 'refuse') {
      this.#hooks.event('connect-refused', {
        reason: verdict.reason,
        code: verdict.reply.code,
        enhanced: verdict.reply.enhanced,
      });
      if (verdict.reply.close === true) {
        this.abort();
        return [{ kind: 'reply', reply: verdict.reply }, { kind: 'close' }];
      }
      this.#refusedAtConnect = true;
      return [{ kind: 'reply', reply: verdict.reply }];
    }
    this.#allowListed = verdict.allowListed === true;
    const delay = this.earlyTalkers?.greetingDelayMs ?? 0;
    return [...(delay > 0 ? [{ kind: 'delay' as const, ms: delay }] : []), ...this.greeting()];
  }

  /** The early-talker checks that apply to this client: none for an allow-listed one. */
  get earlyTalkers(): EarlyTalkerChecks | undefined {
    return this.#allowListed ? undefined : this.#cfg.earlyTalkers;
  }

  /** PIPELINING was offered: the last greeting command was EHLO (RFC 2920 3.1). */
  get pipeliningOffered(): boolean {
    return this.#helo !== null && this.#esmtp;
  }

  #policyContext(): PolicyContext {
    return {
      client: this.#client,
      listener: this.#cfg.listener,
      helo: this.#helo ?? '',
      authUser: this.#authUser,
    };
  }

  /** A policy refusal: logged, and a 5xx counts towards the error limit like a refused RCPT. */
  #policyRefusal(
    verdict: Extract<PolicyVerdict, { kind: 'refuse' }>,
    fields: Record<string, unknown>,
  ): Action[] {
    this.#hooks.event('policy-refused', {
      ...fields,
      reason: verdict.reason,
      code: verdict.reply.code,
      enhanced: verdict.reply.enhanced,
    });
    if (verdict.reply.code >= 500) this.#errors++;
    return this.#maybeTooManyErrors([{ kind: 'reply', reply: verdict.reply }]);
  }

  /**
   * Called when the connection ends, whatever the reason: drops any half-received message. A
   * transaction still open is logged with what it had reached, at info: MAIL and RCPT are
   * logged at debug only (an accepted message's queued line names its sender and recipients).
   */
  abort(): void {
    const tx = this.#tx;
    if (tx !== null && !this.#closed) {
      this.#hooks.event('transaction abandoned', {
        stage: this.#stageReached(tx),
        sender: tx.sender === null ? '' : formatMailbox(tx.sender),
        rcpts: tx.recipients.map((r) => r.address),
      });
    }
    this.#dataSink?.abort();
    this.#dataSink = null;
    this.#tx?.bdat?.sink.abort();
    this.#tx = null;
    this.#closed = true;
  }

  /** The last command of an open transaction that was accepted, or the data being received. */
  #stageReached(tx: Transaction): 'MAIL' | 'RCPT' | 'DATA' | 'BDAT' {
    if (this.#dataSink !== null) return 'DATA';
    if (tx.bdat !== undefined) return 'BDAT';
    return tx.recipients.length > 0 ? 'RCPT' : 'MAIL';
  }

  async handle(ev: SessionEvent): Promise<Action[]> {
    if (this.#closed) return [];
    switch (ev.kind) {
      case 'line':
        if (this.#sasl !== null) return this.#saslLine(ev.line);
        return this.#command(ev.line);
      case 'line-too-long':
        this.#sasl = null;
        return this.#error('LINE_TOO_LONG', { limit: this.#cfg.limits.commandLineBytes });
      case 'line-bare-lf':
        this.#sasl = null;
        return this.#error('BARE_LF_COMMAND');
      case 'tls-started':
        // RFC 3207 4.2: forget everything learnt before TLS, including the EHLO and AUTH state.
        this.#tls = ev.tls;
        this.#helo = null;
        this.#esmtp = false;
        this.#authUser = undefined;
        this.#resetTransaction();
        return [];
      case 'data-end':
        return this.#dataEnd(ev.error, ev.writeError);
      case 'chunk-end':
        return this.#chunkEnd(ev.error, ev.writeError);
      default: {
        const never: never = ev;
        throw new Error(`unhandled event ${JSON.stringify(never)}`);
      }
    }
  }

  // ---- commands -------------------------------------------------------------------------

  async #command(line: Buffer): Promise<Action[]> {
    const parsed = parseCommand(line);
    // RFC 5321 4.5.3.1.4: 512 octets including CRLF, whatever the verb (an unknown or malformed
    // command too); AUTH gets RFC 4954's larger limit. An HTTP request is closed whatever its length.
    if (parsed.kind !== 'bad-bytes' && parsed.kind !== 'http') {
      const isAuth = parsed.kind === 'command' && parsed.verb === 'AUTH';
      const limit = isAuth ? AUTH_LINE_BYTES : this.#cfg.limits.commandLineBytes;
      if (line.length + 2 > limit) return this.#error('LINE_TOO_LONG', { limit });
    }
    switch (parsed.kind) {
      case 'bad-bytes':
        return this.#error(parsed.reason === 'nul' ? 'NUL_IN_COMMAND' : 'SYNTAX_ERROR', {
          detail: 'command is not valid UTF-8',
        });
      case 'http':
        this.abort();
        return [this.#reply('HTTP_COMMAND'), { kind: 'close' }];
      case 'unknown':
        return this.#error('UNKNOWN_COMMAND');
      case 'syntax':
        return this.#error('SYNTAX_ERROR_PARAMS', { detail: parsed.detail });
      case 'command':
        break;
      default: {
        const never: never = parsed;
        throw new Error(`unhandled command ${JSON.stringify(never)}`);
      }
    }
    return this.#dispatch(parsed.verb, parsed.args);
  }

  async #dispatch(verb: Verb, args: string): Promise<Action[]> {
    if (this.#refusedAtConnect && verb !== 'QUIT') return this.#error('REFUSED_AT_CONNECT');
    switch (verb) {
      case 'HELO':
      case 'EHLO':
        return this.#hello(verb, args);
      case 'MAIL':
        return this.#mail(args);
      case 'RCPT':
        return this.#rcpt(args);
      case 'DATA':
        return this.#data();
      case 'BDAT':
        return this.#bdat(args);
      case 'RSET':
        this.#resetTransaction();
        return [this.#reply('RESET_OK')];
      case 'VRFY':
        return this.#vrfy(args);
      case 'EXPN':
        return [this.#reply('EXPN_DISABLED')];
      case 'NOOP':
        return [this.#reply('NOOP_OK')];
      case 'HELP':
        return [this.#reply('HELP')];
      case 'QUIT':
        this.abort();
        return [this.#reply('CLOSING', { hostname: this.#cfg.hostname }), { kind: 'close' }];
      case 'STARTTLS':
        return this.#startTls();
      case 'AUTH':
        return this.#auth(args);
      default: {
        const never: never = verb;
        throw new Error(`unhandled verb ${String(never)}`);
      }
    }
  }

  async #hello(verb: 'HELO' | 'EHLO', args: string): Promise<Action[]> {
    // RFC 5321 4.1.1.1: the argument is a domain or an address literal; we accept any single token.
    if (args === '' || /\s/.test(args)) {
      return this.#error('SYNTAX_ERROR', { detail: `${verb} requires exactly one argument: your host name` });
    }
    if (this.#hooks.checkHelo !== undefined) {
      const verdict = await this.#hooks.checkHelo({ ...this.#policyContext(), helo: args });
      if (verdict.kind === 'refuse') return this.#policyRefusal(verdict, { helo: args });
    }
    this.#resetTransaction();
    this.#helo = args;
    this.#esmtp = verb === 'EHLO';
    const greet = reply('HELO_OK', { hostname: this.#cfg.hostname, helo: args, ip: this.#client.ip });
    if (verb === 'HELO') return [{ kind: 'reply', reply: greet }];
    const keywords = ehloKeywords({
      maxMessageBytes: this.#cfg.limits.messageBytes,
      tlsActive: this.#tls !== undefined,
      tlsAvailable: this.#cfg.tlsAvailable,
      authMechanisms: this.#authOffered() ? this.#cfg.authMechanisms : [],
    });
    return [{ kind: 'reply', reply: ehloReply([...greet.lines, ...keywords]) }];
  }

  #authAllowedHere(): boolean {
    return this.#cfg.listener !== 'smtp' || this.#cfg.authOnSmtp;
  }

  #authOffered(): boolean {
    return (
      this.#authAllowedHere() &&
      this.#authUser === undefined &&
      (this.#tls !== undefined || this.#cfg.authAllowPlaintext) &&
      this.#cfg.authMechanisms.length > 0
    );
  }

  async #mail(args: string): Promise<Action[]> {
    if (this.#helo === null) return this.#error('BAD_SEQUENCE', { detail: 'send HELO or EHLO first' });
    if (this.#tx !== null) return this.#error('BAD_SEQUENCE', { detail: 'nested MAIL command' });
    if (this.#cfg.listener !== 'smtp' && this.#authUser === undefined) return this.#error('AUTH_REQUIRED');
    const split = splitPathAndParams(args);
    if (split === null) return this.#error('SYNTAX_ERROR', { detail: 'expected MAIL FROM:<address>' });
    if (!this.#esmtp && split.params !== '') {
      return this.#error('SYNTAX_ERROR_PARAMS', { detail: 'parameters need EHLO' });
    }
    const params = parseMailParams(split.params, { maxSize: this.#cfg.limits.messageBytes });
    if (!params.ok) {
      return params.error.kind === 'unknown'
        ? this.#error('UNKNOWN_PARAMETER', { param: params.error.param })
        : this.#error('SYNTAX_ERROR_PARAMS', { detail: params.error.detail });
    }
    if (params.params.body === 'BINARYMIME') {
      return this.#error('SYNTAX_ERROR_PARAMS', { detail: 'BODY=BINARYMIME is not supported' });
    }
    const path = parseReversePath(split.path, { smtputf8: params.params.smtputf8 === true });
    if (!path.ok) {
      return path.error.kind === 'needs-smtputf8'
        ? this.#error('SMTPUTF8_REQUIRED')
        : this.#error('BAD_SENDER_ADDRESS', { detail: path.error.detail });
    }
    // RFC 1870 6: a declared size over our limit is refused at MAIL.
    if (params.params.size !== undefined && params.params.size > this.#cfg.limits.messageBytes) {
      return this.#error('MESSAGE_TOO_BIG_DECLARED', { limit: this.#cfg.limits.messageBytes });
    }
    const sender = path.mailbox === null ? '' : formatMailbox(path.mailbox);
    if (
      this.#authUser !== undefined &&
      this.#cfg.enforceSender &&
      !this.#hooks.mayUseSender(this.#authUser, sender)
    ) {
      this.#hooks.event('sender-refused', { sender, user: this.#authUser });
      return this.#error('SENDER_NOT_OWNED', { address: sender, user: this.#authUser });
    }
    if (this.#hooks.checkSender !== undefined) {
      const verdict = await this.#hooks.checkSender(sender, this.#policyContext());
      if (verdict.kind === 'refuse') return this.#policyRefusal(verdict, { sender });
      if (this.#tx !== null) return this.#error('BAD_SEQUENCE', { detail: 'nested MAIL command' });
    }
    this.#tx = { sender: path.mailbox, mailParams: params.params, recipients: [], usedData: false };
    this.#hooks.event('mail', { sender });
    return [this.#reply('SENDER_OK', { address: sender })];
  }

  async #rcpt(args: string): Promise<Action[]> {
    if (this.#tx === null) return this.#error('BAD_SEQUENCE', { detail: 'send MAIL FROM first' });
    if (this.#tx.bdat !== undefined) return this.#error('BAD_SEQUENCE', { detail: 'RCPT after BDAT' });
    const split = splitPathAndParams(args);
    if (split === null) return this.#error('SYNTAX_ERROR', { detail: 'expected RCPT TO:<address>' });
    // RFC 5321 4.1.1.3 / 2.2.1: parameters are service extensions, which exist only after EHLO.
    if (!this.#esmtp && split.params !== '') {
      return this.#error('SYNTAX_ERROR_PARAMS', { detail: 'parameters need EHLO' });
    }
    const params = parseRcptParams(split.params);
    if (!params.ok) {
      return params.error.kind === 'unknown'
        ? this.#error('UNKNOWN_PARAMETER', { param: params.error.param })
        : this.#error('SYNTAX_ERROR_PARAMS', { detail: params.error.detail });
    }
    const path = parseForwardPath(split.path, { smtputf8: this.#tx.mailParams.smtputf8 === true });
    if (!path.ok) {
      return path.error.kind === 'needs-smtputf8'
        ? this.#error('SMTPUTF8_REQUIRED')
        : this.#error('BAD_ADDRESS', { detail: path.error.detail });
    }
    // RFC 5321 4.5.3.1.8: beyond our limit, 452 4.5.3 (temporary: the client sends the rest later).
    if (this.#tx.recipients.length >= this.#cfg.limits.recipients) {
      return [this.#reply('TOO_MANY_RECIPIENTS', { limit: this.#cfg.limits.recipients })];
    }
    const address = formatMailbox(path.mailbox);
    let verdict: RecipientVerdict;
    try {
      verdict = await this.#hooks.checkRecipient(path.mailbox, {
        authUser: this.#authUser,
        client: this.#client,
        sender: this.#tx.sender === null ? '' : formatMailbox(this.#tx.sender),
        helo: this.#helo ?? '',
      });
    } catch (err) {
      // The lookup itself failed (a table or a store we could not read): the client may try
      // again later (RFC 5321 4.2.5, 451), and it is not the client's error.
      this.#hooks.event('rcpt-lookup-failed', { rcpt: address, err: String(err) });
      return [this.#reply('RECIPIENT_LOOKUP_FAILED')];
    }
    if (verdict.kind === 'reject') {
      this.#hooks.event('rcpt-refused', {
        rcpt: address,
        code: verdict.reply.code,
        enhanced: verdict.reply.enhanced,
      });
      if (verdict.reply.code >= 500) this.#errors++;
      return this.#maybeTooManyErrors([{ kind: 'reply', reply: verdict.reply }]);
    }
    if (this.#tx === null) return [this.#reply('BAD_SEQUENCE', { detail: 'transaction was reset' })];
    this.#tx.recipients.push({ address, params: params.params });
    this.#hooks.event('rcpt', { rcpt: address });
    return [this.#reply('RECIPIENT_OK', { address })];
  }

  #data(): Action[] {
    if (this.#tx === null) return this.#error('BAD_SEQUENCE', { detail: 'send MAIL FROM first' });
    if (this.#tx.bdat !== undefined) return this.#error('BDAT_AFTER_DATA_MIX');
    if (this.#tx.recipients.length === 0) return this.#error('NO_VALID_RECIPIENTS');
    let sink: MessageSink;
    try {
      sink = this.#beginSink();
    } catch (err) {
      return [{ kind: 'reply', reply: this.#hooks.spoolFailureReply(err) }];
    }
    this.#tx.usedData = true;
    this.#dataSink = sink;
    this.#dataBody = this.#openBody(sink);
    return [this.#reply('START_DATA'), { kind: 'receive-data', body: this.#dataBody }];
  }

  async #dataEnd(error: DataError | null, writeError: unknown): Promise<Action[]> {
    const sink = this.#dataSink;
    const body = this.#dataBody;
    this.#dataSink = null;
    this.#dataBody = null;
    if (sink === null || body === null || this.#tx === null) {
      sink?.abort();
      return [this.#reply('BAD_SEQUENCE', { detail: 'no message in progress' })];
    }
    if (error !== null) {
      sink.abort();
      this.#resetTransaction();
      return [{ kind: 'reply', reply: this.#dataErrorReply(error) }];
    }
    if (writeError !== undefined) {
      sink.abort();
      this.#resetTransaction();
      return [{ kind: 'reply', reply: this.#hooks.spoolFailureReply(writeError) }];
    }
    return this.#commit(sink, body);
  }

  /**
   * Ends the transaction with its message: header checks, then commit. The transaction is
   * detached first, so #resetTransaction() can never abort a sink that was committed (BDAT).
   */
  async #commit(sink: MessageSink, body: MessageBody): Promise<Action[]> {
    const tx = this.#tx!;
    this.#tx = null;
    this.#pendingChunk = null;
    let facts: HeaderFacts;
    try {
      facts = await body.end();
    } catch (err) {
      sink.abort();
      return [{ kind: 'reply', reply: this.#hooks.spoolFailureReply(err) }];
    }
    if (facts.receivedCount > this.#cfg.limits.receivedHeaders) {
      sink.abort();
      this.#hooks.event('rejected', { qid: sink.qid, reason: 'mail loop', received: facts.receivedCount });
      return [this.#reply('TOO_MANY_HOPS', { count: facts.receivedCount })];
    }
    // Mail authentication and its policy (src/mailauth/), and the content filters (src/filters/),
    // side by side: after the body, before the reply.
    const filtering = this.#hooks.filterMessage?.(this.#filterContext(tx, sink.qid), sink) ?? null;
    let prefix: Buffer | undefined;
    let authJunk = false;
    if (sink instanceof CheckedSink) {
      const verdict = await sink.check.finish();
      if (verdict.kind === 'refuse') {
        await filtering;
        sink.abort();
        this.#hooks.event('rejected', {
          qid: sink.qid,
          reason: 'mail authentication',
          code: verdict.reply.code,
          enhanced: verdict.reply.enhanced,
        });
        return [{ kind: 'reply', reply: verdict.reply }];
      }
      prefix = Buffer.from(verdict.prepend, 'utf8');
      authJunk = verdict.junk === true;
    }
    const envelope = this.#envelope(tx);
    if (authJunk) envelope.junk = true;
    if (filtering !== null) {
      const outcome = await filtering;
      switch (outcome.kind) {
        case 'refuse':
          sink.abort();
          this.#hooks.event('rejected', {
            qid: sink.qid,
            reason: 'content filter',
            code: outcome.reply.code,
            enhanced: outcome.reply.enhanced,
          });
          return [{ kind: 'reply', reply: outcome.reply }];
        case 'discard':
          // Accepted and dropped, as the filter asked: the client is told "queued" (Postfix does the same).
          sink.abort();
          this.#hooks.event('discarded', { qid: sink.qid, filter: outcome.filter, sender: envelope.sender });
          return [this.#reply('QUEUED', { qid: sink.qid })];
        case 'accept':
          prefix = Buffer.concat([prefix ?? Buffer.alloc(0), Buffer.from(outcome.prepend, 'utf8')]);
          // In place: the transaction's envelope is the one queued.
          Object.assign(envelope, applyFilterEnvelope(envelope, outcome));
          if (envelope.recipients.length === 0) {
            // Every recipient was deleted by a milter: nothing left to deliver.
            sink.abort();
            this.#hooks.event('discarded', {
              qid: sink.qid,
              filter: 'no recipients left',
              sender: envelope.sender,
            });
            return [this.#reply('QUEUED', { qid: sink.qid })];
          }
          break;
        default: {
          const never: never = outcome;
          throw new Error(`unhandled filter outcome ${JSON.stringify(never)}`);
        }
      }
    }
    try {
      await sink.commit(envelope, prefix);
    } catch (err) {
      sink.abort();
      return [{ kind: 'reply', reply: this.#hooks.spoolFailureReply(err) }];
    }
    this.#hooks.event('queued', {
      qid: sink.qid,
      size: sink.size,
      sender: envelope.sender,
      rcpts: envelope.recipients.map((r) => r.address),
    });
    return [this.#reply('QUEUED', { qid: sink.qid })];
  }

  #bdat(args: string): Action[] {
    // RFC 3030 2: BDAT chunk-size [LAST]. The chunk is read even when the command fails.
    const m = /^(\d{1,10})(?: +(LAST))?$/i.exec(args);
    if (m === null) {
      // Without a valid size we cannot know where the chunk ends: the only safe move is to close.
      this.abort();
      return [this.#reply('SYNTAX_ERROR', { detail: 'expected BDAT <size> [LAST]' }), { kind: 'close' }];
    }
    const size = Number(m[1]);
    const last = m[2] !== undefined;
    const tx = this.#tx;
    let refusal: Reply | null = null;
    if (this.#helo === null || tx === null) {
      refusal = reply('BAD_SEQUENCE', { detail: 'send MAIL FROM first' });
    } else if (tx.usedData) {
      refusal = reply('BDAT_AFTER_DATA_MIX');
    } else if (tx.recipients.length === 0) {
      refusal = reply('NO_VALID_RECIPIENTS');
    }
    if (refusal !== null || tx === null) {
      this.#pendingChunk = {
        last,
        refusal: refusal ?? reply('BAD_SEQUENCE', { detail: 'send MAIL FROM first' }),
        clientError: true,
      };
      return [{ kind: 'receive-chunk', size, body: null, last }];
    }
    if (tx.bdat === undefined) {
      let sink: MessageSink;
      try {
        sink = this.#beginSink();
      } catch (err) {
        this.#pendingChunk = { last, refusal: this.#hooks.spoolFailureReply(err), clientError: false };
        return [{ kind: 'receive-chunk', size, body: null, last }];
      }
      tx.bdat = { sink, body: this.#openBody(sink), size: 0, failed: null };
    }
    const bdat = tx.bdat;
    bdat.size += size;
    if (bdat.failed === null && bdat.size > this.#cfg.limits.messageBytes) {
      bdat.failed = reply('MESSAGE_TOO_BIG', { limit: this.#cfg.limits.messageBytes });
    }
    this.#pendingChunk = { last, refusal: null, clientError: false, size };
    return [{ kind: 'receive-chunk', size, body: bdat.failed === null ? bdat.body : null, last }];
  }

  /** The BDAT chunk being read: its refusal (sent at chunk-end) and whether that counts as a client error. */
  #pendingChunk: { last: boolean; refusal: Reply | null; clientError: boolean; size?: number } | null = null;

  async #chunkEnd(error: DataError | null, writeError: unknown): Promise<Action[]> {
    const pending = this.#pendingChunk;
    this.#pendingChunk = null;
    if (pending === null) return [this.#reply('BAD_SEQUENCE', { detail: 'no chunk in progress' })];
    if (pending.refusal !== null) {
      return pending.clientError
        ? this.#errorReply(pending.refusal)
        : [{ kind: 'reply', reply: pending.refusal }];
    }
    const tx = this.#tx;
    const bdat = tx?.bdat;
    if (tx === null || bdat === undefined) {
      return [this.#reply('BAD_SEQUENCE', { detail: 'no message in progress' })];
    }
    // The body rules are DATA's, with DATA's replies (one decoder, data-decoder.ts). The refusal
    // comes with the chunk where the rule broke: RFC 3030 2 lets a server answer any chunk with
    // an error, and ends the transaction then.
    if (error !== null && bdat.failed === null) bdat.failed = this.#dataErrorReply(error);
    if (writeError !== undefined && bdat.failed === null)
      bdat.failed = this.#hooks.spoolFailureReply(writeError);
    if (bdat.failed !== null) {
      // RFC 3030 2: after a failed chunk the transaction is over; the client must RSET.
      const failed = bdat.failed;
      this.#resetTransaction(); // aborts bdat.sink
      return [{ kind: 'reply', reply: failed }];
    }
    if (!pending.last) return [this.#reply('BDAT_CHUNK_OK', { size: pending.size ?? 0 })];
    return this.#commit(bdat.sink, bdat.body);
  }

  #vrfy(args: string): Promise<Action[]> | Action[] {
    if (args === '') return this.#error('SYNTAX_ERROR', { detail: 'VRFY requires an argument' });
    if (this.#cfg.vrfy === 'ambiguous') return [this.#reply('VRFY_AMBIGUOUS')];
    const path = parseForwardPath(args.startsWith('<') ? args : `<${args}>`, { smtputf8: true });
    if (!path.ok) return [this.#reply('VRFY_AMBIGUOUS')];
    const address = formatMailbox(path.mailbox);
    return this.#hooks
      .verifyAddress(path.mailbox)
      .then((known): Action[] => [this.#reply(known ? 'VRFY_OK' : 'VRFY_UNKNOWN', { address })]);
  }

  #startTls(): Action[] {
    if (this.#tls !== undefined) return this.#error('TLS_ALREADY_ACTIVE');
    if (!this.#cfg.tlsAvailable) return [this.#reply('TLS_NOT_AVAILABLE')];
    if (this.#tx !== null) this.#resetTransaction();
    return [this.#reply('READY_TO_START_TLS'), { kind: 'start-tls' }];
  }

  // ---- AUTH (RFC 4954) --------------------------------------------------------------------

  async #auth(args: string): Promise<Action[]> {
    if (!this.#authAllowedHere()) return this.#error('AUTH_NOT_AVAILABLE');
    if (this.#helo === null || !this.#esmtp) {
      return this.#error('BAD_SEQUENCE', { detail: 'send EHLO first' });
    }
    if (this.#authUser !== undefined) return this.#error('AUTH_ALREADY');
    if (this.#tx !== null) return this.#error('AUTH_IN_TRANSACTION');
    if (this.#tls === undefined && !this.#cfg.authAllowPlaintext) return this.#error('AUTH_NEEDS_TLS');
    const [mechText = '', initial, extra] = args.split(' ');
    if (mechText === '' || extra !== undefined) {
      return this.#error('SYNTAX_ERROR', { detail: 'AUTH <mechanism> [initial-response]' });
    }
    const mech = parseMechanism(mechText);
    if (mech === null || !this.#cfg.authMechanisms.includes(mech)) {
      return this.#error('AUTH_MECHANISM_UNKNOWN', { mechanisms: this.#cfg.authMechanisms.join(' ') });
    }
    if (await this.#hooks.isAuthLockedOut(this.#client.ip)) {
      this.#hooks.event('auth-locked-out', { mechanism: mech });
      return [this.#reply('AUTH_LOCKED_OUT')];
    }
    const exchange = createExchange(mech, {
      hostname: this.#cfg.hostname,
      nonce: this.#hooks.nonce(),
      timestampMs: this.#hooks.now(),
    });
    this.#sasl = exchange;
    this.#saslMech = mech;
    return this.#saslStep(exchange.start(initial));
  }

  #saslMech: Mechanism | null = null;

  async #saslLine(line: Buffer): Promise<Action[]> {
    const exchange = this.#sasl!;
    return this.#saslStep(exchange.next(line.toString('latin1').trim()));
  }

  async #saslStep(step: ReturnType<SaslExchange['start']>): Promise<Action[]> {
    switch (step.kind) {
      case 'challenge':
        return [this.#reply('AUTH_CHALLENGE', { challenge: step.challenge })];
      case 'cancelled':
        this.#sasl = null;
        return this.#error('AUTH_CANCELLED');
      case 'error':
        this.#sasl = null;
        return this.#error(step.reason === 'bad-base64' ? 'AUTH_BAD_BASE64' : 'AUTH_FAILED');
      case 'done': {
        this.#sasl = null;
        const mechanism = this.#saslMech;
        let outcome: AuthOutcome;
        try {
          outcome = await this.#hooks.authenticate(step.credentials, {
            ip: this.#client.ip,
            secured: this.#tls !== undefined,
          });
        } catch (err) {
          // RFC 4954 6: the check could not be made (store or hash failure): 454 4.7.0, try later.
          this.#hooks.event('auth', { result: 'temporary-failure', mechanism, err: String(err) });
          return [this.#reply('AUTH_TEMP_FAILURE')];
        }
        if (outcome.kind === 'ok') {
          this.#authUser = outcome.user;
          this.#hooks.event('auth', { result: 'ok', mechanism, user: outcome.user });
          return [this.#reply('AUTH_OK')];
        }
        if (outcome.kind === 'locked') {
          this.#hooks.event('auth', { result: 'locked-out', mechanism });
          return [this.#reply('AUTH_LOCKED_OUT')];
        }
        const user = claimedUser(step.credentials);
        this.#hooks.event('auth', {
          result: 'failed',
          mechanism,
          user,
          ...(outcome.reason !== undefined ? { reason: outcome.reason } : {}),
        });
        const actions: Action[] = [];
        if (outcome.delayMs > 0) actions.push({ kind: 'delay', ms: outcome.delayMs });
        if (outcome.challenge !== undefined) {
          // RFC 7628 3.2.2: the error status in a 334; the client's dummy answer gets the 535.
          this.#sasl = failedTokenFollowUp();
          return [...actions, this.#reply('AUTH_CHALLENGE', { challenge: outcome.challenge })];
        }
        return [...actions, ...this.#error('AUTH_FAILED')];
      }
      default: {
        const never: never = step;
        throw new Error(`unhandled SASL step ${JSON.stringify(never)}`);
      }
    }
  }

  // ---- helpers ----------------------------------------------------------------------------

  #openBody(sink: MessageSink): MessageBody {
    const tx = this.#tx!;
    const now = this.#hooks.now();
    const smtputf8 = tx.mailParams.smtputf8 === true;
    const prefix = receivedHeader({
      helo: this.#helo ?? 'unknown',
      clientIp: this.#client.ip,
      ...(this.#client.hostname !== undefined ? { clientHostname: this.#client.hostname } : {}),
      ...(this.#authUser !== undefined ? { authUser: this.#authUser } : {}),
      byHost: this.#cfg.hostname,
      protocol: withProtocol({
        esmtp: this.#esmtp,
        tls: this.#tls !== undefined,
        auth: this.#authUser !== undefined,
        smtputf8,
      }),
      qid: sink.qid,
      ...(this.#tls !== undefined ? { tls: this.#tls } : {}),
      ...(tx.recipients.length === 1 && tx.recipients[0] !== undefined
        ? { singleRecipient: tx.recipients[0].address }
        : {}),
      date: now,
    });
    const ourId = this.#cfg.authservId;
    const stages = {
      ...(ourId !== undefined
        ? {
            fieldFilter: forgedResultsFilter(ourId),
          }
        : {}),
      ...(sink instanceof CheckedSink ? { observer: sink.check } : {}),
    };
    if (this.#cfg.listener === 'smtp') return new MessageBody(sink, { prefix, ...stages });
    // RFC 6409 8.2, 8.3: a submission server may add Date and Message-ID when they are missing.
    return new MessageBody(sink, {
      prefix,
      ...stages,
      addMissing: (facts) =>
        (facts.hasMessageId ? '' : `Message-ID: ${messageIdFor(sink.qid, this.#cfg.hostname)}\r\n`) +
        (facts.hasDate ? '' : `Date: ${formatRfc5322Date(now)}\r\n`),
    });
  }

  /**
   * The spool sink of a new message: DKIM signing around it when it applies (the signer sees
   * exactly what is stored), and the message's authentication check around that.
   */
  #beginSink(): MessageSink {
    const spool = this.#hooks.beginMessage();
    const tx = this.#tx;
    if (tx === null) return spool;
    const ctx: CheckContext = {
      qid: spool.qid,
      sender: tx.sender === null ? '' : formatMailbox(tx.sender),
      helo: this.#helo ?? '',
      client: this.#client,
      listener: this.#cfg.listener,
      authUser: this.#authUser,
    };
    const sink = this.#hooks.signMessage?.(spool, ctx) ?? spool;
    const check = this.#hooks.beginCheck?.(ctx) ?? null;
    return check === null ? sink : new CheckedSink(sink, check);
  }

  #filterContext(tx: Transaction, qid: string): FilterContext {
    return {
      qid,
      sender: tx.sender === null ? '' : formatMailbox(tx.sender),
      recipients: tx.recipients.map((r) => r.address),
      helo: this.#helo ?? '',
      client: this.#client,
      listener: this.#cfg.listener,
      authUser: this.#authUser,
      tls: this.#tls,
    };
  }

  #envelope(tx: Transaction): Envelope {
    const env: Envelope = {
      sender: tx.sender === null ? '' : formatMailbox(tx.sender),
      mailParams: tx.mailParams,
      recipients: tx.recipients,
      client: {
        ip: this.#client.ip,
        port: this.#client.port,
        helo: this.#helo ?? '',
        ...(this.#client.hostname !== undefined ? { hostname: this.#client.hostname } : {}),
      },
      listener: this.#cfg.listener,
      receivedAt: this.#hooks.now(),
    };
    if (this.#authUser !== undefined) env.authUser = this.#authUser;
    if (this.#tls !== undefined) env.tls = this.#tls;
    return env;
  }

  #dataErrorReply(error: DataError): Reply {
    switch (error) {
      case 'too-big':
        return reply('MESSAGE_TOO_BIG', { limit: this.#cfg.limits.messageBytes });
      case 'bare-lf':
        return reply('BARE_LF_DATA');
      case 'line-too-long':
        return reply('TEXT_LINE_TOO_LONG', { limit: this.#cfg.limits.textLineBytes });
      case 'nul':
        return reply('NUL_IN_DATA');
      default: {
        const never: never = error;
        throw new Error(`unhandled data error ${String(never)}`);
      }
    }
  }

  #resetTransaction(): void {
    this.#tx?.bdat?.sink.abort();
    this.#tx = null;
    this.#pendingChunk = null;
  }

  #reply(id: ReplyId, vars: Record<string, string | number> = {}): Action {
    return { kind: 'reply', reply: reply(id, { hostname: this.#cfg.hostname, ...vars }) };
  }

  /** A refusal caused by the client: counts towards the error limit. */
  #error(id: ReplyId, vars: Record<string, string | number> = {}): Action[] {
    return this.#errorReply(reply(id, { hostname: this.#cfg.hostname, ...vars }));
  }

  #errorReply(r: Reply): Action[] {
    this.#errors++;
    return this.#maybeTooManyErrors([{ kind: 'reply', reply: r }]);
  }

  #maybeTooManyErrors(actions: Action[]): Action[] {
    if (this.#errors < this.#cfg.limits.errors) return actions;
    this.abort();
    return [...actions, this.#reply('TOO_MANY_ERRORS'), { kind: 'close' }];
  }
}

/** A spool sink with its message's authentication check: aborting one aborts both. */
class CheckedSink implements MessageSink {
  readonly #inner: MessageSink;
  readonly check: MessageCheck;

  constructor(inner: MessageSink, check: MessageCheck) {
    this.#inner = inner;
    this.check = check;
  }

  get qid(): string {
    return this.#inner.qid;
  }

  get size(): number {
    return this.#inner.size;
  }

  write(chunk: Buffer): Promise<void> {
    return this.#inner.write(chunk);
  }

  commit(envelope: Envelope, prefix?: Buffer): Promise<void> {
    return this.#inner.commit(envelope, prefix);
  }

  abort(): void {
    this.check.abort();
    this.#inner.abort();
  }

  readBack(): Promise<AsyncIterable<Buffer>> {
    if (this.#inner.readBack === undefined) return Promise.reject(new Error('this sink cannot read back'));
    return this.#inner.readBack();
  }

  restart(): void {
    if (this.#inner.restart === undefined) throw new Error('this sink cannot restart');
    this.#inner.restart();
  }
}
