/**
 * `sterna dmarc report --now [--json]`: asks the running server, through its control socket, to
 * send the DMARC aggregate reports now (docs/mail-auth.md, "DMARC reports") instead of at the
 * configured hour, and prints what was queued and what was skipped. Exit codes: 0 done, 1 the
 * server is not running or refused, 2 usage. Trust: local; the socket is the server's own.
 */
import type { Writable } from 'node:stream';
import type { Config } from '../config/schema.js';
import type { ReportRunSummary } from '../mailauth/dmarc-report.js';
import { controlSocketPath } from '../server/control.js';
import { askServer } from './queue-command.js';

export const DMARC_HELP = `Usage: sterna dmarc report --now [--json] [--config FILE]

Sends the DMARC aggregate reports (RFC 7489 7.2) now rather than at [dmarc_reports] hour:
the running server closes the current report period, queues one report per policy domain
to its rua addresses, and removes the period's records. Prints each report's domain,
message count, queue id, and the addresses skipped with the reason (the external-destination
check of RFC 7489 7.1, a size limit). Needs [dmarc_reports] enabled = true.

Exit codes: 0 done, 1 the server is not running or refused, 2 usage error.
`;

export interface DmarcCommandIo {
  stdout: Writable;
  stderr: Writable;
  config: Config;
}

function isSummary(v: unknown): v is ReportRunSummary {
  return typeof v === 'object' && v !== null && 'periods' in v && Array.isArray(v.periods);
}

function render(s: ReportRunSummary): string {
  const lines: string[] = [];
  for (const p of s.periods) {
    lines.push(`period ${new Date(p.begin).toISOString()} to ${new Date(p.end).toISOString()}`);
    if (p.reports.length === 0) lines.push('  no DMARC evaluations to report');
    for (const r of p.reports) {
      const head = `  ${r.domain}: ${r.messages} message(s) in ${r.rows} row(s)`;
      lines.push(
        r.queued !== undefined ? `${head}, queued as ${r.queued} to ${r.to.join(', ')}` : `${head}, not sent`,
      );
      for (const k of r.skipped) lines.push(`    skipped ${k.address}: ${k.reason}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

export async function runDmarcCommand(args: readonly string[], io: DmarcCommandIo): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    io.stdout.write(DMARC_HELP);
    return 0;
  }
  const [sub, ...rest] = args;
  const json = rest.includes('--json');
  const unknown = rest.filter((a) => a !== '--json' && a !== '--now');
  if (sub !== 'report' || !rest.includes('--now') || unknown.length > 0) {
    io.stderr.write(`sterna dmarc: expected "report --now"\n\n${DMARC_HELP}`);
    return 2;
  }
  try {
    const reply = await askServer(controlSocketPath(io.config.data_dir), { op: 'dmarc-report' });
    if (reply === null) {
      io.stderr.write(
        'sterna dmarc report: the server is not running; the reports are sent by the running server\n',
      );
      return 1;
    }
    if (!reply.ok) {
      io.stderr.write(`sterna dmarc report: ${reply.error}\n`);
      return reply.code === 'USAGE' ? 2 : 1;
    }
    if (!isSummary(reply.result)) {
      io.stderr.write('sterna dmarc report: the server answered something unexpected\n');
      return 1;
    }
    io.stdout.write(json ? `${JSON.stringify(reply.result, null, 2)}\n` : render(reply.result));
    return 0;
  } catch (err) {
    io.stderr.write(`sterna dmarc report: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
