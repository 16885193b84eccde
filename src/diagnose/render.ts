/**
 * The two forms of a diagnosis: text for a person (one line per finding, its fix below it,
 * a summary at the end) and JSON for scripts (the report as data). Trust: findings quote DNS
 * answers; control characters are replaced before they reach a terminal.
 */
import type { Finding, Severity } from './finding.js';
import type { Report } from './run.js';

const LABEL: Record<Severity, string> = { ok: 'OK', warning: 'WARNING', error: 'ERROR' };

/** Text safe to print on a terminal: control characters (escape sequences from a DNS answer) as "?". */
function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

const SOURCE: Record<Report['addressSource'], string> = {
  option: 'from --address',
  configuration: 'from [diagnose] public_addresses',
  hostname: "the host name's",
};

export function renderText(report: Report): string {
  const out: string[] = [];
  out.push(`Diagnosis of ${report.domains.join(', ')} on ${report.hostname}`);
  out.push(
    `Public addresses: ${report.addresses.length > 0 ? `${report.addresses.join(', ')} (${SOURCE[report.addressSource]})` : 'none known'}`,
  );
  out.push('');
  const width = Math.max(...report.findings.map((f) => f.check.length), 5);
  for (const f of report.findings) out.push(...renderFinding(f, width));
  out.push('');
  const s = report.summary;
  out.push(
    `${plural(s.ok, 'check', 'checks')} OK, ${plural(s.warning, 'warning', 'warnings')}, ${plural(s.error, 'error', 'errors')}`,
  );
  return `${out.join('\n')}\n`;
}

function renderFinding(f: Finding, width: number): string[] {
  const head = `${LABEL[f.severity].padEnd(8)}${f.check.padEnd(width + 2)}`;
  const lines = [`${head}${printable(f.subject)}: ${printable(f.message)}`];
  if (f.fix !== undefined) lines.push(`${' '.repeat(head.length)}fix: ${printable(f.fix)}`);
  return lines;
}

export function renderJson(report: Report): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}
