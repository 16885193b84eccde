/**
 * What the administrator can do about an outbound failure or deferral, in plain words, for the
 * log line that reports it (DESIGN.md rule 8: errors explain). Reads the error as the queue
 * records it: a remote reply ("451 4.7.1 …") or one Sterna made itself (TLS policy, DNS, no host
 * reachable, AUTH). Pure: no I/O. Trust: the error text may come from a remote server; it is only
 * matched, never echoed here.
 */

interface Hint {
  /** Matched against the whole error text. */
  test: RegExp;
  hint: string;
}

/** First match wins: Sterna's own errors (most specific) before the classes of remote replies. */
const HINTS: readonly Hint[] = [
  {
    test: /^454 4\.7\.4 TLS is required/,
    hint: "the destination offers no STARTTLS but its policy (outbound.tls_policy, or the relay's tls) requires TLS: ask its administrator to offer STARTTLS; keep the policy, as lowering it would send the mail (and a relay's password) in clear",
  },
  {
    test: /^454 4\.7\.5 The certificate of .* failed verification/,
    hint: 'the peer\'s certificate did not verify, so nothing was sent: if the relay or MX uses a private CA, put that CA in tls_ca_file (the transport entry\'s, or outbound.tls_ca_file); make sure the configured host name (relay = "name", or the MX name) is one the certificate names, not an address; check that the certificate has not expired. Keep verification on: without it an attacker could pose as the peer',
  },
  {
    test: /^454 4\.7\.5 TLS handshake/,
    hint: 'the TLS handshake failed (no common protocol or cipher, or the peer closed it): check the TLS versions and ciphers the peer accepts, and its certificate (name, chain, expiry) with tls_ca_file',
  },
  {
    test: /^454 4\.7\.11 Authentication .* not encrypted/,
    hint: 'AUTH is configured for a relay that did not encrypt the session: give the relay tls = "required-verify" (with tls_ca_file for a private CA) or implicit_tls = true, so the password only goes to the real relay over TLS',
  },
  {
    test: /^(454 4\.7\.0 Authentication|5\d\d 5\.7\.8|535 )/,
    hint: 'the relay refused the AUTH credentials: check auth_user and auth_password_file of the transport entry',
  },
  {
    test: /cannot read the AUTH password/,
    hint: 'the relay password file could not be read: check the path and permissions of auth_password_file',
  },
  {
    test: /^451 4\.4\.3 DNS lookup/,
    hint: "DNS did not answer: check [dns] servers (or /etc/resolv.conf) and that the domain's name servers respond",
  },
  {
    test: /^451 4\.4\.1 (no MX host|relay |cannot connect|no greeting|connection with)/,
    hint: 'the mail server (MX or relay) did not answer: check that it runs and that this host may reach it; outgoing port 25 is often blocked by providers (a smarthost in transport."*" avoids it)',
  },
  {
    test: /is failing; backed off|destination backed off/,
    hint: 'the destination failed as a whole and is backed off; it is tried again after queue.first_retry_ms doubling up to queue.max_backoff_ms (sterna queue flush tries now)',
  },
  {
    test: /^550 5\.4\.6 /,
    hint: "the domain's MX points back at this server: add the domain to local_domains, or fix its MX records",
  },
  {
    test: /^4\d\d 4\.7\.\d+/,
    hint: 'the remote server delays the mail by policy (greylisting, rate limit, reputation); it usually clears by itself on a later attempt',
  },
  {
    test: /^4\d\d 4\.2\.\d+/,
    hint: 'the remote mailbox is temporarily unavailable (busy or full); nothing to do unless it lasts',
  },
  {
    test: /^4\d\d 4\.3\.\d+/,
    hint: 'the remote system reports a temporary problem on its side; nothing to do unless it lasts',
  },
  {
    test: /^5\d\d 5\.7\.\d+/,
    hint: "the remote server refused the mail by policy (spam filter, SPF/DKIM/DMARC, block list): check this host's reputation, reverse DNS and the sender domain's SPF and DKIM",
  },
  {
    test: /^5\d\d 5\.1\.\d+/,
    hint: 'the address does not exist at the destination; the sender was told',
  },
];

/** A plain-words hint for the administrator, or undefined when nothing specific applies. */
export function operatorHint(error: string): string | undefined {
  return HINTS.find((h) => h.test.test(error))?.hint;
}
