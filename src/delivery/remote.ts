/**
 * Outbound delivery to other domains (RFC 5321 5.1, 4.2.5; RFC 7505): for one message's
 * recipients in one domain, resolve the route, then try each MX host and address in order with
 * one SMTP session each (reused across messages to the same address, connection-cache.ts),
 * moving on after a connection failure or a 421, until every recipient has an answer for this
 * attempt. A connection lost after the whole message went out (final "." or BDAT LAST) is never
 * passed on: that host may hold the message, so its recipients wait for the next attempt.
 * Returns results per recipient and what the attempt learned of the destination as a whole;
 * the queue decides when to try and how many at once (queue/destinations.ts: slots and back-off
 * per next hop), and the manager turns results into recipient states, retries and bounces.
 * A domain with a relay host (smarthost, config `transport`) goes to that host
 * instead of its MX: its A/AAAA addresses (never MX, like a bracketed Postfix relayhost) or its
 * literal address, with the relay's port, TLS policy and AUTH credentials. Trust: remote replies
 * and DNS answers are untrusted data, only logged and returned; AUTH passwords are never logged.
 */
import net from 'node:net';
import type tls from 'node:tls';
import type { Envelope, RcptParams } from '../message/envelope.js';
import {
  localOutcome,
  remoteOutcome,
  renderOutcome,
  type Outcome,
  type OutcomeStage,
} from '../message/outcome.js';
import type { Logger } from '../observability/log.js';
import type { RetryPolicy } from '../queue/scheduler.js';
import { ConnectionCache, sessionKey } from './connection-cache.js';
import type { DnsResolver } from './dns.js';
import { resolveMx, type MxRoute } from './mx.js';
import {
  SmtpClientSession,
  type ClientOptions,
  type ClientReply,
  type ConnectFailure,
  type OutboundMessage,
  type TransactionResult,
} from './smtp-client.js';

/** A transaction that reached its end at the server, one result per recipient. */
type DoneResult = Extract<TransactionResult, { kind: 'done' }>;

/** What outbound (remote) delivery needs; without it remote recipients stay pending. */
export interface OutboundOptions {
  /** Resolver for MX, A and AAAA (a CachingResolver in production). */
  dns: DnsResolver;
  /** TCP port of remote MX hosts (25). */
  port: number;
  /** STARTTLS policy towards MX hosts, unless tlsPolicies names the domain. */
  tls: ClientOptions['tls'];
  /** STARTTLS policy by lower-case destination domain (config `outbound.tls_policy`). */
  tlsPolicies?: ReadonlyMap<string, ClientOptions['tls']>;
  /** Extra TLS options towards MX hosts, e.g. the CA certificates for "required-verify". */
  tlsOptions?: tls.ConnectionOptions;
  /** Mail transactions on one connection before it is closed; 1 turns reuse off. Default 1. */
  connectionReuseLimit?: number;
  /** How long an idle connection is kept for the next message to its host. Default 0. */
  connectionIdleMs?: number;
  /** Called once per finished transaction with its TLS version ("none": plain text), for metrics. */
  onTransactionTls?: (version: string) => void;
  /** Recipients in one mail transaction; more go in further transactions. Default: no limit. */
  recipientsPerTransaction?: number;
  timeouts: ClientOptions['timeouts'];
  /** Deliveries at once, in total and per destination domain. */
  concurrencyTotal: number;
  concurrencyPerDestination: number;
  retry: RetryPolicy;
  /** True for an address this server receives mail on: an MX there would loop (RFC 5321 5.4.6). */
  isOwnAddress: (ip: string) => boolean;
  /** Uniform in [0, 1): MX order among equal preferences, retry jitter. Default Math.random. */
  random?: () => number;
  /** Relay hosts by lower-case recipient domain; "*" for every other domain. */
  relays?: ReadonlyMap<string, RelayRoute>;
  /**
   * True for an address and port this server listens on: a relay there would loop. A relay is
   * checked by port too, as it often sits on another port of the same address (a local filter).
   */
  isOwnEndpoint?: (ip: string, port: number) => boolean;
}

/** A relay host (smarthost) that takes a domain's mail instead of its MX. */
export interface RelayRoute {
  /** Host name or IP address, without brackets. */
  host: string;
  port: number;
  tls: ClientOptions['tls'];
  implicitTls: boolean;
  /** AUTH credentials; the password is fetched at each attempt (e.g. read from its file). */
  auth?: { username: string; password: () => Promise<string> };
  tlsOptions?: tls.ConnectionOptions;
  /** The relay as configured, for logs and errors: "[192.0.2.1]:587". */
  label: string;
  /** Config auth_over_unverified_tls: AUTH may go over TLS that is not verified (warned at each delivery). */
  authOverUnverifiedTls?: boolean;
  /** An `lmtp:` transport (RFC 2033): LHLO, and one reply per recipient after the end of data. */
  lmtp?: boolean;
  /** An `lmtp:unix:PATH` transport: the socket's path (host is then the path, port 0). */
  path?: string;
}

/** "host", "host:port", "[host]:port", "[2001:db8::1]:587" → host (no brackets) and port (default 25). */
export function parseRelayHost(relay: string): { host: string; port: number } | null {
  const m = /^(?:\[([A-Za-z0-9.:-]+)\]|([A-Za-z0-9.-]+))(?::(\d{1,5}))?$/.exec(relay);
  if (m === null) return null;
  const port = m[3] === undefined ? 25 : Number(m[3]);
  if (port < 1 || port > 65535) return null;
  const host = (m[1] ?? m[2] ?? '').replace(/^ipv6:/i, '');
  return host === '' ? null : { host, port };
}

/** Where one attempt connects, and how. */
interface Target {
  port: number;
  tls: ClientOptions['tls'];
  implicitTls?: boolean;
  auth?: { username: string; password: () => Promise<string> };
  tlsOptions?: tls.ConnectionOptions;
  lmtp?: boolean;
  path?: string;
}

/** A recipient of the message in the destination domain. */
export interface RemoteRecipient {
  index: number;
  address: string;
  params: RcptParams;
}

/** How an outbound attempt ended for one recipient, before it becomes a RecipientState. */
export type RemoteResult =
  /** relayed: the next hop does not offer DSN, so a NOTIFY request ends here (RFC 3461 6.2.1). */
  | { kind: 'delivered'; detail: string; mta: string; relayed: boolean }
  /** notBefore: the destination is backed off until then; mta: the host whose reply this is. */
  | { kind: 'deferred'; outcome: Outcome; notBefore?: number; mta?: string }
  /** mta: the MX host whose reply this is (Remote-MTA in a bounce). */
  | { kind: 'failed'; outcome: Outcome; mta?: string };

/**
 * What an attempt learned of the destination as a whole: a host answered (up), none did or its
 * route failed in a way that may clear up (down, with the error its waiting messages get), or
 * nothing either way (a permanent route failure, such as null MX).
 */
export type DestinationHealth = { kind: 'up' } | { kind: 'down'; outcome: Outcome } | { kind: 'unknown' };

/** One attempt's results per recipient index, and the destination's health. */
export interface RemoteAttempt {
  results: Map<number, RemoteResult>;
  health: DestinationHealth;
}

/** The relay that takes `domain`'s mail: its own entry in `transport`, else the "*" entry. */
function relayFor(
  domain: string,
  relays: ReadonlyMap<string, RelayRoute> | undefined,
): RelayRoute | undefined {
  return relays?.get(domain) ?? relays?.get('*');
}

/**
 * The next hop of `domain`, as the queue counts it for concurrency and back-off: the domain, or
 * the relay it goes through. Every domain sent through one relay shares it, so a dead relay is
 * not tried once per domain (Postfix counts per nexthop too).
 */
export function nextHop(domain: string, relays: ReadonlyMap<string, RelayRoute> | undefined): string {
  const relay = relayFor(domain, relays);
  return relay === undefined ? domain : `relay ${relay.label}`;
}

export interface RemoteDeliveryOptions {
  outbound: OutboundOptions;
  log: Logger;
  /** Our name in EHLO. */
  hostname: string;
  /** The message body, streamed from the spool, fresh on each call. */
  body: (qid: string) => AsyncIterable<Buffer>;
  now: () => number;
}

export class RemoteDelivery {
  readonly #o: RemoteDeliveryOptions;
  /** Idle sessions kept for the next message to the same address (connection reuse). */
  readonly #cache: ConnectionCache;

  constructor(o: RemoteDeliveryOptions) {
    this.#o = o;
    this.#cache = new ConnectionCache({
      reuseLimit: o.outbound.connectionReuseLimit ?? 1,
      idleMs: o.outbound.connectionIdleMs ?? 0,
      // No more idle connections than could be busy at once.
      maxIdle: o.outbound.concurrencyTotal,
    });
  }

  /**
   * One outbound attempt for a message's recipients in one domain: resolve the route, then try
   * each host and address in order until every recipient has a final answer for this attempt.
   * A function from (domain, message, recipients) to results: when to try, and how many at once,
   * is the queue's business (queue/destinations.ts), told by the destination's health returned.
   */
  async deliver(
    qid: string,
    envelope: Envelope,
    size: number,
    domain: string,
    items: readonly RemoteRecipient[],
  ): Promise<RemoteAttempt> {
    const out = this.#o.outbound;
    const { log } = this.#o;
    const random = out.random ?? Math.random;
    const results = new Map<number, RemoteResult>();
    let health: DestinationHealth = { kind: 'unknown' };
    const relay = relayFor(domain, out.relays);
    const target: Target =
      relay === undefined
        ? {
            port: out.port,
            tls: out.tlsPolicies?.get(domain) ?? out.tls,
            ...(out.tlsOptions !== undefined ? { tlsOptions: out.tlsOptions } : {}),
          }
        : {
            port: relay.port,
            tls: relay.tls,
            implicitTls: relay.implicitTls,
            ...(relay.auth !== undefined ? { auth: relay.auth } : {}),
            ...(relay.tlsOptions !== undefined ? { tlsOptions: relay.tlsOptions } : {}),
            ...(relay.lmtp === true ? { lmtp: true } : {}),
            ...(relay.path !== undefined ? { path: relay.path } : {}),
          };
    if (
      relay?.auth !== undefined &&
      relay.authOverUnverifiedTls === true &&
      relay.tls !== 'required-verify'
    ) {
      log.warn(
        { qid, domain, relay: relay.label },
        'outbound: AUTH credentials may go to this relay without certificate verification (auth_over_unverified_tls = true); an active attacker can collect the password',
      );
    }
    {
      const route: MxRoute =
        relay === undefined
          ? await resolveMx(domain, out.dns, { random, isOwnAddress: out.isOwnAddress })
          : await resolveRelay(relay, out.dns, (ip) => out.isOwnEndpoint?.(ip, relay.port) ?? false);
      const routeFailure = routeResult(domain, route);
      if (route.kind === 'temp' && routeFailure !== null)
        health = { kind: 'down', outcome: routeFailure.outcome };
      if (routeFailure !== null) {
        for (const item of items) {
          results.set(item.index, routeFailure);
          log.warn(
            {
              qid,
              rcpt: item.address,
              domain,
              route: route.kind,
              reason: routeFailure.outcome.reason,
              reply: renderOutcome(routeFailure.outcome),
            },
            'outbound: no route to the domain',
          );
        }
      } else if (route.kind === 'hosts') {
        let remaining: readonly RemoteRecipient[] = items;
        /** The last reason the whole attempt failed at some address, and whether it was permanent. */
        let last: { outcome: Outcome; permanent: boolean; mta?: string } = {
          outcome:
            relay === undefined
              ? localOutcome('unreachable', 'connect', { domain })
              : localOutcome('relay-unreachable', 'connect', { relay: relay.label, domain }),
          permanent: false,
        };
        /** Some host answered the transaction: the destination as a whole works. */
        let reached = false;
        hosts: for (const host of route.hosts) {
          for (const address of host.addresses) {
            const peer = { host: host.name, address };
            if (remaining.length === 0) break hosts;
            // At most recipientsPerTransaction recipients per transaction (Postfix's
            // smtp_destination_recipient_limit); further ones follow on the same connection.
            const limit = Math.max(1, out.recipientsPerTransaction ?? Number.MAX_SAFE_INTEGER);
            /** Recipients for the next address: this one failed or closed before answering them. */
            const carry: RemoteRecipient[] = [];
            let todo: readonly RemoteRecipient[] = remaining;
            while (todo.length > 0) {
              const batch = todo.slice(0, limit);
              todo = todo.slice(batch.length);
              const attempt = await this.#attempt(qid, envelope, size, batch, host.name, address, target);
              if (attempt.kind === 'connection-failed' || attempt.kind === 'rejected') {
                const outcome =
                  attempt.kind === 'rejected'
                    ? outcomeOf(attempt.reply, attempt.stage, peer)
                    : localOutcome('connection-failed', attempt.stage, { detail: attempt.reason });
                last = {
                  outcome,
                  permanent: attempt.kind === 'rejected' && attempt.permanent,
                  mta: host.name,
                };
                const unanswered = [...batch, ...todo];
                todo = [];
                log.warn(
                  {
                    qid,
                    rcpt: unanswered.map((r) => r.address),
                    mx: host.name,
                    address,
                    reason: outcome.reason,
                    reply: renderOutcome(outcome),
                  },
                  'outbound: attempt failed at this address; trying the next',
                );
                if (attempt.kind === 'rejected' && attempt.permanent && attempt.stage === 'mail') {
                  // The message itself was refused (MAIL FROM 5xx, SIZE, SMTPUTF8): no other host will differ.
                  for (const item of unanswered)
                    results.set(item.index, { kind: 'failed', outcome, mta: host.name });
                } else carry.push(...unanswered);
                break;
              }
              reached = true;
              for (const item of batch) {
                const r = attempt.recipients.find((x) => x.address === item.address);
                if (r === undefined) {
                  carry.push(item);
                  continue;
                }
                const text = replyText(r.reply);
                const outcome = outcomeOf(r.reply, r.stage, peer);
                if (r.maybeDelivered === true) {
                  // The whole message went out but its reply never came: this host may hold it,
                  // so it waits for the next attempt instead of going to the next host now (as
                  // Postfix does: "message may be sent more than once").
                  log.warn(
                    { qid, rcpt: item.address, mx: host.name, address, reply: text },
                    'outbound: connection lost after the end of data; deferred, not passed to the next host (may be delivered twice)',
                  );
                  results.set(item.index, { kind: 'deferred', outcome, mta: host.name });
                  continue;
                }
                // 421 (or a connection lost before a final answer): the next address may do better.
                if (r.kind === 'deferred' && (r.reply.code === 421 || r.reply.local !== undefined)) {
                  last = { outcome, permanent: false };
                  carry.push(item);
                  continue;
                }
                results.set(
                  item.index,
                  r.kind === 'delivered'
                    ? {
                        kind: 'delivered',
                        detail: `${host.name}[${address}]: ${text}`,
                        mta: host.name,
                        relayed: !attempt.nextHopDsn,
                      }
                    : r.kind === 'deferred'
                      ? { kind: 'deferred', outcome, mta: host.name }
                      : { kind: 'failed', outcome, mta: host.name },
                );
              }
              // The session ended with recipients unanswered: the rest go to the next address too.
              if (carry.length > 0) {
                carry.push(...todo);
                todo = [];
              }
            }
            remaining = carry;
          }
        }
        if (reached) health = { kind: 'up' };
        else if (!last.permanent) health = { kind: 'down', outcome: last.outcome };
        for (const item of remaining) {
          results.set(
            item.index,
            last.permanent
              ? {
                  kind: 'failed',
                  outcome: last.outcome,
                  ...(last.mta !== undefined ? { mta: last.mta } : {}),
                }
              : { kind: 'deferred', outcome: last.outcome },
          );
        }
      }
    }
    return { results, health };
  }

  /**
   * Closes the idle connections kept for reuse (QUIT) and waits for them; connections still in
   * use are closed when their delivery ends. For shutdown, after the last delivery.
   */
  close(): Promise<void> {
    return this.#cache.closeAll();
  }

  /**
   * One SMTP transaction at one address for the given recipients, on an idle cached session to
   * that address if there is one (RSET first), else on a new one; logs the attempt. A session
   * that ends the transaction usable goes back to the cache. A cached session found stale (the
   * server closed it while idle) is no failure of the address: a new connection is tried at once.
   */
  async #attempt(
    qid: string,
    envelope: Envelope,
    size: number,
    items: readonly RemoteRecipient[],
    mx: string,
    address: string,
    target: Target,
  ): Promise<Exclude<TransactionResult, DoneResult> | (DoneResult & { nextHopDsn: boolean })> {
    const { log } = this.#o;
    // An IP literal is no TLS server name (RFC 6066 3).
    const servername = net.isIP(mx) === 0 ? mx : undefined;
    const key = sessionKey({
      address,
      port: target.port,
      tls: target.tls,
      implicitTls: target.implicitTls === true,
      servername,
      authUsername: target.auth?.username,
      tlsOptions: target.tlsOptions,
    });
    const message: OutboundMessage = {
      sender: envelope.sender,
      mailParams: envelope.mailParams,
      recipients: items.map((i) => ({ address: i.address, params: i.params })),
      size,
      body: () => this.#o.body(qid),
      needsSmtputf8: envelope.mailParams.smtputf8 === true,
      eightBit: envelope.mailParams.body === '8BITMIME' || envelope.mailParams.body === 'BINARYMIME',
      dkimSigned: envelope.dkimSigned === true,
    };
    let session = this.#cache.take(key);
    let reused = session !== null;
    for (;;) {
      if (session === null) {
        const opened = await this.#connect(mx, address, target, servername);
        if (!(opened instanceof SmtpClientSession)) return opened;
        session = opened;
      }
      const before = this.#cache.transactions(session);
      log.debug(
        { qid, mx, address, reused, transactions: before },
        reused ? 'outbound: reusing an idle connection' : 'outbound: new connection',
      );
      let result: TransactionResult;
      try {
        result = await session.send(message, { reset: reused });
      } catch (err) {
        await session.quit();
        throw err;
      }
      // A 421 or a lost connection has already closed the session (closedReason set). A message
      // refused at MAIL (by the server, or by SIZE or SMTPUTF8 before sending) leaves the session
      // usable: the next transaction starts with RSET.
      const usable = result.kind === 'done' || (result.kind === 'rejected' && result.stage === 'mail');
      if (usable && session.closedReason === null) {
        await this.#cache.put(key, session, before + 1);
      } else {
        await session.quit();
      }
      if (reused && result.kind === 'connection-failed') {
        log.debug(
          { qid, mx, address, reason: result.reason },
          'outbound: idle connection no longer usable; connecting again',
        );
        session = null;
        reused = false;
        continue;
      }
      if (result.kind === 'done') {
        this.#o.outbound.onTransactionTls?.(session.tls?.version ?? 'none');
        for (const r of result.recipients) {
          log.info(
            {
              qid,
              rcpt: r.address,
              mx,
              address,
              tls: session.tls?.version ?? 'none',
              tlsVerified: session.tls?.verified ?? false,
              reused,
              reply: replyText(r.reply),
              result: r.kind,
            },
            'outbound attempt',
          );
        }
        return { ...result, nextHopDsn: session.extensions.has('DSN') };
      }
      return result;
    }
  }

  /** A new session to `address` as `target` says (AUTH password fetched now). */
  async #connect(
    mx: string,
    address: string,
    target: Target,
    servername: string | undefined,
  ): Promise<SmtpClientSession | ConnectFailure> {
    let auth: { username: string; password: string } | undefined;
    if (target.auth !== undefined) {
      try {
        auth = { username: target.auth.username, password: await target.auth.password() };
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        const o = localOutcome('auth-password-unreadable', 'auth', { peer: mx, reason });
        return {
          kind: 'rejected',
          reply: { code: o.code, enhanced: o.enhanced, lines: [`${o.enhanced} ${o.text}`], local: o },
          permanent: false,
          stage: 'auth',
        };
      }
    }
    return SmtpClientSession.connect({
      host: address,
      port: target.port,
      heloName: this.#o.hostname,
      tls: target.tls,
      ...(servername !== undefined ? { servername } : {}),
      timeouts: this.#o.outbound.timeouts,
      ...(target.implicitTls === true ? { implicitTls: true } : {}),
      ...(target.tlsOptions !== undefined ? { tlsOptions: target.tlsOptions } : {}),
      ...(auth !== undefined ? { auth } : {}),
      ...(target.lmtp === true ? { lmtp: true } : {}),
      ...(target.path !== undefined ? { path: target.path } : {}),
    });
  }
}

/** A reply as one line of text: "550 5.1.1 <bob@example.test>: no such user". */
export function replyText(r: ClientReply): string {
  return `${r.code} ${r.lines.join(' ')}`.trimEnd();
}

/**
 * The route to a relay host: its literal address, or its AAAA then A addresses (no MX lookup).
 * A relay that cannot be resolved is a temporary failure (a configuration or DNS problem to
 * fix, not a reason to bounce); one that is this server (address and port) is a loop.
 */
export async function resolveRelay(
  relay: RelayRoute,
  dns: DnsResolver,
  isOwnEndpoint: (ip: string) => boolean,
): Promise<MxRoute> {
  let addresses: string[];
  if (relay.path !== undefined) addresses = [relay.path];
  else if (net.isIP(relay.host) !== 0) addresses = [relay.host];
  else {
    const [v6, v4] = await Promise.all([dns.aaaa(relay.host), dns.a(relay.host)]);
    addresses = [
      ...new Set([v6, v4].flatMap((r) => (r.kind === 'ok' ? r.records.map((x) => x.address) : []))),
    ];
    if (addresses.length === 0) {
      const why = [v6, v4].map((r) => (r.kind === 'temp' ? r.reason : r.kind)).join(', ');
      return { kind: 'temp', reason: `relay host ${relay.label} has no usable address (${why})` };
    }
  }
  const own = relay.path !== undefined ? undefined : addresses.find(isOwnEndpoint);
  if (own !== undefined) return { kind: 'loop', reason: `relay ${relay.label} is this server (${own})` };
  return {
    kind: 'hosts',
    hosts: [{ name: relay.host.toLowerCase(), preference: 0, addresses }],
    implicit: true,
  };
}

/** The result for every recipient of a domain whose route is not a list of hosts; null for hosts. */
function routeResult(domain: string, route: MxRoute): Exclude<RemoteResult, { kind: 'delivered' }> | null {
  switch (route.kind) {
    case 'hosts':
      return null;
    case 'null-mx':
      return { kind: 'failed', outcome: localOutcome('null-mx', 'dns', { domain }) };
    case 'nxdomain':
      return { kind: 'failed', outcome: localOutcome('nxdomain', 'dns', { domain }) };
    case 'no-address':
      return { kind: 'failed', outcome: localOutcome('no-address', 'dns', { domain, reason: route.reason }) };
    case 'loop':
      return { kind: 'failed', outcome: localOutcome('loop', 'route', { domain }) };
    case 'temp':
      return {
        kind: 'deferred',
        outcome: localOutcome('dns-failure', 'dns', { domain, reason: route.reason }),
      };
    default: {
      const never: never = route;
      throw new Error(`unhandled route ${JSON.stringify(never)}`);
    }
  }
}

/** The outcome of a reply: the client's own (local), or the remote host's words as they came. */
function outcomeOf(
  reply: ClientReply,
  stage: OutcomeStage,
  peer: { host: string; address: string },
): Outcome {
  return reply.local ?? remoteOutcome(reply, stage, peer);
}
