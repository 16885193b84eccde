/**
 * The domain's SPF record (RFC 7208): exactly one (4.5), valid, within the DNS lookup limits
 * (4.6.4), not "+all", and allowing each public address: mailauth evaluates the record for a
 * synthetic message from postmaster@DOMAIN sent from that address, through Sterna's resolver,
 * as a receiver would. Trust: the record is untrusted DNS data, quoted as text.
 */
import { spf } from 'mailauth';
import { mailauthResolver } from '../mailauth/resolver.js';
import { spfMechanism } from './addresses.js';
import type { DomainContext } from './context.js';
import { finding, type Finding } from './finding.js';
import { recordsOfVersion, txtStrings } from './txt-records.js';

/** Time allowed for evaluating the record for one address, every lookup included. */
const SPF_DEADLINE_MS = 20_000;

/** `record` with the mechanisms for `addresses` added before its "all" or "redirect=" term (or at its end). */
export function withAddresses(record: string, addresses: readonly string[]): string {
  const terms = record.trim().split(/\s+/);
  const add = addresses.map(spfMechanism).filter((m) => !terms.includes(m));
  const at = terms.findIndex((t) => /^[+?~-]?all$/i.test(t) || /^redirect=/i.test(t));
  if (at === -1) return [...terms, ...add].join(' ');
  return [...terms.slice(0, at), ...add, ...terms.slice(at)].join(' ');
}

/** " (N of 10 DNS lookups)" from mailauth's result, which its typings do not declare; or "". */
function lookupCount(res: object): string {
  const l: unknown = 'lookups' in res ? res.lookups : undefined;
  if (typeof l !== 'object' || l === null || !('count' in l) || !('limit' in l)) return '';
  return typeof l.count === 'number' && typeof l.limit === 'number'
    ? ` (${l.count} of ${l.limit} DNS lookups)`
    : '';
}

export async function checkSpf(ctx: DomainContext): Promise<Finding[]> {
  const { domain, dns } = ctx;
  const fresh = `v=spf1 ${ctx.addresses.map(spfMechanism).join(' ')} -all`.replace(/ {2}/, ' ');
  const txt = txtStrings(await dns.txt(domain));
  if (!Array.isArray(txt)) {
    return [
      finding(
        'spf',
        'warning',
        'spf.unknown',
        domain,
        `could not check: ${txt.failed}`,
        'check [dns] servers and try again',
      ),
    ];
  }
  const records = recordsOfVersion(txt, /^v=spf1(\s|$)/i);
  if (records.length === 0) {
    return [
      finding(
        'spf',
        'error',
        'spf.missing',
        domain,
        `${domain} publishes no SPF record: receivers cannot tell that this server may send its mail, and Gmail, Outlook and others refuse or junk mail that is not authenticated`,
        `publish: ${domain}. IN TXT "${fresh}"`,
      ),
    ];
  }
  if (records.length > 1) {
    return [
      finding(
        'spf',
        'error',
        'spf.multiple',
        domain,
        `${domain} publishes ${records.length} SPF records (${records.map((r) => `"${r}"`).join(', ')}); RFC 7208 4.5 makes that a permanent error, so no mail from ${domain} passes SPF`,
        `keep one record that lists every sender, e.g. publish only: ${domain}. IN TXT "${withAddresses(records[0] ?? fresh, ctx.addresses)}"`,
      ),
    ];
  }
  const record = records[0] ?? '';
  const findings: Finding[] = [];
  if (/(^|\s)\+?all(\s|$)/i.test(record)) {
    findings.push(
      finding(
        'spf',
        'error',
        'spf.pass-all',
        domain,
        `the SPF record of ${domain} ends in "+all": it allows every address on the Internet to send as ${domain}, and receivers give it no weight`,
        `end it in "-all" (or "~all" while other senders are being added): ${withAddresses(record.replace(/(^|\s)\+?all(\s|$)/i, '$1-all$2'), ctx.addresses)}`,
      ),
    );
  }
  const notAllowed: string[] = [];
  for (const ip of ctx.addresses) {
    const deadline = Date.now() + SPF_DEADLINE_MS;
    const res = await spf({
      sender: `postmaster@${domain}`,
      ip,
      helo: ctx.hostname,
      mta: ctx.hostname,
      resolver: mailauthResolver(dns, deadline, Date.now),
    });
    const result = res.status.result;
    const detail = (res.status.comment ?? result).replace(/^[^:]*: /, '');
    const lookups = lookupCount(res);
    if (result === 'pass') {
      findings.push(
        finding('spf', 'ok', 'spf.pass', domain, `SPF of ${domain} allows ${ip}: "${record}"${lookups}`),
      );
    } else if (result === 'permerror') {
      const tooMany = /too many dns/i.test(detail);
      findings.push(
        finding(
          'spf',
          'error',
          tooMany ? 'spf.too-many-lookups' : 'spf.invalid',
          domain,
          tooMany
            ? `the SPF record of ${domain} needs more than 10 DNS lookups (RFC 7208 4.6.4): receivers stop with a permanent error, and no mail passes SPF`
            : `the SPF record of ${domain} is invalid (${detail}): receivers stop with a permanent error, and no mail passes SPF`,
          tooMany
            ? 'use fewer include:, a, mx, exists and redirect= terms: replace some by the ip4:/ip6: ranges they stand for'
            : `correct the record, e.g. ${domain}. IN TXT "${fresh}"`,
        ),
      );
      break;
    } else if (result === 'temperror') {
      findings.push(
        finding(
          'spf',
          'warning',
          'spf.unknown',
          domain,
          `could not check ${ip}: ${detail}`,
          'check [dns] servers and try again',
        ),
      );
    } else {
      notAllowed.push(`${ip} (${result})`);
    }
  }
  if (notAllowed.length > 0) {
    findings.push(
      finding(
        'spf',
        'error',
        'spf.not-allowed',
        domain,
        `the SPF record of ${domain} does not allow ${notAllowed.join(', ')}: mail this server sends for ${domain} fails SPF ("${record}")`,
        `publish: ${domain}. IN TXT "${withAddresses(record, ctx.addresses)}"`,
      ),
    );
  }
  return findings;
}
