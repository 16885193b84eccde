/**
 * DMARC aggregate reports (RFC 7489 7.2), sent by Sterna: once a day, at `[dmarc_reports] hour`
 * (UTC), the current period of recorded evaluations (dmarc-report-store.ts) is sealed, and for
 * each policy domain one report is built (dmarc-report-xml.ts), gzipped under the standard file
 * name `receiver!policy-domain!begin!end.xml.gz` (7.2.1.1), and queued as a MIME message through
 * Sterna's own spool, from the configured report address, to the domain's `rua` mailto: addresses:
 * each one that passes the external-destination check of 7.1 and whose `!size` limit (6.2) the
 * message fits. The signer ([dkim], own mail) signs it as it signs bounces. Once every report of a
 * period is queued, the period's evaluations are removed. `runNow()` does the same on demand
 * (`sterna dmarc report --now`). Failure reports (`ruf`) are not sent.
 * Trust level: the evaluations and the rua URIs come from untrusted mail and DNS; the addresses
 * are parsed strictly, and an address in another organizational domain is used only when that
 * domain publishes the authorization record.
 */
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { dmarc, type DNSResolver } from 'mailauth';
import type { DnsResolver } from '../delivery/dns.js';
import type { Logger } from '../observability/log.js';
import type { Spool } from '../queue/spool.js';
import type { DkimSigning } from './dkim-sign.js';
import type { DmarcReportStore, SealedPeriod } from './dmarc-report-store.js';
import { aggregate, reportXml, type DomainReport } from './dmarc-report-xml.js';

const gzipAsync = promisify(gzip);

export interface DmarcReporterOptions {
  store: DmarcReportStore;
  spool: Spool;
  /** Signs the reports ([dkim] sign_own_mail). */
  dkim?: DkimSigning;
  dns: DnsResolver;
  log: Logger;
  /** The receiver's domain: the report file name, Submitter, Message-ID. */
  hostname: string;
  /** report_metadata org_name. */
  orgName: string;
  /** The report address: From, MAIL FROM and report_metadata email. */
  from: string;
  /** The hour of the day (UTC) the reports are sent. */
  hourUtc: number;
  now: () => number;
}

/** What one report run did, for the log and `sterna dmarc report`. */
export interface ReportRunSummary {
  periods: {
    begin: number;
    end: number;
    reports: {
      domain: string;
      messages: number;
      rows: number;
      queued?: string;
      to: string[];
      skipped: { address: string; reason: string }[];
    }[];
  }[];
}

/** A rua URI's mail address and size limit (RFC 7489 6.2); null for another scheme or bad syntax. */
export function parseReportUri(uri: string): { address: string; limit?: number } | null {
  const m = /^mailto:([^!]+)(?:!(\d+)([kmgt])?)?$/i.exec(uri.trim());
  if (m?.[1] === undefined) return null;
  let address: string;
  try {
    address = decodeURIComponent(m[1]);
  } catch {
    return null;
  }
  // A plain addr-spec only: no query (?subject=), no display name, one @, a domain with a dot.
  if (!/^[^\s@<>(),;:"\\?]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/.test(address)) return null;
  if (m[2] === undefined) return { address };
  // The units are powers of two (6.2).
  const unit = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[(m[3] ?? '').toLowerCase()] ?? 1;
  return { address, limit: Number(m[2]) * unit };
}

/** The organizational domain, by the Public Suffix List DMARC itself uses (mailauth's). */
async function organizationalDomain(domain: string): Promise<string> {
  // mailauth names the organizational domain of its input even when no record is found; this
  // resolver finds none, so nothing is asked of the DNS.
  const none: DNSResolver = () => Promise.reject(Object.assign(new Error('none'), { code: 'ENOTFOUND' }));
  const res = await dmarc({ headerFrom: domain, spfDomains: [], dkimDomains: [], resolver: none });
  return res !== false && typeof res.domain === 'string' && res.domain !== '' ? res.domain : domain;
}

/**
 * RFC 7489 7.1: may reports about `policyDomain` go to an address in `destination`? Yes when both
 * are in the same organizational domain; otherwise only when `destination` publishes a TXT record
 * beginning with "v=DMARC1" at `<policy-domain>._report._dmarc.<destination>`. Returns null when
 * allowed, else the reason.
 */
export async function externalDestinationRefusal(
  dns: DnsResolver,
  policyDomain: string,
  policyOrg: string,
  destination: string,
): Promise<string | null> {
  const dest = destination.toLowerCase();
  if ((await organizationalDomain(dest)) === policyOrg.toLowerCase()) return null;
  const name = `${policyDomain}._report._dmarc.${dest}`;
  if (dns.txt === undefined) return `no TXT lookup to check ${name}`;
  const answer = await dns.txt(name);
  switch (answer.kind) {
    case 'ok':
      if (answer.records.some((r) => /^v=DMARC1(\s*;|\s*$)/i.test(r.join('').trim()))) return null;
      return `${name} holds no "v=DMARC1" record: ${dest} has not agreed to receive reports for ${policyDomain} (RFC 7489 7.1)`;
    case 'nxdomain':
    case 'nodata':
      return `no TXT record at ${name}: ${dest} has not agreed to receive reports for ${policyDomain} (RFC 7489 7.1)`;
    case 'temp':
      return `the lookup of ${name} failed (${answer.reason}); not sent this time`;
    default: {
      const never: never = answer;
      throw new Error(`unhandled DNS result ${JSON.stringify(never)}`);
    }
  }
}

/** The next time the clock shows `hour`:00:00 UTC, strictly after `now`. */
export function nextRunAt(now: number, hour: number): number {
  const d = new Date(now);
  let at = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), hour);
  if (at <= now) at += 24 * 3600 * 1000;
  return at;
}

/** RFC 2045 base64 body lines of 76 characters. */
function base64Lines(data: Buffer): string {
  return (data.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
}

export class DmarcReporter {
  readonly #o: DmarcReporterOptions;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<ReportRunSummary> | null = null;
  #closed = false;

  constructor(o: DmarcReporterOptions) {
    this.#o = o;
  }

  /** Schedules the daily run. */
  start(): void {
    if (this.#closed) return;
    const delay = Math.max(0, nextRunAt(this.#o.now(), this.#o.hourUtc) - this.#o.now());
    // setTimeout takes at most 2^31-1 ms; a day is far below it.
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.runNow()
        .catch((err: unknown) => this.#o.log.error({ err }, 'DMARC aggregate reports failed; will try again'))
        .finally(() => this.start());
    }, delay);
    this.#timer.unref();
  }

  /** Seals the current period and reports every sealed one; one run at a time. */
  runNow(): Promise<ReportRunSummary> {
    this.#running ??= this.#run().finally(() => {
      this.#running = null;
    });
    return this.#running;
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    await this.#running?.catch(() => undefined);
  }

  async #run(): Promise<ReportRunSummary> {
    await this.#o.store.seal();
    const summary: ReportRunSummary = { periods: [] };
    for (const period of await this.#o.store.sealed()) {
      summary.periods.push(await this.#period(period));
    }
    return summary;
  }

  async #period(period: SealedPeriod): Promise<ReportRunSummary['periods'][number]> {
    const { store, log } = this.#o;
    const reports = await aggregate(store.read(period));
    const done = await store.done(period);
    const out: ReportRunSummary['periods'][number] = { begin: period.begin, end: period.end, reports: [] };
    let failed = false;
    for (const [domain, report] of reports) {
      if (done.has(domain)) continue;
      try {
        out.reports.push(await this.#report(period, domain, report));
        await store.markDone(period, domain);
      } catch (err) {
        failed = true;
        log.error({ err, domain }, 'DMARC aggregate report not queued; will try again at the next run');
      }
    }
    // Data retention: the evaluations go once every report of the period is queued.
    if (!failed) await store.remove(period);
    return out;
  }

  async #report(
    period: SealedPeriod,
    domain: string,
    report: DomainReport,
  ): Promise<ReportRunSummary['periods'][number]['reports'][number]> {
    const { log, hostname } = this.#o;
    // Whole seconds (Appendix C DateRangeType) that cover the period, end after begin.
    const begin = Math.floor(period.begin / 1000);
    const end = Math.max(Math.ceil(period.end / 1000), begin + 1);
    const entry = {
      domain,
      messages: report.messages,
      rows: report.rows.length,
      to: [] as string[],
      skipped: [] as { address: string; reason: string }[],
    };
    // A deterministic id: a run repeated after a crash sends the same report id.
    const reportId = `${domain}.${begin}.${end}@${hostname}`;
    const xml = reportXml({ orgName: this.#o.orgName, email: this.#o.from, reportId, begin, end }, report);
    const fileName = `${hostname}!${domain}!${begin}!${end}.xml.gz`;
    const gz = await gzipAsync(Buffer.from(xml, 'utf8'));
    const candidates: { address: string; limit?: number }[] = [];
    for (const uri of report.policy.rua) {
      const parsed = parseReportUri(uri);
      if (parsed === null) {
        entry.skipped.push({ address: uri, reason: 'not a mailto: address Sterna can send to' });
        continue;
      }
      const dest = parsed.address.slice(parsed.address.lastIndexOf('@') + 1);
      const refusal = await externalDestinationRefusal(this.#o.dns, domain, report.policy.org, dest);
      if (refusal !== null) entry.skipped.push({ address: parsed.address, reason: refusal });
      else if (!candidates.some((c) => c.address.toLowerCase() === parsed.address.toLowerCase()))
        candidates.push(parsed);
    }
    const message = this.#message(
      domain,
      reportId,
      fileName,
      gz,
      candidates.map((c) => c.address),
      period,
      report,
    );
    const to: string[] = [];
    for (const c of candidates) {
      if (c.limit !== undefined && message.length > c.limit)
        entry.skipped.push({
          address: c.address,
          reason: `the report (${message.length} octets) is larger than the address's limit of ${c.limit} octets`,
        });
      else to.push(c.address);
    }
    if (to.length === 0) {
      log.warn(
        { domain, skipped: entry.skipped, messages: report.messages },
        'DMARC aggregate report: no address to send it to',
      );
      return entry;
    }
    // The To field names the addresses it goes to (a limit may have removed one): rebuild if so.
    const final =
      to.length === candidates.length
        ? message
        : this.#message(domain, reportId, fileName, gz, to, period, report);
    const qid = await this.#queue(final, to);
    log.info(
      {
        qid,
        domain,
        to,
        skipped: entry.skipped,
        messages: report.messages,
        rows: report.rows.length,
        file: fileName,
      },
      'DMARC aggregate report queued',
    );
    return { ...entry, to, queued: qid };
  }

  /** The report as a MIME message (RFC 7489 7.2.1.1): a short text and the gzipped XML. */
  #message(
    domain: string,
    reportId: string,
    fileName: string,
    gz: Buffer,
    to: readonly string[],
    period: SealedPeriod,
    report: DomainReport,
  ): Buffer {
    const { hostname, from, now } = this.#o;
    const boundary = `=_dmarc_${randomBytes(12).toString('hex')}`;
    const when = (ms: number): string => new Date(ms).toISOString();
    const lines = [
      `From: ${from}`,
      `To: ${to.length > 0 ? to.join(', ') : 'undisclosed-recipients:;'}`,
      // 7.2.1.1: "Report Domain:" domain "Submitter:" domain "Report-ID:" msg-id
      `Subject: Report Domain: ${domain} Submitter: ${hostname} Report-ID: <${reportId}>`,
      `Date: ${new Date(now()).toUTCString().replace('GMT', '+0000')}`,
      `Message-ID: <dmarc.${randomBytes(8).toString('hex')}.${reportId}>`,
      'MIME-Version: 1.0',
      `Content-Type: multipart/mixed; boundary="${boundary}"`,
      '',
      'This is a MIME-formatted message.',
      '',
      `--${boundary}`,
      'Content-Type: text/plain; charset=us-ascii',
      'Content-Transfer-Encoding: 7bit',
      '',
      `This is a DMARC aggregate report (RFC 7489) from ${hostname} for ${domain},`,
      `covering ${when(period.begin)} to ${when(period.end)}: ${report.messages} message(s) in ${report.rows.length} row(s).`,
      '',
      `--${boundary}`,
      `Content-Type: application/gzip; name="${fileName}"`,
      `Content-Disposition: attachment; filename="${fileName}"`,
      'Content-Transfer-Encoding: base64',
      '',
      base64Lines(gz),
      '',
      `--${boundary}--`,
      '',
    ];
    return Buffer.from(lines.join('\r\n'), 'utf8');
  }

  async #queue(message: Buffer, to: readonly string[]): Promise<string> {
    const spooled = this.#o.spool.begin();
    const writer = this.#o.dkim?.wrap(spooled, 'own-mail', this.#o.log) ?? spooled;
    try {
      await writer.write(message);
      await writer.commit({
        sender: this.#o.from,
        mailParams: {},
        recipients: to.map((address) => ({ address, params: {} })),
        client: { ip: '127.0.0.1', port: 0, helo: this.#o.hostname },
        listener: 'smtp',
        receivedAt: this.#o.now(),
      });
    } catch (err) {
      writer.abort();
      throw err;
    }
    return writer.qid;
  }
}
