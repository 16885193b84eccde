/**
 * DMARC aggregate reports (RFC 7489 7.2) as data and as XML: the evaluations of one period are
 * grouped by policy domain, and within a domain into rows of identical source IP, disposition,
 * aligned results, override reasons, identifiers and auth results, each with its count; the XML
 * follows the schema of RFC 7489 Appendix C (feedback: version, report_metadata, policy_published,
 * record+). Pure. Trust level: domains, selectors and addresses come from untrusted mail and DNS:
 * every text is XML-escaped, and characters XML 1.0 cannot carry are dropped.
 */
import type { DmarcEvaluation } from './dmarc-report-record.js';

export interface ReportRow {
  ip: string;
  count: number;
  disposition: DmarcEvaluation['disposition'];
  dkimAligned: DmarcEvaluation['dkimAligned'];
  spfAligned: DmarcEvaluation['spfAligned'];
  reasons: DmarcEvaluation['reasons'];
  from: string;
  dkim: DmarcEvaluation['dkim'];
  spf: DmarcEvaluation['spf'];
}

/** One report: one policy domain, one period. */
export interface DomainReport {
  /** policy_published, as last seen in the period. */
  policy: DmarcEvaluation['policy'];
  rows: ReportRow[];
  /** Messages in the report (the sum of the counts). */
  messages: number;
}

/**
 * Groups a period's evaluations by policy domain and row. Memory grows with the number of
 * distinct rows, not with the number of messages.
 */
export async function aggregate(
  evaluations: AsyncIterable<DmarcEvaluation>,
): Promise<Map<string, DomainReport>> {
  const byDomain = new Map<string, { policy: DmarcEvaluation['policy']; rows: Map<string, ReportRow> }>();
  for await (const e of evaluations) {
    const domain = e.policy.domain;
    let entry = byDomain.get(domain);
    if (entry === undefined) {
      entry = { policy: e.policy, rows: new Map() };
      byDomain.set(domain, entry);
    }
    entry.policy = e.policy; // the record as last seen
    const row: Omit<ReportRow, 'count'> = {
      ip: e.ip,
      disposition: e.disposition,
      dkimAligned: e.dkimAligned,
      spfAligned: e.spfAligned,
      reasons: e.reasons,
      from: e.from,
      dkim: e.dkim,
      spf: e.spf,
    };
    const key = JSON.stringify(row);
    const found = entry.rows.get(key);
    if (found !== undefined) found.count++;
    else entry.rows.set(key, { ...row, count: 1 });
  }
  const out = new Map<string, DomainReport>();
  for (const [domain, { policy, rows }] of byDomain) {
    const list = [...rows.values()];
    out.set(domain, { policy, rows: list, messages: list.reduce((n, r) => n + r.count, 0) });
  }
  return out;
}

export interface ReportMetadata {
  orgName: string;
  email: string;
  reportId: string;
  /** Seconds since the epoch (RFC 7489 Appendix C DateRangeType). */
  begin: number;
  end: number;
}

/** XML 1.0 character data: escaped, and without the characters XML 1.0 forbids. */
export function xmlText(s: string): string {
  return s
    .replace(/[^\t\n\r\x20-\uD7FF\uE000-\uFFFD]/gu, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

function el(name: string, value: string | number, indent: string): string {
  return `${indent}<${name}>${xmlText(String(value))}</${name}>\n`;
}

/** The report as RFC 7489 Appendix C XML. */
export function reportXml(meta: ReportMetadata, report: DomainReport): string {
  const p = report.policy;
  let x = '<?xml version="1.0" encoding="UTF-8"?>\n<feedback>\n';
  x += el('version', '1.0', '  ');
  x += '  <report_metadata>\n';
  x += el('org_name', meta.orgName, '    ');
  x += el('email', meta.email, '    ');
  x += el('report_id', meta.reportId, '    ');
  x += '    <date_range>\n';
  x += el('begin', meta.begin, '      ');
  x += el('end', meta.end, '      ');
  x += '    </date_range>\n';
  x += '  </report_metadata>\n';
  x += '  <policy_published>\n';
  x += el('domain', p.domain, '    ');
  x += el('adkim', p.adkim, '    ');
  x += el('aspf', p.aspf, '    ');
  x += el('p', p.p, '    ');
  x += el('sp', p.sp, '    ');
  x += el('pct', p.pct, '    ');
  x += el('fo', p.fo, '    ');
  x += '  </policy_published>\n';
  for (const r of report.rows) {
    x += '  <record>\n    <row>\n';
    x += el('source_ip', r.ip, '      ');
    x += el('count', r.count, '      ');
    x += '      <policy_evaluated>\n';
    x += el('disposition', r.disposition, '        ');
    x += el('dkim', r.dkimAligned, '        ');
    x += el('spf', r.spfAligned, '        ');
    for (const reason of r.reasons) {
      x += '        <reason>\n';
      x += el('type', reason.type, '          ');
      if (reason.comment !== undefined) x += el('comment', reason.comment, '          ');
      x += '        </reason>\n';
    }
    x += '      </policy_evaluated>\n    </row>\n';
    x += '    <identifiers>\n';
    x += el('header_from', r.from, '      ');
    x += '    </identifiers>\n';
    x += '    <auth_results>\n';
    for (const d of r.dkim) {
      x += '      <dkim>\n';
      x += el('domain', d.d, '        ');
      if (d.s !== undefined) x += el('selector', d.s, '        ');
      x += el('result', d.r, '        ');
      x += '      </dkim>\n';
    }
    x += '      <spf>\n';
    x += el('domain', r.spf.d, '        ');
    x += el('scope', r.spf.scope, '        ');
    x += el('result', r.spf.r, '        ');
    x += '      </spf>\n';
    x += '    </auth_results>\n';
    x += '  </record>\n';
  }
  x += '</feedback>\n';
  return x;
}
