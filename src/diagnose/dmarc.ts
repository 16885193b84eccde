/**
 * The domain's DMARC record at _dmarc.DOMAIN (RFC 7489 6.1): one record (6.6.3: several means
 * none applies), a tag list starting with v=DMARC1 (6.4), a valid p= (required, 6.3) and sp=,
 * aggregate reports asked for (rua=, mailto: URIs, 6.2). Only the domain itself is looked at, not
 * its organizational domain. Trust: the record is untrusted DNS data, quoted as text.
 */
import type { DomainContext } from './context.js';
import { finding, type Finding } from './finding.js';
import { parseTagList, recordsOfVersion, tagValue, txtStrings } from './txt-records.js';

const POLICIES = ['none', 'quarantine', 'reject'];

export async function checkDmarc(ctx: DomainContext): Promise<Finding[]> {
  const name = `_dmarc.${ctx.domain}`;
  const suggested = `publish: ${name}. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@${ctx.domain}"`;
  const txt = txtStrings(await ctx.dns.txt(name));
  if (!Array.isArray(txt)) {
    return [
      finding(
        'dmarc',
        'warning',
        'dmarc.unknown',
        name,
        `could not check: ${txt.failed}`,
        'check [dns] servers and try again',
      ),
    ];
  }
  const records = recordsOfVersion(txt, /^v\s*=\s*DMARC1\s*(;|$)/i);
  if (records.length === 0) {
    return [
      finding(
        'dmarc',
        'warning',
        'dmarc.missing',
        name,
        `${ctx.domain} publishes no DMARC record: receivers have no policy for mail that fails SPF and DKIM, and Gmail and Yahoo require one of bulk senders`,
        `${suggested} (p=none only asks for reports; move to p=quarantine or p=reject once they show only your own servers)`,
      ),
    ];
  }
  if (records.length > 1) {
    return [
      finding(
        'dmarc',
        'error',
        'dmarc.multiple',
        name,
        `${records.length} DMARC records at ${name}: RFC 7489 6.6.3 says receivers then apply none of them`,
        'keep one record',
      ),
    ];
  }
  const record = records[0] ?? '';
  const bad = (message: string): Finding[] => [
    finding('dmarc', 'error', 'dmarc.syntax', name, message, suggested),
  ];
  const tags = parseTagList(record);
  if (tags === null) return bad(`the DMARC record "${record}" is not a tag=value list (RFC 7489 6.4)`);
  const p = tagValue(tags, 'p');
  if (p === undefined || !POLICIES.includes(p.toLowerCase())) {
    return bad(
      `the DMARC record "${record}" has ${p === undefined ? 'no p= tag' : `p=${p}`}; p= must be none, quarantine or reject (RFC 7489 6.3), or receivers ignore the record`,
    );
  }
  const sp = tagValue(tags, 'sp');
  if (sp !== undefined && !POLICIES.includes(sp.toLowerCase())) {
    return bad(
      `the DMARC record "${record}" has sp=${sp}; it must be none, quarantine or reject (RFC 7489 6.3)`,
    );
  }
  const pct = tagValue(tags, 'pct');
  if (pct !== undefined && !(/^\d{1,3}$/.test(pct) && Number(pct) <= 100)) {
    return bad(
      `the DMARC record "${record}" has pct=${pct}; it must be a whole number from 0 to 100 (RFC 7489 6.3)`,
    );
  }
  const rua = tagValue(tags, 'rua');
  const policy = p.toLowerCase() === 'none' ? 'p=none, which only asks for reports' : `p=${p.toLowerCase()}`;
  if (rua === undefined || rua === '') {
    return [
      finding(
        'dmarc',
        'warning',
        'dmarc.no-rua',
        name,
        `the DMARC record of ${ctx.domain} (${policy}) asks for no aggregate reports (rua=): you will not learn who sends as ${ctx.domain}, or which of your mail fails`,
        `add rua=mailto:postmaster@${ctx.domain}: ${name}. IN TXT "${record.replace(/;?\s*$/, '')}; rua=mailto:postmaster@${ctx.domain}"`,
      ),
    ];
  }
  const uris = rua.split(',').map((u) => u.trim());
  const wrong = uris.filter((u) => !/^mailto:[^@\s]+@[^@\s]+$/i.test(u.replace(/!\d+[kmgt]?$/i, '')));
  if (wrong.length > 0) {
    return bad(
      `the DMARC record's rua= has ${wrong.map((w) => `"${w}"`).join(', ')}: report addresses must be mailto: URIs (RFC 7489 6.2)`,
    );
  }
  return [
    finding('dmarc', 'ok', 'dmarc.ok', name, `DMARC ${policy}, aggregate reports to ${uris.join(', ')}`),
  ];
}
