/**
 * What the administrator can do about an outbound failure or deferral, in plain words, for the
 * log line that reports it (DESIGN.md rule 8: errors explain). Chosen from the outcome's data
 * (message/outcome.ts): Sterna's own outcomes by their reason id, a remote server's reply by its
 * stage and its RFC 3463 enhanced status code. Never by reading the text, so rewording a
 * message cannot change a hint. Pure: no I/O. Trust: a remote reply's text is never looked at.
 *
 * No hint suggests a TLS setting that stops verifying the peer (or sends mail in clear): the
 * advice keeps verification (the CA in tls_ca_file, the right host name).
 */
import type { LocalReason, Outcome } from '../message/outcome.js';

const NOT_ANSWERING =
  'the mail server (MX or relay) did not answer: check that it runs and that this host may reach it; outgoing port 25 is often blocked by providers (a smarthost in transport."*" avoids it)';

/** The hint for each of Sterna's own outcomes; undefined where there is nothing to do. */
const BY_REASON: Readonly<Record<LocalReason, string | undefined>> = {
  'connection-failed': NOT_ANSWERING,
  'connection-lost':
    'the connection broke during the transaction; nothing to do unless it lasts (then check the network path and the peer)',
  'lost-after-end-of-data':
    'the peer read the whole message but its reply never came; it may hold the message, so it is retried later rather than sent to another host (the recipient may get it twice). If this repeats, check the peer and outbound.data_end_timeout_ms',
  'tls-not-offered':
    "the destination offers no STARTTLS but its policy (outbound.tls_policy, or the relay's tls) requires TLS: ask its administrator to offer STARTTLS; keep the policy, as lowering it would send the mail (and a relay's password) in clear",
  'tls-failed':
    'the TLS handshake failed (no common protocol or cipher, or the peer closed it): check the TLS versions and ciphers the peer accepts, and its certificate (name, chain, expiry) with tls_ca_file',
  'tls-certificate-unverified':
    'the peer\'s certificate did not verify, so nothing was sent: if the relay or MX uses a private CA, put that CA in tls_ca_file (the transport entry\'s, or outbound.tls_ca_file); make sure the configured host name (relay = "name", or the MX name) is one the certificate names, not an address; check that the certificate has not expired. Keep verification on: without it an attacker could pose as the peer',
  'auth-needs-tls':
    'AUTH is configured for a relay that did not encrypt the session: give the relay tls = "required-verify" (with tls_ca_file for a private CA) or implicit_tls = true, so the password only goes to the real relay over TLS',
  'auth-not-offered':
    'the relay offers no AUTH mechanism Sterna speaks (PLAIN, LOGIN): check the relay host and port (submission is usually 587 or 465), and auth_user of the transport entry',
  'auth-password-unreadable':
    'the relay password file could not be read: check the path and permissions of auth_password_file',
  'size-exceeded': undefined,
  'smtputf8-not-offered': undefined,
  '8bitmime-not-offered': undefined,
  'bad-envelope': undefined,
  'body-read-error':
    'the spool could not be read while sending: check the disk and the log lines before this one',
  'null-mx': undefined,
  nxdomain: undefined,
  'no-address': "the domain's MX hosts have no address records: nothing to do here; the sender was told",
  loop: "the domain's MX points back at this server: add the domain to local_domains, or fix its MX records",
  'dns-failure':
    "DNS did not answer: check [dns] servers (or /etc/resolv.conf) and that the domain's name servers respond",
  unreachable: NOT_ANSWERING,
  'relay-unreachable': NOT_ANSWERING,
  'backed-off':
    'the destination failed as a whole and is backed off; it is tried again after queue.first_retry_ms doubling up to queue.max_backoff_ms (sterna queue flush tries now)',
  'attempt-ended-early': undefined,
  expired: undefined,
  'bounce-not-sent': 'the bounce could not be queued: check the spool (disk space, permissions)',
  'admin-bounce': undefined,
  'local-failed': undefined,
  'local-deferred': undefined,
  'forward-not-queued': 'the forwarded copy could not be queued: check the spool (disk space, permissions)',
};

/** A plain-words hint for the administrator, or undefined when nothing specific applies. */
export function operatorHint(o: Outcome): string | undefined {
  switch (o.reason) {
    case 'remote-reply':
    case 'legacy':
      return remoteHint(o);
    default:
      return BY_REASON[o.reason];
  }
}

/** A remote reply (or an old record) by its stage and enhanced status code (RFC 3463 class.subject). */
function remoteHint(o: Outcome): string | undefined {
  if (o.stage === 'auth' && (o.code === 535 || o.enhanced.startsWith('5.7.') || o.enhanced === '4.7.8')) {
    return 'the relay refused the AUTH credentials: check auth_user and auth_password_file of the transport entry';
  }
  const m = /^([245])\.(\d{1,3})\./.exec(o.enhanced);
  const klass = m?.[1];
  const subject = m?.[2];
  if (klass === '4' && subject === '7') {
    return 'the remote server delays the mail by policy (greylisting, rate limit, reputation); it usually clears by itself on a later attempt';
  }
  if (klass === '4' && subject === '2') {
    return 'the remote mailbox is temporarily unavailable (busy or full); nothing to do unless it lasts';
  }
  if (klass === '4' && subject === '3') {
    return 'the remote system reports a temporary problem on its side; nothing to do unless it lasts';
  }
  if (klass === '5' && subject === '7') {
    return "the remote server refused the mail by policy (spam filter, SPF/DKIM/DMARC, block list): check this host's reputation, reverse DNS and the sender domain's SPF and DKIM";
  }
  if (klass === '5' && subject === '1')
    return 'the address does not exist at the destination; the sender was told';
  return undefined;
}
