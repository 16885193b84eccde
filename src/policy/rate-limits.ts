/**
 * Rate limits ([rate_limits], docs/abuse.md): new connections per minute per client network;
 * messages and recipients per hour per authenticated user, per sender domain and per client
 * network; per-user and per-group limits that override the per-user defaults. One rule for
 * every way in: the SMTP listeners, the HTTP API and the maildrop all count here.
 *
 * Counts live in the state store (src/state/), so nodes that share Redis share the counts,
 * and a take is all or nothing over the scopes that apply: a refused message counts nowhere.
 * Keys: `rl:m:conn:<network>` (minute window), `rl:h:<msg|rcpt>:<user|domain|net>:<subject>`
 * (hour window). The client network is clientNetworkKey's (IPv4 address, IPv6 /64).
 * Trust: subjects are client data, used only as parts of store keys.
 */
import type { Config } from '../config/schema.js';
import type { CounterRule, CounterWindow, StateStore } from '../state/store.js';
import { clientNetworkKey } from './client-network.js';

export type RateLimitsConfig = Config['rate_limits'];
export type RateScope = 'user' | 'sender_domain' | 'network';
type Counted = 'messages' | 'recipients';

/** A limit that was reached: the config key that sets it, what it counts, and when to come back. */
export interface RateRefusal {
  kind: 'refused';
  /** The config key, e.g. "messages_per_hour_per_user", or "users.<u>.messages_per_hour". */
  name: string;
  limit: number;
  scope: RateScope | 'connection';
  /** The user, domain or network the count is for. */
  subject: string;
  retryAfterSeconds: number;
}

export type RateVerdict = { kind: 'ok' } | RateRefusal;

export interface RateSubject {
  /** The authenticated user (SMTP AUTH, the API key's user, the maildrop's local user). */
  user?: string | undefined;
  /** The sender's domain ("" or undefined: the null sender, not counted per domain). */
  senderDomain?: string | undefined;
  /** The client's IP address. */
  ip?: string | undefined;
}

/** One counter as `sterna limits` shows it. */
export interface RateCount {
  key: string;
  what: 'connections per minute' | 'messages per hour' | 'recipients per hour';
  scope: RateScope | 'connection';
  subject: string;
  count: number;
  /** 0: no limit applies (counted because another scope's limit is on). */
  limit: number;
}

const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;

const SCOPE_KEY: Record<RateScope, string> = { user: 'user', sender_domain: 'dom', network: 'net' };
const KEY_SCOPE: Record<string, RateScope> = { user: 'user', dom: 'sender_domain', net: 'network' };

export class RateLimits {
  readonly #cfg: RateLimitsConfig;
  readonly #store: StateStore;

  constructor(cfg: RateLimitsConfig, store: StateStore) {
    this.#cfg = cfg;
    this.#store = store;
  }

  #window(ms: number): CounterWindow {
    return { ms, kind: this.#cfg.window };
  }

  /** Counts a new connection from ip; refused beyond connections_per_minute. */
  async connection(ip: string): Promise<RateVerdict> {
    const limit = this.#cfg.connections_per_minute;
    if (limit === 0) return { kind: 'ok' };
    const network = clientNetworkKey(ip);
    const r = await this.#store.take([{ key: `rl:m:conn:${network}`, limit }], 1, this.#window(MINUTE_MS));
    if (r.ok) return { kind: 'ok' };
    return {
      kind: 'refused',
      name: 'connections_per_minute',
      limit,
      scope: 'connection',
      subject: network,
      retryAfterSeconds: Math.ceil(r.retryAfterMs / 1000),
    };
  }

  /** Counts one message (a transaction) for every scope that applies. */
  messages(subject: RateSubject, amount = 1): Promise<RateVerdict> {
    return this.#take('messages', subject, amount);
  }

  /** Counts recipients for every scope that applies. */
  recipients(subject: RateSubject, amount = 1): Promise<RateVerdict> {
    return this.#take('recipients', subject, amount);
  }

  /** A user's limits and where they come from: their own entry, a group, or the defaults. */
  userLimit(user: string, counted: Counted): { limit: number; name: string } {
    const field = counted === 'messages' ? 'messages_per_hour' : 'recipients_per_hour';
    const own = this.#cfg.users[user]?.[field];
    if (own !== undefined) return { limit: own, name: `users."${user}".${field}` };
    const lower = user.toLowerCase();
    const domain = lower.slice(lower.lastIndexOf('@') + 1);
    for (const [name, g] of Object.entries(this.#cfg.groups)) {
      const member = g.members.some((m) => m.toLowerCase() === lower || m.toLowerCase() === `@${domain}`);
      if (member && g[field] !== undefined) return { limit: g[field], name: `groups.${name}.${field}` };
    }
    return { limit: this.#cfg[`${field}_per_user`], name: `${field}_per_user` };
  }

  #rules(
    counted: Counted,
    s: RateSubject,
  ): { rule: CounterRule; name: string; scope: RateScope; subject: string }[] {
    const c = this.#cfg;
    const what = counted === 'messages' ? 'msg' : 'rcpt';
    const out: { rule: CounterRule; name: string; scope: RateScope; subject: string }[] = [];
    const add = (scope: RateScope, subject: string, limit: number, name: string): void => {
      if (limit > 0)
        out.push({
          rule: { key: `rl:h:${what}:${SCOPE_KEY[scope]}:${subject}`, limit },
          name,
          scope,
          subject,
        });
    };
    if (s.user !== undefined) {
      const u = this.userLimit(s.user, counted);
      add('user', s.user.toLowerCase(), u.limit, u.name);
    }
    if (s.senderDomain !== undefined && s.senderDomain !== '') {
      add(
        'sender_domain',
        s.senderDomain.toLowerCase(),
        c[`${counted}_per_hour_per_sender_domain`],
        `${counted}_per_hour_per_sender_domain`,
      );
    }
    if (s.ip !== undefined) {
      add(
        'network',
        clientNetworkKey(s.ip),
        c[`${counted}_per_hour_per_network`],
        `${counted}_per_hour_per_network`,
      );
    }
    return out;
  }

  async #take(counted: Counted, s: RateSubject, amount: number): Promise<RateVerdict> {
    const rules = this.#rules(counted, s);
    if (rules.length === 0) return { kind: 'ok' };
    const r = await this.#store.take(
      rules.map((x) => x.rule),
      amount,
      this.#window(HOUR_MS),
    );
    if (r.ok) return { kind: 'ok' };
    const hit = rules[r.refused ?? 0];
    if (hit === undefined) throw new Error('rate limit refused by an unknown rule');
    return {
      kind: 'refused',
      name: hit.name,
      limit: hit.rule.limit,
      scope: hit.scope,
      subject: hit.subject,
      retryAfterSeconds: Math.ceil(r.retryAfterMs / 1000),
    };
  }

  /** Every counter above zero, with the limit that applies to it now (`sterna limits`). */
  async counts(): Promise<RateCount[]> {
    const out: RateCount[] = [];
    for (const c of await this.#store.counters('rl:m:conn:', this.#window(MINUTE_MS))) {
      const subject = c.key.slice('rl:m:conn:'.length);
      out.push({
        key: c.key,
        what: 'connections per minute',
        scope: 'connection',
        subject,
        count: c.count,
        limit: this.#cfg.connections_per_minute,
      });
    }
    for (const c of await this.#store.counters('rl:h:', this.#window(HOUR_MS))) {
      const m = /^rl:h:(msg|rcpt):(user|dom|net):(.*)$/.exec(c.key);
      if (m === null) continue;
      const counted: Counted = m[1] === 'msg' ? 'messages' : 'recipients';
      const scope = KEY_SCOPE[m[2] ?? ''] ?? 'network';
      const subject = m[3] ?? '';
      const limit =
        scope === 'user'
          ? this.userLimit(subject, counted).limit
          : this.#cfg[`${counted}_per_hour_per_${scope}`];
      out.push({ key: c.key, what: `${counted} per hour`, scope, subject, count: c.count, limit });
    }
    return out;
  }
}
