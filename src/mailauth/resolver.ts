/**
 * Sterna's resolver (src/delivery/dns.ts: the [dns] servers, cache and timeouts) in the shape
 * mailauth asks for: `resolver(name, rrtype)` resolving to node:dns style records, rejecting
 * with node:dns style error codes, which mailauth maps to results:
 *
 *   NXDOMAIN -> ENOTFOUND, NODATA -> ENODATA: "no record" (an SPF void lookup, RFC 7208 4.6.4;
 *   no DKIM key; no DMARC record);
 *   any temporary failure -> ETIMEOUT: temperror (RFC 7208 2.6.6, RFC 6376 6.1.2 TEMPFAIL,
 *   RFC 7489 6.6.3), never fail.
 *
 * Every check of one message shares a deadline: once it has passed, lookups fail at once as
 * temporary errors, so a message with many signatures or a long SPF include chain cannot hold
 * its session longer than the deadline, whatever the DNS does.
 *
 * PTR is not asked (dns.ts has no PTR lookup): the SPF "ptr" mechanism, which RFC 7208 5.5 says
 * SHOULD NOT be used, never matches, and does not count as a void lookup. Trust level: answers
 * are untrusted network data; this module only passes them on.
 */
import type { DNSResolver } from 'mailauth';
import type { DnsResolver, DnsResult } from '../delivery/dns.js';

/**
 * A failed lookup as node:dns would report it. Made without a stack trace: "no such domain" and
 * "no record" are the ordinary answers for most senders (no SPF, no DMARC record), two or more a
 * message, and capturing a stack for each cost about 1.5 % of the CPU of a benchmark run.
 * mailauth reads only `code` (and `message`).
 */
export class LookupError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super(message);
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.code = code;
  }
}

function unwrap<T>(result: DnsResult<T>, type: string, name: string): T {
  switch (result.kind) {
    case 'ok':
      return result.records;
    case 'nxdomain':
      throw new LookupError('ENOTFOUND', `${type} ${name}: no such domain`);
    case 'nodata':
      throw new LookupError('ENODATA', `${type} ${name}: no record`);
    case 'temp':
      throw new LookupError('ETIMEOUT', result.reason);
    default: {
      const never: never = result;
      throw new Error(`unhandled DNS result ${JSON.stringify(never)}`);
    }
  }
}

/** One lookup, as mailauth's SPF, DKIM, DMARC and ARC code expect it. */
async function lookup(dns: DnsResolver, name: string, type: string): Promise<unknown[]> {
  switch (type.toUpperCase()) {
    case 'TXT':
      if (dns.txt === undefined) throw new LookupError('ETIMEOUT', `TXT ${name}: not supported`);
      return unwrap(await dns.txt(name), 'TXT', name);
    case 'A':
      return unwrap(await dns.a(name), 'A', name).map((r) => r.address);
    case 'AAAA':
      return unwrap(await dns.aaaa(name), 'AAAA', name).map((r) => r.address);
    case 'MX':
      return unwrap(await dns.mx(name), 'MX', name);
    default:
      return []; // PTR and anything else: see the module comment
  }
}

/**
 * mailauth's resolver over `dns`, failing every lookup as a temporary error once `deadline`
 * (a clock value in ms) has passed, and cutting a lookup short at the deadline.
 */
export function mailauthResolver(dns: DnsResolver, deadline: number, now: () => number): DNSResolver {
  const resolve = async (name: string, type: string): Promise<unknown[]> => {
    const left = deadline - now();
    if (left <= 0) throw new LookupError('ETIMEOUT', `${type} ${name}: the checks ran out of time`);
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new LookupError('ETIMEOUT', `${type} ${name}: the checks ran out of time`)),
        left,
      );
    });
    try {
      return await Promise.race([lookup(dns, name, type), expired]);
    } finally {
      clearTimeout(timer);
    }
  };
  // mailauth's typings say string[][] | string[]; its MX users read node:dns MX objects
  // ({ exchange, priority }), which is what the MX branch returns.
  return resolve as DNSResolver;
}
