/**
 * Reading the TXT records the checks look at: a record's character-strings joined with nothing
 * between them (RFC 7208 3.3, RFC 6376 3.6.2.2, RFC 7489 6.4), and the tag=value lists of DKIM
 * (RFC 6376 3.2), DMARC (RFC 7489 6.4), MTA-STS (RFC 8461 3.1) and TLS-RPT (RFC 8460 3).
 * Trust: the records are untrusted DNS data; parsing never throws.
 */
import type { DnsResult } from '../delivery/dns.js';

/** The records of a TXT answer as strings; none for NXDOMAIN / NODATA; the reason on a failure. */
export function txtStrings(result: DnsResult<string[][]>): string[] | { failed: string } {
  switch (result.kind) {
    case 'ok':
      return result.records.map((r) => r.join(''));
    case 'nxdomain':
    case 'nodata':
      return [];
    case 'temp':
      return { failed: result.reason };
    default: {
      const never: never = result;
      return { failed: `unexpected DNS result ${JSON.stringify(never)}` };
    }
  }
}

/** The records that start with `version` (e.g. "v=DMARC1"), compared without case. */
export function recordsOfVersion(records: readonly string[], version: RegExp): string[] {
  return records.filter((r) => version.test(r.trim()));
}

/**
 * A tag list: "v=DKIM1; k=rsa; p=MII…" as [["v","DKIM1"], ["k","rsa"], ["p","MII…"]], tags lower
 * case, values trimmed; null when a part is not tag=value. An empty last part (a trailing ";")
 * is allowed.
 */
export function parseTagList(record: string): [string, string][] | null {
  const out: [string, string][] = [];
  const parts = record.split(';');
  for (let i = 0; i < parts.length; i++) {
    const part = (parts[i] ?? '').trim();
    if (part === '') {
      if (i === parts.length - 1) break;
      return null;
    }
    const eq = part.indexOf('=');
    if (eq <= 0) return null;
    const tag = part.slice(0, eq).trim().toLowerCase();
    if (!/^[a-z][a-z0-9_]*$/.test(tag)) return null;
    out.push([tag, part.slice(eq + 1).trim()]);
  }
  return out;
}

/** The value of `tag` in a parsed tag list (the first one), or undefined. */
export function tagValue(tags: readonly [string, string][], tag: string): string | undefined {
  return tags.find(([t]) => t === tag)?.[1];
}
