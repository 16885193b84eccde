/**
 * The domain's SMTP TLS reporting record at _smtp._tls.DOMAIN (RFC 8460 3): one record,
 * "v=TLSRPTv1" first, rua= with mailto: or https: URIs. Optional: a domain without one gets a
 * warning. Trust: the record is untrusted DNS data, quoted as text.
 */
import type { DomainContext } from './context.js';
import { finding, type Finding } from './finding.js';
import { parseTagList, recordsOfVersion, tagValue, txtStrings } from './txt-records.js';

export async function checkTlsRpt(ctx: DomainContext): Promise<Finding[]> {
  const name = `_smtp._tls.${ctx.domain}`;
  const publish = `publish: ${name}. IN TXT "v=TLSRPTv1; rua=mailto:postmaster@${ctx.domain}"`;
  const txt = txtStrings(await ctx.dns.txt(name));
  if (!Array.isArray(txt)) {
    return [
      finding(
        'tls-rpt',
        'warning',
        'tls-rpt.unknown',
        name,
        `could not check: ${txt.failed}`,
        'check [dns] servers and try again',
      ),
    ];
  }
  const records = recordsOfVersion(txt, /^v=TLSRPTv1\s*(;|$)/);
  if (records.length === 0) {
    return [
      finding(
        'tls-rpt',
        'warning',
        'tls-rpt.missing',
        name,
        `${ctx.domain} publishes no TLS-RPT record (optional): you will not hear from senders whose TLS connections to your server fail`,
        publish,
      ),
    ];
  }
  if (records.length > 1) {
    return [
      finding(
        'tls-rpt',
        'error',
        'tls-rpt.multiple',
        name,
        `${records.length} TLS-RPT records at ${name}: RFC 8460 3 tells senders to send no reports then`,
        'keep one record',
      ),
    ];
  }
  const record = records[0] ?? '';
  const tags = parseTagList(record);
  const rua = tags === null ? undefined : tagValue(tags, 'rua');
  const uris = (rua ?? '').split(',').map((u) => u.trim());
  if (rua === undefined || uris.some((u) => !/^(mailto:[^@\s]+@[^@\s]+|https:\/\/\S+)$/i.test(u))) {
    return [
      finding(
        'tls-rpt',
        'error',
        'tls-rpt.syntax',
        name,
        `the TLS-RPT record "${record}" needs rua= with mailto: or https: URIs (RFC 8460 3)`,
        publish,
      ),
    ];
  }
  return [finding('tls-rpt', 'ok', 'tls-rpt.ok', name, `TLS reports go to ${uris.join(', ')}`)];
}
