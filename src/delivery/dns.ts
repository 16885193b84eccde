/**
 * The DNS lookups outbound delivery needs (MX, A, AAAA, TXT), and those `sterna diagnose` adds
 * (PTR, CNAME), as plain results instead of exceptions: a record set with its TTL, "no such domain", "no record of that type", or a
 * temporary failure to retry later.
 *
 * - NodeDnsResolver asks c-ares (node:dns promises Resolver), with the configured servers or the
 *   system's. Error codes are mapped per RFC 2308 (NXDOMAIN vs NODATA) and RFC 5321 4.2.5 /
 *   5.1 (a DNS failure that may clear up defers the message, it never bounces it).
 * - CachingResolver keeps answers for their TTL (RFC 1035 3.2.1, RFC 2181 8), negative answers
 *   for a short fixed time (RFC 2308 5; the SOA minimum is not visible through node:dns), and
 *   never keeps temporary failures.
 *
 * Node's resolveMx() and resolveTxt() do not expose TTLs, so MX and TXT answers are given
 * DEFAULT_MX_TTL_SECONDS (300 s): an MX change may be seen up to five minutes late, which only
 * delays the switch to the new hosts. A and AAAA carry their real TTLs ({ ttl: true }).
 *
 * Trust: answers come from the network and are untrusted; callers must treat names and
 * addresses as data (this module never throws on what a server sends).
 */
import dns from 'node:dns';

export type DnsResult<T> =
  | { kind: 'ok'; records: T; ttl: number }
  /** The name does not exist (NXDOMAIN): permanent. */
  | { kind: 'nxdomain' }
  /** The name exists but has no record of the asked type (NOERROR, empty answer): permanent. */
  | { kind: 'nodata' }
  /** SERVFAIL, REFUSED, timeout, network error …: try again later. */
  | { kind: 'temp'; reason: string };

/** One MX record as Node reports it; the null MX target "." is exchange "". */
export interface MxRecord {
  exchange: string;
  priority: number;
}

export interface AddressRecord {
  address: string;
  /** Seconds. */
  ttl: number;
}

/** The lookups delivery makes. Implementations never reject: every failure is a DnsResult. */
export interface DnsResolver {
  mx(name: string): Promise<DnsResult<MxRecord[]>>;
  a(name: string): Promise<DnsResult<AddressRecord[]>>;
  aaaa(name: string): Promise<DnsResult<AddressRecord[]>>;
  /** Each record is its list of character-strings (RFC 1035 3.3.14), not joined. */
  txt?(name: string): Promise<DnsResult<string[][]>>;
  /**
   * PTR records of a reverse name (RFC 1035 3.5 in-addr.arpa, RFC 3596 2.5 ip6.arpa), asked of
   * the DNS only (never /etc/hosts): the host names, without a trailing dot.
   */
  ptr?(name: string): Promise<DnsResult<string[]>>;
  /** The CNAME target of `name` (RFC 1034 3.6.2), when `name` is an alias. */
  cname?(name: string): Promise<DnsResult<string[]>>;
}

/** TTL given to MX and TXT answers, whose real TTL node:dns does not report. */
export const DEFAULT_MX_TTL_SECONDS = 300;

export interface NodeDnsResolverOptions {
  /**
   * DNS servers as node:dns accepts them ('192.0.2.53', '127.0.0.1:5353', '[2001:db8::53]:53').
   * Empty or absent: the system's resolvers (/etc/resolv.conf). An invalid entry throws here.
   */
  servers?: readonly string[];
  /** Time allowed for the first try of each query, in ms (c-ares doubles it on each retry). */
  timeoutMs?: number;
  /** How many times each server is tried. */
  tries?: number;
}

/** c-ares error codes (dns.NOTFOUND …) and what they mean for delivery. */
const NXDOMAIN_CODES = new Set<string>([
  dns.NOTFOUND,
  // A name c-ares cannot even encode (label over 63 octets, …) cannot exist in the DNS.
  dns.BADNAME,
]);
const NODATA_CODES = new Set<string>([dns.NODATA]);

const TEMP_REASONS: Record<string, string> = {
  [dns.SERVFAIL]: 'the DNS server failed (SERVFAIL)',
  [dns.REFUSED]: 'the DNS server refused the query (REFUSED)',
  [dns.TIMEOUT]: 'the DNS query timed out',
  [dns.CONNREFUSED]: 'could not contact the DNS server (connection refused)',
  [dns.FORMERR]: 'the DNS server found the query malformed (FORMERR)',
  [dns.NOTIMP]: 'the DNS server does not implement the query (NOTIMP)',
  [dns.BADRESP]: 'the DNS server sent a malformed answer',
  [dns.EOF]: 'the DNS server closed the connection',
  [dns.CANCELLED]: 'the DNS query was cancelled',
  [dns.DESTRUCTION]: 'the resolver was shut down',
};

function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') {
    return err.code;
  }
  return undefined;
}

/** Maps a rejection from node:dns to a DnsResult; anything unexpected counts as temporary. */
export function dnsErrorResult(err: unknown, type: string, name: string): DnsResult<never> {
  const code = errorCode(err);
  if (code !== undefined && NXDOMAIN_CODES.has(code)) return { kind: 'nxdomain' };
  if (code !== undefined && NODATA_CODES.has(code)) return { kind: 'nodata' };
  const why =
    code !== undefined
      ? (TEMP_REASONS[code] ?? `DNS error ${code}`)
      : `DNS error: ${err instanceof Error ? err.message : String(err)}`;
  return { kind: 'temp', reason: `${type} lookup for ${name}: ${why}` };
}

/** Lower case, no trailing dot: the form names are compared and cached in. */
export function normalizeDnsName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

function minTtl(records: readonly AddressRecord[]): number {
  return records.reduce((m, r) => Math.min(m, r.ttl), Number.POSITIVE_INFINITY);
}

/** DnsResolver over c-ares (node:dns promises Resolver). */
export class NodeDnsResolver implements DnsResolver {
  readonly #resolver: dns.promises.Resolver;

  constructor(opts: NodeDnsResolverOptions = {}) {
    const resolverOptions: dns.ResolverOptions = {};
    if (opts.timeoutMs !== undefined) resolverOptions.timeout = opts.timeoutMs;
    if (opts.tries !== undefined) resolverOptions.tries = opts.tries;
    this.#resolver = new dns.promises.Resolver(resolverOptions);
    if (opts.servers !== undefined && opts.servers.length > 0) this.#resolver.setServers([...opts.servers]);
  }

  async mx(name: string): Promise<DnsResult<MxRecord[]>> {
    try {
      const records = await this.#resolver.resolveMx(name);
      if (records.length === 0) return { kind: 'nodata' };
      return {
        kind: 'ok',
        records: records.map((r) => ({ exchange: r.exchange, priority: r.priority })),
        ttl: DEFAULT_MX_TTL_SECONDS,
      };
    } catch (err) {
      return dnsErrorResult(err, 'MX', name);
    }
  }

  async a(name: string): Promise<DnsResult<AddressRecord[]>> {
    try {
      const records = await this.#resolver.resolve4(name, { ttl: true });
      if (records.length === 0) return { kind: 'nodata' };
      return { kind: 'ok', records, ttl: minTtl(records) };
    } catch (err) {
      return dnsErrorResult(err, 'A', name);
    }
  }

  async aaaa(name: string): Promise<DnsResult<AddressRecord[]>> {
    try {
      const records = await this.#resolver.resolve6(name, { ttl: true });
      if (records.length === 0) return { kind: 'nodata' };
      return { kind: 'ok', records, ttl: minTtl(records) };
    } catch (err) {
      return dnsErrorResult(err, 'AAAA', name);
    }
  }

  async txt(name: string): Promise<DnsResult<string[][]>> {
    try {
      const records = await this.#resolver.resolveTxt(name);
      if (records.length === 0) return { kind: 'nodata' };
      return { kind: 'ok', records, ttl: DEFAULT_MX_TTL_SECONDS };
    } catch (err) {
      return dnsErrorResult(err, 'TXT', name);
    }
  }

  async ptr(name: string): Promise<DnsResult<string[]>> {
    try {
      const records = await this.#resolver.resolvePtr(name);
      if (records.length === 0) return { kind: 'nodata' };
      return { kind: 'ok', records: records.map(normalizeDnsName), ttl: DEFAULT_MX_TTL_SECONDS };
    } catch (err) {
      return dnsErrorResult(err, 'PTR', name);
    }
  }

  async cname(name: string): Promise<DnsResult<string[]>> {
    try {
      const records = await this.#resolver.resolveCname(name);
      if (records.length === 0) return { kind: 'nodata' };
      return { kind: 'ok', records: records.map(normalizeDnsName), ttl: DEFAULT_MX_TTL_SECONDS };
    } catch (err) {
      return dnsErrorResult(err, 'CNAME', name);
    }
  }

  /** Cancels every outstanding query (they resolve as temp failures). */
  cancel(): void {
    this.#resolver.cancel();
  }
}

export interface CachingResolverOptions {
  /** The clock, in milliseconds (Date.now in production, a fake in tests). */
  now: () => number;
  /** Most entries kept; the least recently used one goes first. Default 10,000. */
  maxEntries?: number;
  /** How long NXDOMAIN and NODATA answers are kept, in seconds. Default 60. */
  negativeTtlSeconds?: number;
  /** Longest time any answer is kept, whatever its TTL, in seconds. Default 3,600. */
  maxTtlSeconds?: number;
}

export const DEFAULT_CACHE_MAX_ENTRIES = 10_000;
export const DEFAULT_NEGATIVE_TTL_SECONDS = 60;
export const DEFAULT_CACHE_MAX_TTL_SECONDS = 3_600;

interface CacheEntry<T> {
  result: DnsResult<T>;
  /** Clock value (ms) after which the entry is stale. */
  expires: number;
}

interface CacheLimits {
  now: () => number;
  maxEntries: number;
  negativeTtlMs: number;
  maxTtlMs: number;
}

/** The cache of one record type: LRU-bounded entries plus the queries in flight. */
class TypeCache<T> {
  readonly #type: string;
  readonly #limits: CacheLimits;
  /** Insertion order is recency order: a hit moves the entry to the end. */
  readonly #entries = new Map<string, CacheEntry<T>>();
  readonly #inflight = new Map<string, Promise<DnsResult<T>>>();

  constructor(type: string, limits: CacheLimits) {
    this.#type = type;
    this.#limits = limits;
  }

  get size(): number {
    return this.#entries.size;
  }

  clear(): void {
    this.#entries.clear();
  }

  lookup(name: string, query: (name: string) => Promise<DnsResult<T>>): Promise<DnsResult<T>> {
    const key = normalizeDnsName(name);
    const now = this.#limits.now();
    const hit = this.#entries.get(key);
    if (hit !== undefined) {
      this.#entries.delete(key);
      if (hit.expires > now) {
        this.#entries.set(key, hit);
        const result = hit.result;
        return Promise.resolve(
          result.kind === 'ok' ? { ...result, ttl: Math.ceil((hit.expires - now) / 1000) } : result,
        );
      }
    }
    const pending = this.#inflight.get(key);
    if (pending !== undefined) return pending;
    const started = query(name)
      .catch((err: unknown) => dnsErrorResult(err, this.#type, name))
      .then((result) => {
        this.#inflight.delete(key);
        this.#store(key, result);
        return result;
      });
    this.#inflight.set(key, started);
    return started;
  }

  #store(key: string, result: DnsResult<T>): void {
    let lifetimeMs: number;
    if (result.kind === 'ok') lifetimeMs = Math.min(result.ttl * 1000, this.#limits.maxTtlMs);
    else if (result.kind === 'nxdomain' || result.kind === 'nodata') lifetimeMs = this.#limits.negativeTtlMs;
    else return; // temporary failures are never cached
    if (!(lifetimeMs > 0)) return;
    this.#entries.delete(key);
    while (this.#entries.size >= this.#limits.maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done === true) break;
      this.#entries.delete(oldest.value);
    }
    this.#entries.set(key, { result, expires: this.#limits.now() + lifetimeMs });
  }
}

/**
 * A TTL-respecting cache in front of another DnsResolver. Concurrent lookups of the same
 * (type, name) share one query. A cached positive answer is returned with its remaining TTL
 * (whole seconds, rounded up); the records themselves are returned as first received.
 * maxEntries bounds each record type's cache separately.
 */
export class CachingResolver implements DnsResolver {
  readonly #inner: DnsResolver;
  readonly #mx: TypeCache<MxRecord[]>;
  readonly #a: TypeCache<AddressRecord[]>;
  readonly #aaaa: TypeCache<AddressRecord[]>;
  readonly #txt: TypeCache<string[][]>;

  constructor(inner: DnsResolver, opts: CachingResolverOptions) {
    this.#inner = inner;
    const limits: CacheLimits = {
      now: opts.now,
      maxEntries: Math.max(1, opts.maxEntries ?? DEFAULT_CACHE_MAX_ENTRIES),
      negativeTtlMs: (opts.negativeTtlSeconds ?? DEFAULT_NEGATIVE_TTL_SECONDS) * 1000,
      maxTtlMs: (opts.maxTtlSeconds ?? DEFAULT_CACHE_MAX_TTL_SECONDS) * 1000,
    };
    this.#mx = new TypeCache('MX', limits);
    this.#a = new TypeCache('A', limits);
    this.#aaaa = new TypeCache('AAAA', limits);
    this.#txt = new TypeCache('TXT', limits);
  }

  /** Number of entries held, all types together (fresh ones and stale ones not yet evicted). */
  get size(): number {
    return this.#mx.size + this.#a.size + this.#aaaa.size + this.#txt.size;
  }

  mx(name: string): Promise<DnsResult<MxRecord[]>> {
    return this.#mx.lookup(name, (n) => this.#inner.mx(n));
  }

  a(name: string): Promise<DnsResult<AddressRecord[]>> {
    return this.#a.lookup(name, (n) => this.#inner.a(n));
  }

  aaaa(name: string): Promise<DnsResult<AddressRecord[]>> {
    return this.#aaaa.lookup(name, (n) => this.#inner.aaaa(n));
  }

  /** Delegates to the wrapped resolver; a temp failure if it cannot look up TXT records. */
  txt(name: string): Promise<DnsResult<string[][]>> {
    const inner = this.#inner;
    return this.#txt.lookup(name, (n) =>
      inner.txt !== undefined
        ? inner.txt(n)
        : Promise.resolve({ kind: 'temp', reason: `TXT lookup for ${n}: not supported by the resolver` }),
    );
  }

  /** Forgets every entry. */
  clear(): void {
    this.#mx.clear();
    this.#a.clear();
    this.#aaaa.clear();
    this.#txt.clear();
  }
}
