/**
 * What `sterna diagnose` reports: findings, each OK, a warning or an error, about one subject (a
 * domain, the host name, a public address, the certificate), in plain words, with the fix where
 * there is something to do. A finding is data (DESIGN rule 9): a stable id, the words beside it;
 * the human and JSON output are both rendered from it. Trust: findings quote DNS answers, which
 * are untrusted text; renderers print them as text, never interpret them.
 */

export type Severity = 'ok' | 'warning' | 'error';

/** The checks, in the order they are reported. */
export const CHECKS = [
  'host',
  'mx',
  'reverse-dns',
  'spf',
  'dkim',
  'dmarc',
  'mta-sts',
  'tls-rpt',
  'certificate',
  'blocklist',
] as const;

export type CheckName = (typeof CHECKS)[number];

export interface Finding {
  check: CheckName;
  severity: Severity;
  /** Stable id of what was found, e.g. "spf.missing"; scripts match on it, not on the words. */
  id: string;
  /** The domain, host name, address or file the finding is about. */
  subject: string;
  /** What was found, in plain words. */
  message: string;
  /** What to do about it (the record to publish, with its value where it can be computed). */
  fix?: string;
}

/** A finding, with `fix` only when there is one (exactOptionalPropertyTypes). */
export function finding(
  check: CheckName,
  severity: Severity,
  id: string,
  subject: string,
  message: string,
  fix?: string,
): Finding {
  return fix === undefined
    ? { check, severity, id, subject, message }
    : { check, severity, id, subject, message, fix };
}

export interface Summary {
  ok: number;
  warning: number;
  error: number;
}

export function summarize(findings: readonly Finding[]): Summary {
  const s: Summary = { ok: 0, warning: 0, error: 0 };
  for (const f of findings) s[f.severity] += 1;
  return s;
}

/** The command's exit code: 1 when any finding is an error, else 0 (warnings do not fail it). */
export function exitCodeOf(findings: readonly Finding[]): 0 | 1 {
  return findings.some((f) => f.severity === 'error') ? 1 : 0;
}
