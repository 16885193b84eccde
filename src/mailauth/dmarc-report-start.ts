/**
 * Starts DMARC aggregate reporting from the configuration ([dmarc_reports], docs/mail-auth.md):
 * the evaluation store under `<data_dir>/dmarc` and the daily reporter. Off (null) unless
 * `enabled`. Wiring only; the work is in dmarc-report-store.ts and dmarc-report.ts.
 * Trust level: the configuration is the operator's.
 */
import path from 'node:path';
import type { Config } from '../config/schema.js';
import type { DnsResolver } from '../delivery/dns.js';
import type { Logger } from '../observability/log.js';
import type { Spool } from '../queue/spool.js';
import type { DkimSigning } from './dkim-sign.js';
import type { DmarcEvaluation } from './dmarc-report-record.js';
import { DmarcReportStore } from './dmarc-report-store.js';
import { DmarcReporter, type ReportRunSummary } from './dmarc-report.js';

export interface DmarcReporting {
  /** Records one evaluation (MailAuthOptions.onDmarcEvaluation). */
  record(e: DmarcEvaluation): void;
  /** Sends the reports now (`sterna dmarc report --now`). */
  runNow(): Promise<ReportRunSummary>;
  close(): Promise<void>;
}

/**
 * The directory of the evaluations: `<data_dir>/dmarc`, or `<data_dir>/dmarc.<k>` for worker k > 0
 * ([server] workers, docs/workers.md): each worker records and reports the mail it received.
 */
export function dmarcReportDir(config: Config, worker = 0): string {
  return path.join(config.data_dir, worker === 0 ? 'dmarc' : `dmarc.${worker}`);
}

export async function startDmarcReporting(
  config: Config,
  deps: {
    spool: Spool;
    dkim: DkimSigning;
    dns: DnsResolver;
    log: Logger;
    now?: () => number;
    /** The worker's index ([server] workers); 0 or absent: the only process or worker 0. */
    worker?: number;
  },
): Promise<DmarcReporting | null> {
  const c = config.dmarc_reports;
  if (!c.enabled) return null;
  const now = deps.now ?? Date.now;
  const store = await DmarcReportStore.open({
    dir: dmarcReportDir(config, deps.worker),
    flushMs: c.flush_ms,
    log: deps.log,
    now,
  });
  const reporter = new DmarcReporter({
    store,
    spool: deps.spool,
    dkim: deps.dkim,
    dns: deps.dns,
    log: deps.log,
    hostname: config.hostname,
    orgName: c.org_name !== '' ? c.org_name : config.hostname,
    from: c.from !== '' ? c.from : `postmaster@${config.hostname}`,
    hourUtc: c.hour,
    now,
  });
  reporter.start();
  deps.log.info({ dir: dmarcReportDir(config, deps.worker), hour: c.hour }, 'DMARC aggregate reports on');
  return {
    record: (e) => store.add(e),
    runNow: () => reporter.runNow(),
    async close() {
      await reporter.close();
      await store.close();
    },
  };
}
