/**
 * Recipient verification for domains delivered over LMTP (RFC 2033), e.g. to Dovecot: before
 * Sterna answers RCPT for such a domain it asks the LMTP server whether it would take mail for
 * the address (MAIL FROM:<>, RCPT TO, RSET on a short session; Postfix's verify(8) does the same
 * with SMTP probes). So an unknown mailbox is refused in the SMTP dialogue, by the sending server,
 * instead of accepted and bounced later to a sender address that may be forged (backscatter).
 *
 * Answers are cached per address: a mailbox that exists for `positiveMs`, one that does not for
 * `negativeMs`; concurrent questions for one address share one probe. A server that cannot be
 * reached, or answers 4xx, gives "unavailable", never cached: the caller decides (tempfail or
 * accept, config key `[lmtp] verify_unavailable`).
 * Trust level: the address is the client's (already parsed by smtp/address.ts); the LMTP server
 * is the site's own.
 */
import net from 'node:net';
import type { ParsedReply } from '../smtp/reply-parser.js';
import type { DnsResolver } from './dns.js';
import { resolveRelay, type RelayRoute } from './remote.js';
import { SmtpClientSession, type ClientOptions } from './smtp-client.js';
import { isLost } from './smtp-wire.js';

export type ProbeAnswer =
  | { kind: 'exists' }
  /** The LMTP server refused the address for good (5xx): its reply. */
  | { kind: 'unknown'; reply: ParsedReply }
  /** Could not tell now: why, for the log. */
  | { kind: 'unavailable'; reason: string };

export interface LmtpProbeOptions {
  /** The LMTP route of each domain that is verified (lower-case domain → route). */
  routes: ReadonlyMap<string, RelayRoute>;
  dns: DnsResolver;
  /** Our name in LHLO. */
  hostname: string;
  timeouts: ClientOptions['timeouts'];
  positiveMs: number;
  negativeMs: number;
  now: () => number;
}

/** Cached answers at most; the oldest go first. */
const MAX_CACHED = 10_000;

export class LmtpProbe {
  readonly #o: LmtpProbeOptions;
  readonly #cache = new Map<string, { answer: ProbeAnswer; until: number }>();
  readonly #inFlight = new Map<string, Promise<ProbeAnswer>>();

  constructor(o: LmtpProbeOptions) {
    this.#o = o;
  }

  /** True when `domain`'s recipients are verified over LMTP. */
  covers(domain: string): boolean {
    return this.#o.routes.has(domain.toLowerCase());
  }

  /** Whether the LMTP server of `address`'s domain takes mail for it (`address` is local@domain). */
  verify(address: string, domain: string): Promise<ProbeAnswer> {
    const route = this.#o.routes.get(domain.toLowerCase());
    if (route === undefined) return Promise.resolve({ kind: 'exists' });
    const key = address.toLowerCase();
    const cached = this.#cache.get(key);
    if (cached !== undefined) {
      if (cached.until > this.#o.now()) return Promise.resolve(cached.answer);
      this.#cache.delete(key);
    }
    const running = this.#inFlight.get(key);
    if (running !== undefined) return running;
    const probe = this.#probe(route, address).then((answer) => {
      this.#inFlight.delete(key);
      const ttl =
        answer.kind === 'exists' ? this.#o.positiveMs : answer.kind === 'unknown' ? this.#o.negativeMs : 0;
      if (ttl > 0) {
        this.#cache.set(key, { answer, until: this.#o.now() + ttl });
        for (const oldest of this.#cache.keys()) {
          if (this.#cache.size <= MAX_CACHED) break;
          this.#cache.delete(oldest);
        }
      }
      return answer;
    });
    this.#inFlight.set(key, probe);
    return probe;
  }

  async #probe(route: RelayRoute, address: string): Promise<ProbeAnswer> {
    const resolved = await resolveRelay(route, this.#o.dns, () => false);
    if (resolved.kind !== 'hosts') return { kind: 'unavailable', reason: `no route to ${route.label}` };
    const host = resolved.hosts[0];
    const target = host?.addresses[0];
    if (host === undefined || target === undefined) {
      return { kind: 'unavailable', reason: `no address for ${route.label}` };
    }
    const session = await SmtpClientSession.connect({
      host: target,
      port: route.port,
      heloName: this.#o.hostname,
      tls: 'none',
      timeouts: this.#o.timeouts,
      lmtp: true,
      ...(route.path !== undefined ? { path: route.path } : {}),
      ...(net.isIP(host.name) === 0 && route.path === undefined ? { servername: host.name } : {}),
    });
    if (!(session instanceof SmtpClientSession)) {
      const why =
        session.kind === 'rejected'
          ? `${session.reply.code} ${session.reply.lines.join(' ')}`
          : session.reason;
      return { kind: 'unavailable', reason: `${route.label}: ${why}` };
    }
    try {
      const r = await session.probe(address);
      if (isLost(r)) return { kind: 'unavailable', reason: `${route.label}: ${r.lost}` };
      if (r.code >= 200 && r.code < 300) return { kind: 'exists' };
      if (r.code >= 500) return { kind: 'unknown', reply: r };
      return { kind: 'unavailable', reason: `${route.label} answered ${r.code} ${r.lines.join(' ')}` };
    } finally {
      await session.quit();
    }
  }
}
