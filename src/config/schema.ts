/**
 * The configuration schema: every key, its type, its limits and its default, in one place.
 * docs/configuration.md documents each key; keep the two in step. Unknown keys are refused
 * (fail closed): a typo must not silently fall back to a default.
 */
import { z } from 'zod';

const KiB = 1024;
const MiB = 1024 * KiB;

const hostPort = z
  .string()
  .regex(
    /^(\[[0-9a-fA-F:.]+\]|[0-9.]+|[A-Za-z0-9.-]+):\d{1,5}$/,
    'expected "address:port", e.g. "127.0.0.1:25" or "[::1]:25"',
  );

const positiveInt = z.number().int().positive();
const durationMs = z
  .number()
  .int()
  .min(1)
  .max(7 * 24 * 3600 * 1000);

export const listenSchema = z
  .strictObject({
    /** MTA port: mail from other servers; STARTTLS offered. */
    smtp: z.array(hostPort).default(['127.0.0.1:2525']),
    /** Submission (RFC 6409): STARTTLS, AUTH required before MAIL. */
    submission: z.array(hostPort).default(['127.0.0.1:2587']),
    /** Submissions (RFC 8314): implicit TLS, AUTH required before MAIL. */
    submissions: z.array(hostPort).default(['127.0.0.1:2465']),
  })
  .default({ smtp: ['127.0.0.1:2525'], submission: ['127.0.0.1:2587'], submissions: ['127.0.0.1:2465'] });

export const tlsSchema = z
  .strictObject({
    /** PEM certificate chain. Empty: a self-signed test certificate generated under data_dir/tls. */
    cert_file: z.string().default(''),
    /** PEM private key. Empty: generated with the test certificate. */
    key_file: z.string().default(''),
    /**
     * A second certificate chain, ECDSA, served to clients that accept it (dual certificates:
     * cert_file/key_file are then the RSA one). Empty: none.
     */
    ecdsa_cert_file: z.string().default(''),
    /** Its PEM private key (an EC key). */
    ecdsa_key_file: z.string().default(''),
    min_version: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
    /**
     * How often new session ticket keys are made (RFC 5077; shared by every worker). Node keeps
     * one key set: tickets sealed before a rotation get a full handshake after it.
     */
    ticket_key_rotation_ms: z
      .number()
      .int()
      .min(60_000)
      .max(7 * 24 * 3600 * 1000)
      .default(3_600_000),
  })
  .default({
    cert_file: '',
    key_file: '',
    ecdsa_cert_file: '',
    ecdsa_key_file: '',
    min_version: 'TLSv1.2',
    ticket_key_rotation_ms: 3_600_000,
  });

export const limitsSchema = z
  .strictObject({
    /** RFC 5321 4.5.3.1.4: command line including CRLF. */
    command_line_bytes: z
      .number()
      .int()
      .min(512)
      .max(64 * KiB)
      .default(512),
    /** RFC 5321 4.5.3.1.6: text line in DATA, including CRLF. */
    text_line_bytes: z
      .number()
      .int()
      .min(1000)
      .max(1 * MiB)
      .default(1000),
    /** SIZE: largest message accepted. */
    message_bytes: positiveInt.max(2 * 1024 * MiB).default(50 * MiB),
    /** Recipients per message; RFC 5321 4.5.3.1.8 asks for at least 100. */
    recipients: z.number().int().min(1).max(100_000).default(100),
    /** Protocol errors in one session before 421 and close. */
    errors: z.number().int().min(1).max(1000).default(10),
    /** Simultaneous connections, all listeners together. */
    connections: z.number().int().min(1).max(1_000_000).default(10_000),
    /** Simultaneous connections from one client IP address. */
    connections_per_ip: z.number().int().min(1).max(1_000_000).default(100),
    /** Received headers after which a message is refused as a loop (RFC 5321 6.3). */
    received_headers: z.number().int().min(1).max(1000).default(100),
    /** Time to wait for each command (RFC 5321 4.5.3.2.7: 5 minutes). */
    command_timeout_ms: durationMs.default(300_000),
    /** Time to wait for each block of data during DATA/BDAT (RFC 5321 4.5.3.2.5: 3 minutes). */
    data_block_timeout_ms: durationMs.default(180_000),
    /** Time allowed for the whole DATA phase, from 354 to the final dot (RFC 5321 4.5.3.2.6: 10 minutes). */
    data_total_timeout_ms: durationMs.default(600_000),
    /** TLS handshake after STARTTLS or on connect to an implicit TLS port. */
    tls_handshake_timeout_ms: durationMs.default(30_000),
    /** SIGTERM: how long open SMTP transactions may take to finish before the process exits. */
    drain_timeout_ms: durationMs.default(30_000),
  })
  .default({
    command_line_bytes: 512,
    text_line_bytes: 1000,
    message_bytes: 50 * MiB,
    recipients: 100,
    errors: 10,
    connections: 10_000,
    connections_per_ip: 100,
    received_headers: 100,
    command_timeout_ms: 300_000,
    data_block_timeout_ms: 180_000,
    data_total_timeout_ms: 600_000,
    tls_handshake_timeout_ms: 30_000,
    drain_timeout_ms: 30_000,
  });

export const smtpSchema = z
  .strictObject({
    /** A bare LF or CR: "reject" answers 5xx (the safe default); "normalize" turns it into CRLF. */
    bare_line_endings: z.enum(['reject', 'normalize']).default('reject'),
    /** VRFY: "ambiguous" always answers 252 and reveals nothing; "verify" answers 250/550. */
    vrfy: z.enum(['ambiguous', 'verify']).default('ambiguous'),
    /** Greeting banner text after the hostname. */
    banner: z.string().max(200).default('ESMTP Sterna ready'),
  })
  .default({ bare_line_endings: 'reject', vrfy: 'ambiguous', banner: 'ESMTP Sterna ready' });

/** JWS algorithms a token may be signed with (RFC 7518 3.1, RFC 8037); "none" is never accepted. */
export const OAUTH_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
] as const;

const OAUTH_DEFAULTS = {
  issuer: '',
  audience: [] as string[],
  user_claim: 'email',
  jwks_file: '',
  jwks_url: '',
  algorithms: ['RS256', 'ES256', 'EdDSA'] as (typeof OAUTH_ALGORITHMS)[number][],
  clock_skew_ms: 30_000,
  jwks_timeout_ms: 5000,
  jwks_cache_ms: 600_000,
  jwks_refresh_min_ms: 30_000,
  users: 'known' as const,
  scope: '',
  openid_configuration: '',
};

/** [auth.oauth]: bearer tokens (JWT) for OAUTHBEARER (RFC 7628) and XOAUTH2. */
export const oauthSchema = z
  .strictObject({
    /** Required "iss" claim (exact match). */
    issuer: z.string().default(''),
    /** Accepted "aud" values; the token's "aud" must contain one of them. */
    audience: z.array(z.string().min(1)).default([]),
    /** The claim that names the user (an address), e.g. "email". */
    user_claim: z.string().min(1).default('email'),
    /** JWKS (RFC 7517 5) in a file: re-read when it changes and on SIGHUP. */
    jwks_file: z.string().default(''),
    /** JWKS at an http(s) URL: fetched with a timeout, cached, re-fetched for an unknown "kid". */
    jwks_url: z.string().default(''),
    algorithms: z.array(z.enum(OAUTH_ALGORITHMS)).min(1).default(OAUTH_DEFAULTS.algorithms),
    /** Tolerance for "exp" and "nbf" (clocks of issuer and server differ a little). */
    clock_skew_ms: z.number().int().min(0).max(600_000).default(30_000),
    /** Time allowed for fetching jwks_url. */
    jwks_timeout_ms: z.number().int().min(1).max(120_000).default(5000),
    /** A fetched JWKS is used this long before it is fetched again. */
    jwks_cache_ms: durationMs.default(600_000),
    /** An unknown "kid" re-fetches jwks_url at most once per this period. */
    jwks_refresh_min_ms: z.number().int().min(0).max(3_600_000).default(30_000),
    /** Who may log in: "known" = a user of the users file; "local_domains" = any address in a local domain. */
    users: z.enum(['known', 'local_domains']).default('known'),
    /** "scope" in the RFC 7628 3.2.2 error status (and XOAUTH2's); empty: left out. */
    scope: z.string().default(''),
    /** "openid-configuration" URL in the RFC 7628 3.2.2 error status; empty: left out. */
    openid_configuration: z.string().default(''),
  })
  .default(OAUTH_DEFAULTS);

const DOVECOT_DEFAULTS = { socket: '/run/dovecot/auth-client', service: 'smtp', timeout_ms: 10_000 };

/** [auth.dovecot]: Dovecot's authentication socket (backend = "dovecot"). */
export const dovecotAuthSchema = z
  .strictObject({
    /** Unix socket of Dovecot's auth service (a unix_listener in `service auth`). */
    socket: z.string().min(1).default(DOVECOT_DEFAULTS.socket),
    /** The service name Dovecot sees (its %s; passdb rules can depend on it). */
    service: z
      .string()
      .regex(/^[a-z0-9-]+$/, 'expected a service name such as "smtp"')
      .default('smtp'),
    /** Time allowed for connecting, the handshake and each answer. */
    timeout_ms: z.number().int().min(1).max(120_000).default(10_000),
  })
  .default(DOVECOT_DEFAULTS);

export const AUTH_MECHANISMS = ['PLAIN', 'LOGIN', 'CRAM-MD5', 'OAUTHBEARER', 'XOAUTH2'] as const;

export const authSchema = z
  .strictObject({
    /** Who checks passwords: "users_file" (Sterna's own) or "dovecot" (Dovecot's auth socket). */
    backend: z.enum(['users_file', 'dovecot']).default('users_file'),
    /** SASL mechanisms offered. CRAM-MD5 needs a password-equivalent secret stored; see docs. */
    mechanisms: z.array(z.enum(AUTH_MECHANISMS)).default(['PLAIN', 'LOGIN']),
    /** Offer AUTH on a connection without TLS. Off: passwords never cross the network in clear. */
    allow_plaintext: z.boolean().default(false),
    /** Offer AUTH on the smtp (port 25) listener too. */
    on_smtp_listener: z.boolean().default(false),
    /** Users file. Empty: data_dir/users.json. */
    users_file: z.string().default(''),
    /** On submission, MAIL FROM must be an address the user owns. */
    enforce_sender: z.boolean().default(true),
    /** First delay after a failed attempt; doubles with each further failure from the same client network. */
    failure_delay_ms: z.number().int().min(0).max(60_000).default(1000),
    /** Failures at one user name from one client network (IPv4 address, IPv6 /64) within lockout_window_ms before that pair is refused. */
    max_failures: z.number().int().min(1).max(10_000).default(10),
    /** Failures from one client network, over all user names, within lockout_window_ms before it is refused. */
    max_failures_per_network: z.number().int().min(1).max(100_000).default(30),
    lockout_window_ms: durationMs.default(15 * 60_000),
    /** How long a pair or a network is refused AUTH after its max_failures / max_failures_per_network. */
    lockout_ms: durationMs.default(15 * 60_000),
    oauth: oauthSchema,
    dovecot: dovecotAuthSchema,
  })
  .default({
    backend: 'users_file',
    mechanisms: ['PLAIN', 'LOGIN'],
    allow_plaintext: false,
    on_smtp_listener: false,
    users_file: '',
    enforce_sender: true,
    failure_delay_ms: 1000,
    max_failures: 10,
    max_failures_per_network: 30,
    lockout_window_ms: 15 * 60_000,
    lockout_ms: 15 * 60_000,
    oauth: OAUTH_DEFAULTS,
    dovecot: DOVECOT_DEFAULTS,
  });

const cidr = z
  .string()
  .regex(/^[0-9a-fA-F:.]+(\/\d{1,3})?$/, 'expected an address or CIDR network, e.g. "10.0.0.0/8"');

export const relaySchema = z
  .strictObject({
    /** Networks whose clients may relay without authentication. None by default, not even loopback. */
    trusted_networks: z.array(cidr).default([]),
  })
  .default({ trusted_networks: [] });

export const spoolSchema = z
  .strictObject({
    /** Spool directory. Empty: data_dir/spool. */
    dir: z.string().default(''),
    /** Size after which the spool starts a new log segment. */
    segment_bytes: z
      .number()
      .int()
      .min(64 * KiB)
      .max(4 * 1024 * MiB)
      .default(64 * MiB),
    /** Messages whose envelopes are held in memory for delivery at once. */
    max_active_messages: z.number().int().min(1).max(1_000_000).default(1000),
    /** fsync before acknowledging. Only a benchmark of the protocol alone turns this off. */
    fsync: z.boolean().default(true),
  })
  .default({ dir: '', segment_bytes: 64 * MiB, max_active_messages: 1000, fsync: true });

/** A file mode in octal, e.g. "0750". */
const octalMode = z.string().regex(/^0?[0-7]{3}$/, 'expected an octal mode such as "0700"');

export const localDeliverySchema = z
  .strictObject({
    /** Root of the Maildirs: one Maildir per mailbox at <root>/<domain>/<local part>/. Empty: data_dir/mailboxes. */
    maildir_root: z.string().default(''),
    /** Local mailbox (address) that receives postmaster@ of every local domain. Empty: postmaster@<hostname>. */
    postmaster: z.string().default(''),
    /** Local deliveries running at once. */
    concurrency: z.number().int().min(1).max(1000).default(20),
    /**
     * Maildir writer threads: each writes one batch of deliveries at a time (docs/local-delivery.md).
     * More write more where mail is spread over many mailboxes, at more CPU per delivery.
     */
    threads: z.number().int().min(1).max(16).default(1),
    /** Retry delay for a mailbox that cannot be written. */
    retry_ms: durationMs.default(5 * 60_000),
    /**
     * Owner (user name or uid) of the Maildir files and directories Sterna creates, e.g. Dovecot's
     * mail user; empty: Sterna's own user. Changing it needs Sterna to run as root (CAP_CHOWN).
     */
    owner: z.string().default(''),
    /** Group (name or gid) of the files and directories Sterna creates; empty: Sterna's own group. */
    group: z.string().default(''),
    /** Mode of the directories Sterna creates (octal). */
    dir_mode: octalMode.default('0700'),
    /** Mode of the message files (octal). */
    file_mode: octalMode.default('0600'),
  })
  .default({
    maildir_root: '',
    postmaster: '',
    concurrency: 20,
    threads: 1,
    retry_ms: 5 * 60_000,
    owner: '',
    group: '',
    dir_mode: '0700',
    file_mode: '0600',
  });

/** A DNS server as node:dns accepts it: "192.0.2.53", "127.0.0.1:5353", "2001:db8::53" or "[2001:db8::53]:53". */
const dnsServer = z
  .string()
  .regex(
    /^(\[[0-9a-fA-F:.]+\]:\d{1,5}|[0-9a-fA-F:.]+|[0-9.]+:\d{1,5})$/,
    'expected an IP address with an optional port, e.g. "192.0.2.53", "127.0.0.1:5353" or "[2001:db8::53]:53"',
  );

export const dnsSchema = z
  .strictObject({
    /** Servers asked for MX, A and AAAA during outbound delivery. Empty: the system's resolvers (/etc/resolv.conf). */
    servers: z.array(dnsServer).default([]),
    /** Time allowed for the first try of each query (doubled on each retry). */
    timeout_ms: z.number().int().min(1).max(60_000).default(5000),
    /** Tries per server before a query counts as a temporary failure. */
    tries: z.number().int().min(1).max(10).default(2),
  })
  .default({ servers: [], timeout_ms: 5000, tries: 2 });

/** An allow-list entry: an address (user@domain), a domain, or an IP address or CIDR network. */
const exemptEntry = z
  .string()
  .regex(
    /^([^@\s]+@[A-Za-z0-9.-]+|[A-Za-z0-9.-]*[A-Za-z][A-Za-z0-9.-]*|[0-9a-fA-F:.]+(\/\d{1,3})?)$/,
    'expected an address ("list@example.org"), a domain ("example.org") or a network ("192.0.2.0/24")',
  );

/** Inbound mail authentication: SPF, DKIM, DMARC, ARC and the Authentication-Results field (docs/mail-auth.md). */
export const mailauthSchema = z
  .strictObject({
    /** Listeners whose mail is checked. Default: the smtp listener only (mail from other servers). */
    listeners: z.array(z.enum(['smtp', 'submission', 'submissions'])).default(['smtp']),
    /** authserv-id of our Authentication-Results field (RFC 8601 2.2). Empty: the hostname. */
    authserv_id: z
      .string()
      .regex(/^([A-Za-z0-9.-]+)?$/, 'expected a domain name')
      .default(''),
    /** Accept a DKIM signature whose l= leaves part of the body unsigned. */
    allow_partial_body: z.boolean().default(false),
    /** Shortest RSA key a DKIM or ARC signature may use (RFC 8301 3.2: at least 1024). */
    min_rsa_key_bits: z.number().int().min(1024).max(16384).default(1024),
    /** Time allowed for all the checks of one message (every DNS lookup included). */
    timeout_ms: z.number().int().min(100).max(300_000).default(20_000),
    /** Largest header section handed to the DKIM/ARC verifier; a larger one is not verified. */
    max_header_bytes: z
      .number()
      .int()
      .min(16 * KiB)
      .max(64 * MiB)
      .default(1 * MiB),
    /** A DMARC failure whose policy is p=reject: "reject" (550 5.7.1), "junk" (the Junk folder) or "mark". */
    dmarc_reject_action: z.enum(['reject', 'junk', 'mark']).default('reject'),
    /** A DMARC failure whose policy is p=quarantine: "junk" (the Junk folder), "mark" or "reject". */
    dmarc_quarantine_action: z.enum(['junk', 'mark', 'reject']).default('junk'),
    /** An SPF fail (when DMARC does not pass): "mark" or "reject" (550 5.7.23). */
    spf_fail_action: z.enum(['mark', 'reject']).default('mark'),
    /** A DNS failure that leaves DMARC undecided: "accept" (and mark) or "defer" (451). */
    temperror_action: z.enum(['accept', 'defer']).default('accept'),
    /** Sources never refused or deferred by these checks: addresses, domains, networks. */
    exempt: z.array(exemptEntry).default([]),
  })
  .default({
    listeners: ['smtp'],
    authserv_id: '',
    allow_partial_body: false,
    min_rsa_key_bits: 1024,
    timeout_ms: 20_000,
    max_header_bytes: 1 * MiB,
    dmarc_reject_action: 'reject',
    dmarc_quarantine_action: 'junk',
    spf_fail_action: 'mark',
    temperror_action: 'accept',
    exempt: [],
  });

/** One DKIM signing key (docs/mail-auth.md, "Signing"). */
export const dkimKeySchema = z.strictObject({
  /** The signing domain (d=): mail whose From is in this domain (or under it) is signed with it. */
  domain: z
    .string()
    .regex(
      /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$/,
      'expected a domain name',
    ),
  /** The selector (s=): the key's DNS record is at <selector>._domainkey.<domain>. */
  selector: z
    .string()
    .regex(
      /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/,
      'expected a selector: letters, digits, "-" and "."',
    ),
  /** "rsa" (rsa-sha256, RFC 6376) or "ed25519" (ed25519-sha256, RFC 8463). */
  algorithm: z.enum(['rsa', 'ed25519']).default('rsa'),
  /** "publish": in DNS, not yet signing; "active": signing; "retired": no longer signing, record kept for a while. */
  state: z.enum(['publish', 'active', 'retired']).default('active'),
  /** The private key (PEM, mode 0600). Empty: <key_dir>/<domain>.<selector>.key. */
  key_file: z.string().default(''),
});

/** Outbound DKIM signing (docs/mail-auth.md, "Signing"). */
export const dkimSchema = z
  .strictObject({
    /** Where `sterna dkim keygen` writes keys and where key_file defaults to. Empty: data_dir/dkim. */
    key_dir: z.string().default(''),
    /** Sign mail from relay.trusted_networks clients that did not authenticate (as opendkim's InternalHosts). */
    sign_trusted_networks: z.boolean().default(true),
    /** Sign Sterna's own mail: bounces, delay warnings and success reports. */
    sign_own_mail: z.boolean().default(true),
    /** Largest header section the signer holds to find the From field; a larger one is not signed. */
    max_header_bytes: z
      .number()
      .int()
      .min(16 * KiB)
      .max(64 * MiB)
      .default(1 * MiB),
    keys: z.array(dkimKeySchema).default([]),
  })
  .default({
    key_dir: '',
    sign_trusted_networks: true,
    sign_own_mail: true,
    max_header_bytes: 1 * MiB,
    keys: [],
  });

/** Mail forwarded by aliases to other domains: ARC sealing and SRS (docs/mail-auth.md, "Forwarding"). */
export const forwardingSchema = z
  .strictObject({
    /** Add an ARC set (RFC 8617) to each forwarded copy, signed with a [[dkim.keys]] RSA key. */
    arc_seal: z.boolean().default(true),
    /** Rewrite an outside envelope sender of a forwarded copy into the SRS domain (SRS0/SRS1). */
    srs: z.boolean().default(true),
    /** The domain of SRS addresses; its MX must be this server, its SPF must allow it. Empty: the hostname. */
    srs_domain: z
      .string()
      .regex(
        /^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+)?$/,
        'expected a domain name',
      )
      .default(''),
    /** The SRS secrets, one a line (the first signs). Empty: data_dir/srs/secret, made at first start. */
    srs_secret_file: z.string().default(''),
    /** Days an SRS address is accepted for a bounce. */
    srs_max_age_days: z.number().int().min(1).max(1000).default(21),
  })
  .default({ arc_seal: true, srs: true, srs_domain: '', srs_secret_file: '', srs_max_age_days: 21 });
/** DMARC aggregate reports that Sterna sends (RFC 7489 7.2; docs/mail-auth.md, "DMARC reports"). */
export const dmarcReportsSchema = z
  .strictObject({
    /** Record every DMARC evaluation and send the daily aggregate reports. Off by default. */
    enabled: z.boolean().default(false),
    /** The hour of the day (UTC, 0-23) at which the reports of the past day are sent. */
    hour: z.number().int().min(0).max(23).default(0),
    /** report_metadata org_name. Empty: hostname. */
    org_name: z.string().max(255).default(''),
    /** The report address: From, MAIL FROM and report_metadata email. Empty: postmaster@<hostname>. */
    from: z
      .string()
      .regex(/^([^\s@<>(),;:"\\]+@[A-Za-z0-9.-]+)?$/, 'expected an address ("dmarc-reports@example.org")')
      .default(''),
    /** Buffered evaluations are written and fdatasync'd this often. */
    flush_ms: z.number().int().min(10).max(60_000).default(1000),
    /** Failure reports (ruf, RFC 7489 7.3) are not sent; the key is here to say so. */
    failure_reports: z
      .literal(false, { error: 'failure reports (ruf) are not supported; leave it false' })
      .default(false),
  })
  .default({ enabled: false, hour: 0, org_name: '', from: '', flush_ms: 1000, failure_reports: false });
/** Keys every content filter has ([[filters]], docs/filters.md). */
const filterCommon = {
  /** A name for logs and replies; unique. Default: the type. */
  name: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'expected letters, digits, ".", "_" or "-"')
    .optional(),
  /**
   * The ways in whose mail this filter checks: the listeners, "sendmail" (the maildrop of
   * `sterna sendmail`) and "http" (the HTTP API). Default: mail from other servers only.
   */
  listeners: z.array(z.enum(['smtp', 'submission', 'submissions', 'sendmail', 'http'])).default(['smtp']),
  /** Time allowed for the filter's answer, from the end of data. */
  timeout_ms: z.number().int().min(100).max(600_000).default(10_000),
  /** When the filter fails or times out: "tempfail" (451, the client retries) or "accept". */
  on_failure: z.enum(['tempfail', 'accept']).default('tempfail'),
  /** A larger message is not given to this filter (it is accepted unchecked, and logged). */
  max_size: z
    .number()
    .int()
    .min(1)
    .max(1024 * MiB)
    .default(20 * MiB),
};

/** rspamd's HTTP protocol (/checkv2). */
export const rspamdFilterSchema = z.strictObject({
  type: z.literal('rspamd'),
  ...filterCommon,
  /** rspamd's normal worker. */
  url: z.url({ protocol: /^https?$/ }).default('http://127.0.0.1:11333'),
  /** Sent as the Password header (rspamd's controller password), when set. */
  password: z.string().default(''),
  /** The actions "add header" and "rewrite subject" also put local copies in the Junk folder. */
  junk: z.boolean().default(false),
});

/** SpamAssassin's spamd (the SPAMC/SPAMD protocol). */
export const spamdFilterSchema = z.strictObject({
  type: z.literal('spamd'),
  ...filterCommon,
  address: hostPort.default('127.0.0.1:783'),
  /** The User header: whose preferences spamd applies. Empty: none sent. */
  user: z.string().default(''),
  /** A score at or above this is refused (550 5.7.1). */
  reject_score: z.number().default(15),
  /** A score at or above this (and below reject_score) goes to the Junk folder. */
  junk_score: z.number().default(5),
  /** Add spamd's X-Spam-* fields (X-Spam-Flag, X-Spam-Status, X-Spam-Level) to the message. */
  add_headers: z.boolean().default(true),
});

/** A Sendmail milter (protocol version 6, as Postfix speaks it). */
export const milterFilterSchema = z.strictObject({
  type: z.literal('milter'),
  ...filterCommon,
  /** "inet:host:port" or "unix:/path/to/socket" (Postfix's notation). */
  address: z
    .string()
    .regex(
      /^(inet:(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}|unix:\/.+)$/,
      'expected "inet:host:port" or "unix:/path"',
    ),
});

export const filterSchema = z.discriminatedUnion('type', [
  rspamdFilterSchema,
  spamdFilterSchema,
  milterFilterSchema,
]);
export type FilterConfig = z.output<typeof filterSchema>;

export const outboundSchema = z
  .strictObject({
    /** TCP connect to a remote MX. */
    connect_timeout_ms: durationMs.default(30_000),
    /** RFC 5321 4.5.3.2.1: the 220 greeting, 5 minutes. */
    greeting_timeout_ms: durationMs.default(300_000),
    /** RFC 5321 4.5.3.2.2-3: MAIL, RCPT and every other command, 5 minutes. */
    command_timeout_ms: durationMs.default(300_000),
    /** RFC 5321 4.5.3.2.4: the 354 reply to DATA, 2 minutes. */
    data_init_timeout_ms: durationMs.default(120_000),
    /** RFC 5321 4.5.3.2.5: each write of the body, 3 minutes. */
    data_block_timeout_ms: durationMs.default(180_000),
    /** RFC 5321 4.5.3.2.6: the reply to the final ".", 10 minutes. */
    data_end_timeout_ms: durationMs.default(600_000),
    /** STARTTLS policy: "opportunistic" (when offered, unverified), "required", "required-verify", "none". */
    tls: z.enum(['opportunistic', 'required', 'required-verify', 'none']).default('opportunistic'),
    /** Outbound SMTP deliveries running at once, all destinations together. */
    concurrency_total: z.number().int().min(1).max(10_000).default(100),
    /** Outbound SMTP deliveries running at once to one destination domain. */
    concurrency_per_destination: z.number().int().min(1).max(10_000).default(20),
    /** TCP port of remote MX hosts: 25; another value is for testing and for networks that need it. */
    port: z.number().int().min(1).max(65535).default(25),
    /**
     * STARTTLS policy per destination domain (lower case), overriding `tls` for mail routed by
     * MX to that domain; "required-verify" checks each MX's certificate against the MX host name.
     */
    tls_policy: z
      .record(
        z.string().regex(/^[A-Za-z0-9.-]+$/, 'expected a domain name'),
        z.enum(['opportunistic', 'required', 'required-verify', 'none']),
      )
      .default({}),
    /** PEM CA certificates for "required-verify" towards MX hosts; default: the system's. */
    tls_ca_file: z.string().min(1).optional(),
    /** Mail transactions on one connection before it is closed (RSET between them); 1: no reuse. */
    connection_reuse_limit: z.number().int().min(1).max(100_000).default(100),
    /** How long an idle connection waits for the next message to its host before QUIT. */
    connection_idle_ms: z.number().int().min(0).max(300_000).default(2000),
    /** Recipients per mail transaction (Postfix's smtp_destination_recipient_limit); more go in further ones. */
    recipients_per_transaction: z.number().int().min(1).max(10_000).default(50),
  })
  .default({
    connect_timeout_ms: 30_000,
    greeting_timeout_ms: 300_000,
    command_timeout_ms: 300_000,
    data_init_timeout_ms: 120_000,
    data_block_timeout_ms: 180_000,
    data_end_timeout_ms: 600_000,
    tls: 'opportunistic',
    concurrency_total: 100,
    concurrency_per_destination: 20,
    port: 25,
    tls_policy: {},
    connection_reuse_limit: 100,
    connection_idle_ms: 2000,
    recipients_per_transaction: 50,
  });

/**
 * Domains delivered over LMTP (`transport` "lmtp:..."): recipient verification at RCPT
 * (src/delivery/lmtp-probe.ts).
 */
export const lmtpSchema = z
  .strictObject({
    /** Ask the LMTP server at RCPT whether it takes the address; unknown ones get 550 5.1.1. */
    verify_recipients: z.boolean().default(true),
    /** How long "the mailbox exists" is remembered per address. */
    verify_positive_ms: durationMs.default(3_600_000),
    /** How long "no such mailbox" is remembered per address. */
    verify_negative_ms: durationMs.default(600_000),
    /** When the LMTP server cannot be asked: "tempfail" (450 4.4.3 at RCPT) or "accept" (queue; a refusal bounces). */
    verify_unavailable: z.enum(['tempfail', 'accept']).default('tempfail'),
    /** Connect, greeting and each command of a verification probe. */
    verify_timeout_ms: durationMs.default(10_000),
  })
  .default({
    verify_recipients: true,
    verify_positive_ms: 3_600_000,
    verify_negative_ms: 600_000,
    verify_unavailable: 'tempfail',
    verify_timeout_ms: 10_000,
  });

export const queueSchema = z
  .strictObject({
    /** Delay before the first retry of a deferred remote recipient; doubles after each failure. */
    first_retry_ms: durationMs.default(300_000),
    /** Ceiling of the doubling retry delay (before jitter). */
    max_backoff_ms: durationMs.default(3_600_000),
    /** A recipient still undelivered this long after the message arrived fails (RFC 5321 4.5.4.1: 4-5 days). */
    max_lifetime_ms: durationMs.default(432_000_000),
    /** Random spread of each retry delay: 0.1 is plus or minus 10%. */
    jitter: z.number().min(0).max(1).default(0.1),
    /** Age after which the sender is warned of a delay (delay DSN, not sent yet); 0 never warns. */
    delay_warning_ms: z
      .number()
      .int()
      .min(0)
      .max(7 * 24 * 3600 * 1000)
      .default(14_400_000),
  })
  .default({
    first_retry_ms: 300_000,
    max_backoff_ms: 3_600_000,
    max_lifetime_ms: 432_000_000,
    jitter: 0.1,
    delay_warning_ms: 14_400_000,
  });

/** `sterna sendmail` and its maildrop (docs/sendmail.md). */
export const sendmailSchema = z
  .strictObject({
    /** Domain added to bare local names (recipients, a user's own address). Empty: hostname. */
    origin: z
      .string()
      .regex(/^([A-Za-z0-9.-]+)?$/, 'expected a domain name')
      .default(''),
    /** Unix users who may set any envelope sender (-f), besides root and the server's own user. */
    trusted_users: z.array(z.string().min(1)).default([]),
    /** Unix user -> further sender addresses it may use ("@domain": any address in the domain). */
    allowed_senders: z.record(z.string().min(1), z.array(z.string().min(1))).default({}),
    /** The maildrop is watched; it is also scanned this often in case a change was missed. */
    scan_interval_ms: durationMs.default(30_000),
  })
  .default({ origin: '', trusted_users: [], allowed_senders: {}, scan_interval_ms: 30_000 });

/** The HTTP submission API for applications (src/api/, docs/http-api.md). */
export const httpApiSchema = z
  .strictObject({
    /** Addresses of the API listener; empty (the default): no listener. TLS except on loopback. */
    listen: z.array(hostPort).default([]),
    /** API keys file (hashed keys, `sterna apikey`). Empty: data_dir/api-keys.json. */
    keys_file: z.string().default(''),
    /** How long an Idempotency-Key is remembered: a retry within it gets the first answer. */
    idempotency_window_ms: durationMs.default(24 * 3600 * 1000),
    /** Idempotency keys remembered at most, all API keys together; the oldest are forgotten first. */
    idempotency_max_entries: z.number().int().min(1).max(10_000_000).default(100_000),
    /** Messages per minute one API key may queue; beyond it, 429 with Retry-After. 0: no limit. */
    messages_per_minute: z.number().int().min(0).max(1_000_000).default(60),
  })
  .default({
    listen: [],
    keys_file: '',
    idempotency_window_ms: 24 * 3600 * 1000,
    idempotency_max_entries: 100_000,
    messages_per_minute: 60,
  });

/** Blocklists `sterna diagnose` looks the public addresses up in, when [diagnose] names none. */
export const DEFAULT_DNSBL_ZONES = ['zen.spamhaus.org', 'bl.spamcop.net', 'b.barracudacentral.org'];

/** `sterna diagnose` (docs/operations.md). */
export const diagnoseSchema = z
  .strictObject({
    /** This server's public IP addresses, as receivers see them. Empty: the hostname's A/AAAA records. */
    public_addresses: z
      .array(z.string().regex(/^[0-9a-fA-F:.]+$/, 'expected an IP address, e.g. "192.0.2.10"'))
      .default([]),
    /** DNS blocklist zones (RFC 5782) the public addresses are looked up in. */
    dnsbl_zones: z
      .array(z.string().regex(/^[A-Za-z0-9.-]+$/, 'expected a DNS zone such as "zen.spamhaus.org"'))
      .default(DEFAULT_DNSBL_ZONES),
  })
  .default({ public_addresses: [], dnsbl_zones: DEFAULT_DNSBL_ZONES });
/** 127.0.0.0/8, ::1, localhost: the addresses only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return /^127\./.test(h) || h === '::1' || h === 'localhost';
}

export const adminSchema = z
  .strictObject({
    /** Addresses of the admin listener (/metrics, /healthz, /readyz, /api/); empty: off. */
    listen: z.array(hostPort).default([]),
    /** File holding the bearer token (first line). Empty: no token, loopback addresses only. */
    token_file: z.string().default(''),
    /** Recent deliveries and refusals kept in memory for /api/recent and message stories. */
    recent_events: z.number().int().min(0).max(1_000_000).default(10_000),
    /** Destination domains with their own label in delivery metrics; the rest count as "other". */
    metrics_top_domains: z.number().int().min(0).max(1000).default(20),
  })
  .superRefine((admin, ctx) => {
    if (admin.token_file !== '') return;
    admin.listen.forEach((entry, i) => {
      const host = entry.slice(0, entry.lastIndexOf(':'));
      if (!isLoopbackHost(host))
        ctx.addIssue({
          code: 'custom',
          path: ['token_file'],
          message: `must be set when admin.listen[${i}] (${entry}) is not a loopback address: without a token the admin listener serves this machine only`,
        });
    });
  })
  .default({ listen: [], token_file: '', recent_events: 10_000, metrics_top_domains: 20 });
/**
 * [server]: the process model (src/cluster/, docs/workers.md). `workers` event loops share the
 * listeners, each with its own spool; absent: one per core the process may use
 * (cluster/count.ts).
 */
export const serverSchema = z
  .strictObject({
    /** Worker processes; 1: one process, no cluster (as before). Absent: one per core. */
    workers: z.number().int().min(1).max(256).optional(),
    /**
     * Open connections per worker before one more worker takes new connections
     * (cluster/accept-gate.ts); 0: every worker always takes them.
     */
    connections_per_worker: z.number().int().min(0).max(100_000).default(2),
    /**
     * How many nice levels below the event loop the helper threads (libuv's pool, V8's
     * workers) run, so that they do not preempt it (server/helper-threads.ts); 0: leave them.
     */
    helper_threads_nice: z.number().int().min(0).max(19).default(10),
  })
  .default({ helper_threads_nice: 10, connections_per_worker: 2 });

/** [state]: where counters and greylisting live (src/state/): in process, or Redis shared by several nodes. */
export const stateSchema = z
  .strictObject({
    /** "redis://[user:password@]host:port[/db]" (or rediss://); empty: in process, saved under data_dir/state/. */
    redis: z
      .string()
      .regex(/^(rediss?:\/\/\S+)?$/, 'expected a URL such as "redis://127.0.0.1:6379"')
      .default(''),
    /** Prefix of every Redis key Sterna writes. */
    redis_prefix: z.string().max(100).default('sterna:'),
    /** Time allowed for each Redis command (and for connecting). */
    timeout_ms: z.number().int().min(10).max(60_000).default(1000),
    /** The store failed (Redis down): "tempfail" answers 451 4.3.0; "accept" lets the check pass. */
    on_error: z.enum(['tempfail', 'accept']).default('tempfail'),
  })
  .default({ redis: '', redis_prefix: 'sterna:', timeout_ms: 1000, on_error: 'tempfail' });

const LISTENER_KINDS = ['smtp', 'submission', 'submissions'] as const;

/** One allow or deny list (src/policy/lists.ts, docs/abuse.md). */
export const listSchema = z.strictObject({
  /** A name for logs and `sterna limits`. */
  name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'expected a short name such as "bad-networks"'),
  /** What is matched: the client's IP address, its HELO name, the sender, or a recipient. */
  match: z.enum(['client', 'helo', 'sender', 'recipient']),
  /** "deny" refuses (554 5.7.1 at connect, else 550 5.7.1 with reason); "allow" skips the checks after it. */
  action: z.enum(['allow', 'deny']),
  /** Entries: addresses or CIDR networks (client); names, ".suffix" (helo); addresses, domains, ".suffix", "<>" (sender, recipient). */
  entries: z.array(z.string().min(1).max(320)).default([]),
  /** A file with more entries, one a line (# comments); re-read when it changes and on SIGHUP. */
  file: z.string().default(''),
  /** The text of a deny's reply. */
  reason: z.string().max(200).default('Access denied'),
});

export const dnsblZoneSchema = z.strictObject({
  /** The list's DNS zone, e.g. "zen.spamhaus.org". */
  zone: z.string().regex(/^[A-Za-z0-9.-]+$/, 'expected a DNS zone'),
  /** "client": the client's address reversed (DNSBL, DNSWL); "sender": the sender's domain (RHSBL). */
  type: z.enum(['client', 'sender']).default('client'),
  /** Added to the score when listed; negative for an allow list (DNSWL). */
  weight: z.number().min(-100).max(100).default(1),
  /** Answers that count as listed ("127.0.0.2", "127.0.0.4-127.0.0.7"); empty: any 127.0.0.0/8 answer. */
  codes: z
    .array(z.string().regex(/^127\.\d+\.\d+\.\d+(-127\.\d+\.\d+\.\d+)?$/, 'expected "127.x.y.z" or a range'))
    .default([]),
});

/** [dnsbl]: DNS block and allow lists (RFC 5782), scored, refused at RCPT. */
export const dnsblSchema = z
  .strictObject({
    zones: z.array(dnsblZoneSchema).default([]),
    /** Score at which RCPT is refused (554 5.7.1 naming the list). */
    threshold: z.number().min(0.01).max(1000).default(1),
    /** Time allowed for the lookups of one client; late answers count as not listed. */
    timeout_ms: z.number().int().min(10).max(60_000).default(5000),
    /** Listeners whose clients are looked up. */
    listeners: z.array(z.enum(LISTENER_KINDS)).default(['smtp']),
  })
  .default({ zones: [], threshold: 1, timeout_ms: 5000, listeners: ['smtp'] });

const GREYLIST_DEFAULTS = {
  enabled: false,
  listeners: ['smtp' as const],
  delay_ms: 300_000,
  retry_window_ms: 24 * 3600_000,
  pass_ttl_ms: 36 * 24 * 3600_000,
  trust_after: 5,
  trust_ms: 7 * 24 * 3600_000,
  ipv4_prefix: 24,
  ipv6_prefix: 64,
};

/** [greylist]: the first attempt of a new (client network, sender, recipient) is deferred. */
export const greylistSchema = z
  .strictObject({
    enabled: z.boolean().default(false),
    listeners: z.array(z.enum(LISTENER_KINDS)).default(['smtp']),
    /** How long a new triplet is deferred (451 4.7.1). */
    delay_ms: durationMs.default(GREYLIST_DEFAULTS.delay_ms),
    /** A retry after the delay passes only within this time of the first attempt. */
    retry_window_ms: durationMs.default(GREYLIST_DEFAULTS.retry_window_ms),
    /** A triplet that passed is remembered this long after its last message (longer than durationMs's 7 days). */
    pass_ttl_ms: z
      .number()
      .int()
      .min(1)
      .max(400 * 24 * 3600_000)
      .default(GREYLIST_DEFAULTS.pass_ttl_ms),
    /** A client network whose triplets passed this many times is trusted (no greylisting); 0: never. */
    trust_after: z.number().int().min(0).max(1_000_000).default(5),
    /** How long a trusted network stays trusted after its last pass. */
    trust_ms: durationMs.default(GREYLIST_DEFAULTS.trust_ms),
    /** Prefix length of an IPv4 client's network (the triplet's first part). */
    ipv4_prefix: z.number().int().min(8).max(32).default(24),
    /** Prefix length of an IPv6 client's network. */
    ipv6_prefix: z.number().int().min(16).max(128).default(64),
  })
  .default(GREYLIST_DEFAULTS);

/** [early_talkers]: clients that do not wait for the server (Postfix postscreen's pregreet test). */
export const earlyTalkersSchema = z
  .strictObject({
    listeners: z.array(z.enum(LISTENER_KINDS)).default(['smtp']),
    /** Wait this long before the greeting; a client that talks meanwhile is refused. 0: greet at once. */
    greeting_delay_ms: z.number().int().min(0).max(60_000).default(0),
    /** A client that sends before the greeting: "reject" (554 5.5.1, close) or "ignore". */
    pregreet: z.enum(['reject', 'ignore']).default('reject'),
    /** A client that sends commands ahead of replies without PIPELINING (before EHLO, after HELO). */
    improper_pipelining: z.enum(['reject', 'ignore']).default('ignore'),
  })
  .default({ listeners: ['smtp'], greeting_delay_ms: 0, pregreet: 'reject', improper_pipelining: 'ignore' });

const limitCount = z.number().int().min(0).max(100_000_000);

/** Per-user or per-group limits, overriding the per-user defaults. */
const userLimitsSchema = z.strictObject({
  messages_per_hour: limitCount.optional(),
  recipients_per_hour: limitCount.optional(),
});

const RATE_DEFAULTS = {
  window: 'sliding' as const,
  connections_per_minute: 0,
  messages_per_hour_per_user: 0,
  recipients_per_hour_per_user: 0,
  messages_per_hour_per_sender_domain: 0,
  recipients_per_hour_per_sender_domain: 0,
  messages_per_hour_per_network: 0,
  recipients_per_hour_per_network: 0,
  users: {},
  groups: {},
};

/** [rate_limits]: every listener and the HTTP API; 0 turns a limit off (the default, as in Postfix). */
export const rateLimitsSchema = z
  .strictObject({
    /** "sliding" (the last hour, weighted) or "fixed" (the current clock hour / minute). */
    window: z.enum(['sliding', 'fixed']).default('sliding'),
    /** New connections per minute from one client network (IPv4 address, IPv6 /64); beyond: 421 4.7.0. */
    connections_per_minute: limitCount.default(0),
    /** Messages (transactions) per hour per authenticated user; beyond: 450 4.7.1 at MAIL. */
    messages_per_hour_per_user: limitCount.default(0),
    /** Recipients per hour per authenticated user; beyond: 450 4.7.1 at RCPT. */
    recipients_per_hour_per_user: limitCount.default(0),
    messages_per_hour_per_sender_domain: limitCount.default(0),
    recipients_per_hour_per_sender_domain: limitCount.default(0),
    messages_per_hour_per_network: limitCount.default(0),
    recipients_per_hour_per_network: limitCount.default(0),
    /** Per user (the login name): its own messages_per_hour / recipients_per_hour. */
    users: z.record(z.string().min(1), userLimitsSchema).default({}),
    /** Named groups: members (login names, or "@domain" for every user of a domain) and their limits. */
    groups: z
      .record(
        z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'expected a group name'),
        userLimitsSchema.extend({ members: z.array(z.string().min(1)).min(1) }),
      )
      .default({}),
  })
  .default(RATE_DEFAULTS);

export const logSchema = z
  .strictObject({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    /** "auto": human-readable on a TTY, JSON otherwise. */
    format: z.enum(['auto', 'json', 'pretty']).default('auto'),
  })
  .default({ level: 'info', format: 'auto' });

/**
 * A relay host (smarthost) for a transport entry: "host", "host:port", "[host]:port" or
 * "[2001:db8::1]:587". Brackets mean what they mean in Postfix (no MX lookup); Sterna never looks
 * up MX for a relay, so they are only needed around an IPv6 address. The port defaults to 25.
 */
const relayHost = z
  .string()
  .regex(
    /^(\[[A-Za-z0-9.:-]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/,
    'expected "host", "host:port" or "[address]:port", e.g. "smtp.example.net:587" or "[192.0.2.1]:25"',
  );

export const relayTransportSchema = z.strictObject({
  /** Where the domain's mail goes instead of its MX. */
  relay: relayHost,
  /** STARTTLS policy towards the relay; default: [outbound] tls. */
  tls: z.enum(['opportunistic', 'required', 'required-verify', 'none']).optional(),
  /** TLS from the first byte (RFC 8314, usually port 465) instead of STARTTLS. */
  implicit_tls: z.boolean().default(false),
  /** AUTH user name at the relay (AUTH only ever over TLS). */
  auth_user: z.string().min(1).optional(),
  /** File holding the AUTH password (first line); read at each delivery attempt. */
  auth_password_file: z.string().min(1).optional(),
  /** The AUTH password inline; auth_password_file keeps it out of the configuration file. */
  auth_password: z.string().min(1).optional(),
  /** PEM CA certificates to verify the relay with (tls = "required-verify"); default: the system's. */
  tls_ca_file: z.string().min(1).optional(),
  /**
   * The explicit opt-out: send the AUTH credentials over TLS whose certificate is not verified
   * (tls = "opportunistic" / "required", or implicit TLS without verification). An active
   * attacker on the path can then collect the password; check-config and every delivery warn.
   */
  auth_over_unverified_tls: z.boolean().optional(),
});

export type RelayTransport = z.output<typeof relayTransportSchema>;

/**
 * An LMTP transport (RFC 2033), e.g. to Dovecot: "lmtp:unix:/run/dovecot/lmtp" (an absolute
 * socket path) or "lmtp:[127.0.0.1]:24" / "lmtp:host:24" (TCP; the port is required).
 */
export const LMTP_TRANSPORT = /^lmtp:(unix:\/.+|(\[[A-Za-z0-9.:-]+\]|[A-Za-z0-9.-]+):\d{1,5})$/;

/** A transport named by a string: "local", "discard" or an LMTP address. One check, one message. */
const namedTransport = z.custom<'local' | 'discard' | `lmtp:${string}`>(
  (v) => typeof v === 'string' && (v === 'local' || v === 'discard' || LMTP_TRANSPORT.test(v)),
  { error: '"local", "discard", "lmtp:unix:/path/to/socket", "lmtp:[address]:port"' },
);

export const configSchema = z.strictObject({
  /** The name this server uses in its greeting, EHLO, Received headers and bounces. Default: the machine's hostname. */
  hostname: z
    .string()
    .regex(/^[A-Za-z0-9.-]+$/, 'expected a domain name')
    .optional(),
  /** Where spool, mailboxes, users file and the generated test certificate live. */
  data_dir: z.string().min(1).default('./data'),
  /** Domains whose mail is delivered here. Default: "localhost" and the hostname. */
  local_domains: z.array(z.string().min(1)).optional(),
  /** Aliases: address -> list of addresses (local or remote). "@domain" as a key is that domain's catch-all. */
  aliases: z.record(z.string(), z.array(z.string().min(1))).default({}),
  /** Extra aliases file (TOML, same shape as [aliases]); re-read when it changes. */
  aliases_file: z.string().default(''),
  /**
   * Transports by recipient domain: "local" delivers to Maildir like a local domain; "discard"
   * accepts every recipient of the domain and throws the mail away once queued (Postfix's
   * discard transport; used by benchmarks and for sink domains); a table sends the domain's mail
   * to a relay host (smarthost) instead of its MX; "lmtp:unix:/path" or "lmtp:[host]:port"
   * delivers the domain's mail (a local domain's too) over LMTP, e.g. to Dovecot. The key "*" (a
   * relay table only) is every other non-local domain.
   */
  transport: z
    .record(
      z.string().regex(/^(\*|[A-Za-z0-9.-]+)$/, 'expected a domain name or "*"'),
      z.union([namedTransport, relayTransportSchema]),
    )
    .default({}),
  server: serverSchema,
  listen: listenSchema,
  tls: tlsSchema,
  limits: limitsSchema,
  smtp: smtpSchema,
  auth: authSchema,
  relay: relaySchema,
  spool: spoolSchema,
  local_delivery: localDeliverySchema,
  dns: dnsSchema,
  mailauth: mailauthSchema,
  dkim: dkimSchema,
  forwarding: forwardingSchema,
  dmarc_reports: dmarcReportsSchema,
  /** Content filters at the end of data, in order ([[filters]], docs/filters.md). */
  filters: z
    .array(filterSchema)
    .default([])
    .refine((fs) => new Set(fs.map((f) => f.name ?? f.type)).size === fs.length, {
      error: 'every filter needs its own name (two filters of one type need a name each)',
    }),
  outbound: outboundSchema,
  lmtp: lmtpSchema,
  queue: queueSchema,
  log: logSchema,
  sendmail: sendmailSchema,
  http_api: httpApiSchema,
  diagnose: diagnoseSchema,
  admin: adminSchema,
  state: stateSchema,
  lists: z.array(listSchema).default([]),
  dnsbl: dnsblSchema,
  greylist: greylistSchema,
  early_talkers: earlyTalkersSchema,
  rate_limits: rateLimitsSchema,
});

export type ConfigInput = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;

/** The configuration after defaults that depend on the machine (hostname, paths) are filled in. */
export interface Config extends Omit<ParsedConfig, 'hostname' | 'local_domains'> {
  hostname: string;
  local_domains: string[];
}
