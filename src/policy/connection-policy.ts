/**
 * The policy questions of one SMTP session, answered in order (docs/abuse.md):
 *
 * - connect: client allow/deny lists (a deny: 554 5.7.1), connections per minute (421 4.7.0),
 *   and the DNSBL lookups of the client started (awaited at RCPT);
 * - HELO: HELO lists (550 5.7.1);
 * - MAIL: sender lists (550 5.7.1), the RHSBL lookups started, messages per hour (450 4.7.1);
 * - RCPT (after the relay decision): recipient lists, the DNSBL score (554 5.7.1 naming the
 *   list), greylisting (451 4.7.1), recipients per hour (450 4.7.1).
 *
 * An allow skips what follows it: a client allow skips everything but the per-user limits; a
 * HELO or sender allow skips the later deny lists, DNSBL and greylisting of the transaction; a
 * recipient allow skips DNSBL and greylisting for that recipient. Authenticated clients and
 * trusted networks skip DNSBL and greylisting; a DNSWL listing (negative weight) skips
 * greylisting. A failing state store answers by [state] on_error: 451 4.3.0 (421 at connect)
 * or let through. One object per connection, built by the session hooks (server/app.ts).
 * Trust: faces untrusted client data (names, addresses) that is only compared and counted.
 */
import type { ListenerKind } from '../message/envelope.js';
import type { Logger } from '../observability/log.js';
import { reply, type Reply } from '../smtp/replies.js';
import type { PolicyContext, PolicyVerdict, RecipientVerdict } from '../smtp/session.js';
import { NOT_LISTED, type Dnsbl, type DnsblResult } from './dnsbl.js';
import type { Greylist } from './greylist.js';
import type { PolicyLists } from './lists.js';
import type { RateLimits, RateRefusal } from './rate-limits.js';

/** What every connection's policy shares; built once (server/app.ts). */
export interface PolicyServices {
  lists: PolicyLists;
  dnsbl: Dnsbl;
  dnsblListeners: readonly ListenerKind[];
  /** Null when greylisting is off. */
  greylist: Greylist | null;
  greylistListeners: readonly ListenerKind[];
  rates: RateLimits;
  /** [relay] trusted_networks: no DNSBL, no greylisting. */
  trusted(ip: string): boolean;
  onStoreError: 'tempfail' | 'accept';
  hostname: string;
  /** Told every refusal by its check (metrics: sterna_policy_refusals_total). */
  onRefusal?: (check: string) => void;
}

const CONTINUE: PolicyVerdict = { kind: 'continue' };

const SCOPE_WORDS: Record<RateRefusal['scope'], string> = {
  user: 'user',
  sender_domain: 'sender domain',
  network: 'network',
  connection: 'network',
};

function senderDomain(sender: string): string {
  const at = sender.lastIndexOf('@');
  return at < 0 ? '' : sender.slice(at + 1).toLowerCase();
}

export class ConnectionPolicy {
  readonly #s: PolicyServices;
  readonly #log: Logger;
  readonly #listener: ListenerKind;
  #clientAllowed = false;
  #heloAllowed = false;
  #senderAllowed = false;
  #clientDnsbl: Promise<DnsblResult> | null = null;
  #senderDnsbl: Promise<DnsblResult> | null = null;

  constructor(services: PolicyServices, log: Logger, listener: ListenerKind) {
    this.#s = services;
    this.#log = log;
    this.#listener = listener;
  }

  async connect(ctx: PolicyContext): Promise<PolicyVerdict> {
    const s = this.#s;
    const ip = ctx.client.ip;
    const hit = s.lists.check('client', ip);
    if (hit?.action === 'deny') {
      this.#log.warn({ list: hit.list }, 'client refused by a deny list');
      return {
        kind: 'refuse',
        reply: reply('CLIENT_DENIED', { hostname: s.hostname, reason: hit.reason }),
        reason: 'list',
      };
    }
    if (hit?.action === 'allow') {
      this.#clientAllowed = true;
      this.#log.info({ list: hit.list }, 'client on an allow list');
      return { kind: 'continue', allowListed: true };
    }
    const rate = await this.#guard(() => s.rates.connection(ip), true);
    if (rate !== null && rate.kind === 'refused') return this.#rateRefusal(rate, 'RATE_LIMIT_CONNECTIONS');
    if (rate === null && s.onStoreError === 'tempfail') return this.#storeFailure(true);
    if (s.dnsbl.hasClientZones && s.dnsblListeners.includes(this.#listener) && !s.trusted(ip)) {
      this.#clientDnsbl = s.dnsbl.lookupClient(ip);
    }
    return CONTINUE;
  }

  helo(ctx: PolicyContext): Promise<PolicyVerdict> {
    this.#heloAllowed = false;
    if (this.#clientAllowed) return Promise.resolve(CONTINUE);
    const hit = this.#s.lists.check('helo', ctx.helo);
    if (hit?.action === 'allow') this.#heloAllowed = true;
    if (hit?.action === 'deny') return Promise.resolve(this.#listRefusal(hit.reason, hit.list));
    return Promise.resolve(CONTINUE);
  }

  async sender(sender: string, ctx: PolicyContext): Promise<PolicyVerdict> {
    const s = this.#s;
    this.#senderAllowed = false;
    this.#senderDnsbl = null;
    const domain = senderDomain(sender);
    if (!this.#clientAllowed) {
      const hit = s.lists.check('sender', sender);
      if (hit?.action === 'allow') this.#senderAllowed = true;
      if (hit?.action === 'deny' && !this.#heloAllowed) return this.#listRefusal(hit.reason, hit.list);
      if (
        s.dnsbl.hasSenderZones &&
        !this.#heloAllowed &&
        !this.#senderAllowed &&
        ctx.authUser === undefined &&
        s.dnsblListeners.includes(this.#listener) &&
        !s.trusted(ctx.client.ip)
      ) {
        this.#senderDnsbl = s.dnsbl.lookupSender(domain);
      }
    }
    const rate = await this.#guard(
      () =>
        s.rates.messages({
          user: ctx.authUser,
          ...(this.#clientAllowed ? {} : { senderDomain: domain, ip: ctx.client.ip }),
        }),
      false,
    );
    if (rate === null) return s.onStoreError === 'tempfail' ? this.#storeFailure(false) : CONTINUE;
    if (rate.kind === 'refused') return this.#rateRefusal(rate, 'RATE_LIMIT_MESSAGES');
    return CONTINUE;
  }

  /** The policy part of the RCPT decision, asked after the relay decision accepted. */
  async recipient(
    rcpt: string,
    ctx: { authUser: string | undefined; ip: string; sender: string },
  ): Promise<RecipientVerdict> {
    const s = this.#s;
    let rcptAllowed = false;
    if (!this.#clientAllowed) {
      const hit = s.lists.check('recipient', rcpt);
      if (hit?.action === 'allow') rcptAllowed = true;
      if (hit?.action === 'deny' && !this.#heloAllowed && !this.#senderAllowed) {
        return this.#reject(this.#listRefusal(hit.reason, hit.list));
      }
    }
    const exempt =
      this.#clientAllowed ||
      this.#heloAllowed ||
      this.#senderAllowed ||
      rcptAllowed ||
      ctx.authUser !== undefined ||
      s.trusted(ctx.ip);
    let dnswl = false;
    if (!exempt) {
      const [client, sender] = await Promise.all([
        this.#clientDnsbl ?? NOT_LISTED,
        this.#senderDnsbl ?? NOT_LISTED,
      ]);
      const all: DnsblResult = {
        score: client.score + sender.score,
        listings: [...client.listings, ...sender.listings],
      };
      dnswl = all.listings.some((l) => l.weight < 0);
      const top = s.dnsbl.blocking(all);
      if (top !== null) {
        this.#log.warn(
          { rcpt, score: all.score, listings: all.listings },
          'refused: DNSBL score at the threshold',
        );
        const r =
          top.type === 'client'
            ? reply('DNSBL_CLIENT_LISTED', { ip: ctx.ip, zone: top.zone })
            : reply('DNSBL_SENDER_LISTED', { domain: senderDomain(ctx.sender), zone: top.zone });
        s.onRefusal?.('dnsbl');
        return { kind: 'reject', reply: r };
      }
      if (all.listings.length > 0)
        this.#log.info({ score: all.score, listings: all.listings }, 'DNSBL listings below the threshold');
    }
    const grey = s.greylist;
    if (grey !== null && !exempt && !dnswl && s.greylistListeners.includes(this.#listener)) {
      const v = await this.#guard(() => grey.check(ctx.ip, ctx.sender, rcpt), false);
      if (v === null) {
        if (s.onStoreError === 'tempfail') return this.#reject(this.#storeFailure(false));
      } else if (v.kind === 'defer') {
        const seconds = Math.max(1, Math.ceil(v.retryInMs / 1000));
        this.#log.info({ rcpt, sender: ctx.sender, retryIn: seconds, first: v.first }, 'greylisted');
        s.onRefusal?.('greylist');
        return { kind: 'reject', reply: reply('GREYLISTED', { seconds }) };
      } else if (v.why === 'retried') {
        this.#log.info({ rcpt, sender: ctx.sender }, 'greylisting passed');
      }
    }
    const rate = await this.#guard(
      () =>
        s.rates.recipients({
          user: ctx.authUser,
          ...(this.#clientAllowed ? {} : { senderDomain: senderDomain(ctx.sender), ip: ctx.ip }),
        }),
      false,
    );
    if (rate === null) {
      return s.onStoreError === 'tempfail' ? this.#reject(this.#storeFailure(false)) : { kind: 'accept' };
    }
    if (rate.kind === 'refused') return this.#reject(this.#rateRefusal(rate, 'RATE_LIMIT_RECIPIENTS'));
    return { kind: 'accept' };
  }

  #reject(v: PolicyVerdict): RecipientVerdict {
    if (v.kind === 'refuse') this.#s.onRefusal?.(v.reason);
    return v.kind === 'refuse' ? { kind: 'reject', reply: v.reply } : { kind: 'accept' };
  }

  #listRefusal(reason: string, list: string): PolicyVerdict {
    this.#log.warn({ list }, 'refused by a deny list');
    return { kind: 'refuse', reply: reply('POLICY_DENIED', { reason }), reason: 'list' };
  }

  #rateRefusal(
    r: RateRefusal,
    id: 'RATE_LIMIT_CONNECTIONS' | 'RATE_LIMIT_MESSAGES' | 'RATE_LIMIT_RECIPIENTS',
  ): PolicyVerdict {
    this.#log.warn(
      { limit: r.name, max: r.limit, scope: r.scope, subject: r.subject, retryAfter: r.retryAfterSeconds },
      'rate limit reached',
    );
    const r2: Reply = reply(id, {
      hostname: this.#s.hostname,
      limit: r.limit,
      name: r.name,
      scope: SCOPE_WORDS[r.scope],
      subject: r.subject,
      seconds: r.retryAfterSeconds,
    });
    return { kind: 'refuse', reply: r2, reason: 'rate-limit' };
  }

  #storeFailure(atConnect: boolean): PolicyVerdict {
    return {
      kind: 'refuse',
      reply: atConnect
        ? reply('POLICY_STATE_UNAVAILABLE_CONNECT', { hostname: this.#s.hostname })
        : reply('POLICY_STATE_UNAVAILABLE'),
      reason: 'state-unavailable',
    };
  }

  /** Runs a store operation; null (logged) when the store failed. */
  async #guard<T>(fn: () => Promise<T>, atConnect: boolean): Promise<T | null> {
    try {
      return await fn();
    } catch (err) {
      this.#log.error({ err, atConnect, onError: this.#s.onStoreError }, 'policy state store failed');
      return null;
    }
  }
}
