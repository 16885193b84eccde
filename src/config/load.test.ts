import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ConfigError, configWarnings, formatConfigError, loadConfig, parseConfigText } from './load.js';

const HOST = { hostname: 'MX.Example.ORG' };

/** The problems of a ConfigError thrown by fn, as the lines the operator reads. */
function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
    return e.problems.map((p) => p.message);
  }
  assert.fail('expected a ConfigError');
}

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    return e;
  }
  assert.fail('expected a ConfigError');
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'sterna-config-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('no file: the embedded defaults, with hostname, local domains and paths filled in', async () => {
  const cfg = await loadConfig(undefined, { env: {}, hostname: 'MX.Example.ORG' });
  const data = resolve('./data');
  assert.deepEqual(cfg, {
    hostname: 'mx.example.org',
    data_dir: data,
    local_domains: ['localhost', 'mx.example.org'],
    aliases: {},
    aliases_file: '',
    transport: {},
    // [server] workers absent: one per core (cluster/count.ts).
    server: { helper_threads_nice: 10, connections_per_worker: 2 },
    listen: { smtp: ['127.0.0.1:2525'], submission: ['127.0.0.1:2587'], submissions: ['127.0.0.1:2465'] },
    tls: {
      cert_file: '',
      key_file: '',
      ecdsa_cert_file: '',
      ecdsa_key_file: '',
      min_version: 'TLSv1.2',
      ticket_key_rotation_ms: 3_600_000,
    },
    limits: {
      command_line_bytes: 512,
      text_line_bytes: 1000,
      message_bytes: 52_428_800,
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
    },
    smtp: { bare_line_endings: 'reject', vrfy: 'ambiguous', banner: 'ESMTP Sterna ready' },
    auth: {
      mechanisms: ['PLAIN', 'LOGIN'],
      allow_plaintext: false,
      on_smtp_listener: false,
      users_file: join(data, 'users.json'),
      enforce_sender: true,
      failure_delay_ms: 1000,
      max_failures: 10,
      max_failures_per_network: 30,
      lockout_window_ms: 900_000,
      lockout_ms: 900_000,
      backend: 'users_file',
      oauth: {
        issuer: '',
        audience: [],
        user_claim: 'email',
        jwks_file: '',
        jwks_url: '',
        algorithms: ['RS256', 'ES256', 'EdDSA'],
        clock_skew_ms: 30_000,
        jwks_timeout_ms: 5000,
        jwks_cache_ms: 600_000,
        jwks_refresh_min_ms: 30_000,
        users: 'known',
        scope: '',
        openid_configuration: '',
      },
      dovecot: { socket: '/run/dovecot/auth-client', service: 'smtp', timeout_ms: 10_000 },
    },
    relay: { trusted_networks: [] },
    spool: { dir: join(data, 'spool'), segment_bytes: 67_108_864, max_active_messages: 1000, fsync: true },
    local_delivery: {
      maildir_root: join(data, 'mailboxes'),
      postmaster: 'postmaster@mx.example.org',
      concurrency: 20,
      threads: 1,
      retry_ms: 300_000,
      owner: '',
      group: '',
      dir_mode: '0700',
      file_mode: '0600',
    },
    dns: { servers: [], timeout_ms: 5000, tries: 2 },
    mailauth: {
      listeners: ['smtp'],
      authserv_id: '',
      allow_partial_body: false,
      min_rsa_key_bits: 1024,
      timeout_ms: 20_000,
      max_header_bytes: 1024 * 1024,
      dmarc_reject_action: 'reject',
      dmarc_quarantine_action: 'junk',
      spf_fail_action: 'mark',
      temperror_action: 'accept',
      exempt: [],
    },
    dkim: {
      key_dir: '',
      sign_trusted_networks: true,
      sign_own_mail: true,
      max_header_bytes: 1024 * 1024,
      keys: [],
    },
    forwarding: { arc_seal: true, srs: true, srs_domain: '', srs_secret_file: '', srs_max_age_days: 21 },
    dmarc_reports: {
      enabled: false,
      hour: 0,
      org_name: '',
      from: '',
      flush_ms: 1000,
      failure_reports: false,
    },
    filters: [],
    outbound: {
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
    },
    lmtp: {
      verify_recipients: true,
      verify_positive_ms: 3_600_000,
      verify_negative_ms: 600_000,
      verify_unavailable: 'tempfail',
      verify_timeout_ms: 10_000,
    },
    queue: {
      first_retry_ms: 300_000,
      max_backoff_ms: 3_600_000,
      max_lifetime_ms: 432_000_000,
      jitter: 0.1,
      delay_warning_ms: 14_400_000,
    },
    log: { level: 'info', format: 'auto' },
    sendmail: { origin: '', trusted_users: [], allowed_senders: {}, scan_interval_ms: 30_000 },
    http_api: {
      listen: [],
      keys_file: resolve('data/api-keys.json'),
      idempotency_window_ms: 86_400_000,
      idempotency_max_entries: 100_000,
      messages_per_minute: 60,
    },
    diagnose: {
      public_addresses: [],
      dnsbl_zones: ['zen.spamhaus.org', 'bl.spamcop.net', 'b.barracudacentral.org'],
    },
    admin: { listen: [], token_file: '', recent_events: 10_000, metrics_top_domains: 20 },
    state: { redis: '', redis_prefix: 'sterna:', timeout_ms: 1000, on_error: 'tempfail' },
    lists: [],
    dnsbl: { zones: [], threshold: 1, timeout_ms: 5000, listeners: ['smtp'] },
    greylist: {
      enabled: false,
      listeners: ['smtp'],
      delay_ms: 300_000,
      retry_window_ms: 86_400_000,
      pass_ttl_ms: 3_110_400_000,
      trust_after: 5,
      trust_ms: 604_800_000,
      ipv4_prefix: 24,
      ipv6_prefix: 64,
    },
    early_talkers: {
      listeners: ['smtp'],
      greeting_delay_ms: 0,
      pregreet: 'reject',
      improper_pipelining: 'ignore',
    },
    rate_limits: {
      window: 'sliding',
      connections_per_minute: 0,
      messages_per_hour_per_user: 0,
      recipients_per_hour_per_user: 0,
      messages_per_hour_per_sender_domain: 0,
      recipients_per_hour_per_sender_domain: 0,
      messages_per_hour_per_network: 0,
      recipients_per_hour_per_network: 0,
      users: {},
      groups: {},
    },
  });
});

test('the loaded configuration is deeply frozen', () => {
  const cfg = parseConfigText('', 'test', HOST);
  assert.ok(Object.isFrozen(cfg));
  assert.ok(Object.isFrozen(cfg.limits));
  assert.ok(Object.isFrozen(cfg.listen.smtp));
  assert.throws(() => {
    (cfg.limits as { recipients: number }).recipients = 5;
  }, TypeError);
});

test('hostname "localhost": local_domains holds it once', () => {
  assert.deepEqual(parseConfigText('', 'test', { hostname: 'localhost' }).local_domains, ['localhost']);
});

test('configured values: hostname, local domains lower-cased and deduplicated, paths resolved', () => {
  const cfg = parseConfigText(
    `hostname = "mail.example.org"
data_dir = "/var/lib/sterna"
local_domains = ["Example.ORG", "example.org", "example.net"]
[auth]
users_file = "etc/users.json"
[spool]
dir = "/var/spool/sterna"
[tls]
cert_file = "/etc/ssl/mail.pem"
key_file = "/etc/ssl/mail.key"
[local_delivery]
postmaster = "admin@example.org"
`,
    'test',
    HOST,
  );
  assert.equal(cfg.hostname, 'mail.example.org');
  assert.deepEqual(cfg.local_domains, ['example.org', 'example.net']);
  assert.equal(cfg.data_dir, '/var/lib/sterna');
  assert.equal(cfg.auth.users_file, resolve('etc/users.json'));
  assert.equal(cfg.spool.dir, '/var/spool/sterna');
  assert.equal(cfg.local_delivery.maildir_root, '/var/lib/sterna/mailboxes');
  assert.equal(cfg.local_delivery.postmaster, 'admin@example.org');
  assert.equal(cfg.tls.cert_file, '/etc/ssl/mail.pem');
  assert.equal(cfg.tls.key_file, '/etc/ssl/mail.key');
});

test('loadConfig reads the file given, or the one named by STERNA_CONFIG', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'sterna.toml');
    await writeFile(file, `data_dir = "${dir}"\n[limits]\nrecipients = 500\n`);
    const cfg = await loadConfig(file, HOST);
    assert.equal(cfg.limits.recipients, 500);
    assert.equal(cfg.spool.dir, join(dir, 'spool'));
    const viaEnv = await loadConfig(undefined, { env: { STERNA_CONFIG: file }, ...HOST });
    assert.equal(viaEnv.limits.recipients, 500);
  });
});

test('a missing file is an error naming the file', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'nope.toml');
    await assert.rejects(loadConfig(file, HOST), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.source, file);
      assert.equal(e.key, '');
      assert.match(e.problems[0]!.message, /^cannot read the configuration file: ENOENT/);
      return true;
    });
  });
});

test('TOML syntax error names file, line and column', () => {
  const e = errorOf(() =>
    parseConfigText('hostname = "a.example"\n[limits]\nrecipients = = 3\n', '/etc/sterna.toml'),
  );
  assert.equal(e.key, '');
  assert.deepEqual(
    e.problems.map((p) => p.message),
    ['/etc/sterna.toml:3:14: TOML syntax error: invalid value'],
  );
  assert.match(e.excerpt, /recipients = = 3/);
});

test('a wrong type names the key as in TOML, what was found and what is expected', () => {
  assert.deepEqual(
    problemsOf(() => parseConfigText('[limits]\nmessage_bytes = "10M"\n', 'test', HOST)),
    ['limits.message_bytes: expected an integer from 1 to 2147483648, got string "10M"'],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('[auth]\nallow_plaintext = "yes"\n', 'test', HOST)),
    ['auth.allow_plaintext: expected true or false, got string "yes"'],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('[limits]\nrecipients = 1.5\n', 'test', HOST)),
    ['limits.recipients: expected an integer from 1 to 100000, got number 1.5'],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('[tls]\nmin_version = "TLSv1.1"\n', 'test', HOST)),
    ['tls.min_version: expected one of "TLSv1.2", "TLSv1.3", got string "TLSv1.1"'],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('[listen]\nsmtp = ["25"]\n', 'test', HOST)),
    ['listen.smtp[0]: expected "address:port", e.g. "127.0.0.1:25" or "[::1]:25", got string "25"'],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('data_dir = ""\nlisten = "x"\n', 'test', HOST)),
    ['data_dir: must not be empty', 'listen: expected a table, got string "x"'],
  );
});

test('unknown keys stop loading, name the full path and suggest the closest known key', () => {
  assert.deepEqual(
    problemsOf(() => parseConfigText('limts = 3\n', 'test', HOST)),
    ['unknown key "limts" at top level; did you mean "limits"?'],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('[limits]\nmesage_bytes = 3\n', 'test', HOST)),
    ['unknown key "limits.mesage_bytes" in table [limits]; did you mean "limits.message_bytes"?'],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('message_bytes = 3\n', 'test', HOST)),
    ['unknown key "message_bytes" at top level; it belongs in table [limits]'],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('[log]\ncolour = true\n', 'test', HOST)),
    ['unknown key "log.colour" in table [log]; known keys here: level, format'],
  );
});

test('every problem is reported, not only the first, in file order', () => {
  const e = errorOf(() =>
    parseConfigText(
      'limts = 1\n[limits]\nrecipients = 0\nerrors = "x"\n[smtp]\nvrfy = "yes"\n',
      'test',
      HOST,
    ),
  );
  assert.deepEqual(
    e.problems.map((p) => p.key),
    ['limts', 'limits.recipients', 'limits.errors', 'smtp.vrfy'],
  );
  assert.equal(e.key, 'limts');
});

test('tls.cert_file and tls.key_file are set together', () => {
  assert.deepEqual(
    problemsOf(() => parseConfigText('[tls]\ncert_file = "/etc/c.pem"\n', 'test', HOST)),
    [
      'tls.key_file: must be set when tls.cert_file is set (set both, or neither to use a generated test certificate)',
    ],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('[tls]\nkey_file = "/etc/k.pem"\n', 'test', HOST)),
    [
      'tls.cert_file: must be set when tls.key_file is set (set both, or neither to use a generated test certificate)',
    ],
  );
});

test('listen addresses are unique across listeners, defaults included', () => {
  assert.deepEqual(
    problemsOf(() => parseConfigText('[listen]\nsmtp = ["127.0.0.1:2587"]\n', 'test', HOST)),
    [
      'listen.submission[0]: "127.0.0.1:2587" is already used by listen.smtp[0] ("127.0.0.1:2587"); each listen address must be unique',
    ],
  );
  assert.deepEqual(
    problemsOf(() =>
      parseConfigText(
        '[listen]\nsmtp = ["[::1]:25", "0.0.0.0:26"]\nsubmission = ["[0:0::1]:25", "10.0.0.1:26"]\nsubmissions = ["1.2.3.400:465", "[::1]:70000"]\n',
        'test',
        HOST,
      ),
    ),
    [
      'listen.submissions[0]: "1.2.3.400" is not an IPv4 address, in "1.2.3.400:465"',
      'listen.submissions[1]: port 70000 is out of range (0 to 65535), in "[::1]:70000"',
      'listen.submission[0]: "[0:0::1]:25" is already used by listen.smtp[0] ("[::1]:25"); each listen address must be unique',
      'listen.submission[1]: "10.0.0.1:26" is already used by listen.smtp[1] ("0.0.0.0:26"); each listen address must be unique',
    ],
  );
  // Port 0 (any free port) never clashes.
  const cfg = parseConfigText(
    '[listen]\nsmtp = ["127.0.0.1:0"]\nsubmission = ["127.0.0.1:0"]\nsubmissions = ["127.0.0.1:0"]\n',
    'test',
    HOST,
  );
  assert.deepEqual(cfg.listen.smtp, ['127.0.0.1:0']);
});

test('aliases: keys are "local@domain" or "@domain", values are addresses', () => {
  const ok = parseConfigText(
    '[aliases]\n"info@example.org" = ["a@example.org", "b@example.net"]\n"@example.org" = ["catchall@example.org"]\n',
    'test',
    HOST,
  );
  assert.deepEqual(ok.aliases['@example.org'], ['catchall@example.org']);
  assert.deepEqual(
    problemsOf(() =>
      parseConfigText(
        '[aliases]\ninfo = ["a@example.org"]\n"@bad_domain" = ["x@example.org"]\n"a@example.org" = ["bob"]\n',
        'test',
        HOST,
      ),
    ),
    [
      'aliases.info: an alias must be "local@domain" or "@domain" (catch-all for the domain), got "info"',
      'aliases."@bad_domain": an alias must be "local@domain" or "@domain" (catch-all for the domain), got "@bad_domain"',
      'aliases."a@example.org"[0]: expected an address such as "user@example.org", got string "bob"',
    ],
  );
});

test('local_domains entries, hostname and postmaster must be well-formed', () => {
  assert.deepEqual(
    problemsOf(() =>
      parseConfigText(
        'hostname = "-mx.example.org"\nlocal_domains = ["example.org", "exa mple.org", "a..b"]\n[local_delivery]\npostmaster = "root"\n',
        'test',
        HOST,
      ),
    ),
    [
      'hostname: expected a domain name such as "mx.example.org", got string "-mx.example.org"',
      'local_domains[1]: expected a domain name such as "example.org", got string "exa mple.org"',
      'local_domains[2]: expected a domain name such as "example.org", got string "a..b"',
      'local_delivery.postmaster: expected an address such as "postmaster@example.org", got string "root"',
    ],
  );
});

test('formatConfigError lists every problem for the operator', () => {
  const e = errorOf(() => parseConfigText('limts = 1\n[limits]\nrecipients = 0\n', '/etc/sterna.toml', HOST));
  assert.equal(
    formatConfigError(e),
    [
      'sterna: the configuration in /etc/sterna.toml is not valid (2 problems):',
      '  - unknown key "limts" at top level; did you mean "limits"?',
      '  - limits.recipients: expected an integer from 1 to 100000, got number 0',
      '',
      'See docs/configuration.md for every key, its type and its default.',
    ].join('\n'),
  );
});

test('transport: "local", "discard" and relay tables; "*" is every other domain', () => {
  const c = parseConfigText(
    `[transport]
"sink.test" = "discard"
"here.test" = "local"
"example.com" = { relay = "[127.0.0.2]:2525", tls = "required-verify", auth_user = "u", auth_password_file = "pw.txt" }
"*" = { relay = "smtp.provider.net:587", tls = "required-verify" }
`,
    'x.toml',
    HOST,
  );
  assert.equal(c.transport['sink.test'], 'discard');
  assert.equal(c.transport['here.test'], 'local');
  assert.deepEqual(c.transport['example.com'], {
    relay: '[127.0.0.2]:2525',
    tls: 'required-verify',
    implicit_tls: false,
    auth_user: 'u',
    auth_password_file: resolve('pw.txt'),
  });
  assert.deepEqual(c.transport['*'], {
    relay: 'smtp.provider.net:587',
    tls: 'required-verify',
    implicit_tls: false,
  });
});

test('transport: tls = "none" contradicts implicit_tls and AUTH', () => {
  assert.deepEqual(
    problemsOf(() =>
      parseConfigText(
        '[transport]\n"a.test" = { relay = "h:465", implicit_tls = true, tls = "none" }\n',
        'x.toml',
        HOST,
      ),
    ),
    ['transport."a.test".tls: "none" contradicts implicit_tls = true (TLS from the first byte)'],
  );
  assert.deepEqual(
    problemsOf(() =>
      parseConfigText(
        '[transport]\n"a.test" = { relay = "h", tls = "none", auth_user = "u", auth_password = "p" }\n',
        'x.toml',
        HOST,
      ),
    ),
    ['transport."a.test".tls: AUTH is only sent over TLS; "none" would never authenticate'],
  );
});

test('transport: a relay with AUTH credentials must verify its certificate; weaker or unset tls is an error naming the key', () => {
  /** The problems of one relay entry with credentials; [] when the configuration loads. */
  const relay = (entry: string, outbound = ''): string[] => {
    const text = `${outbound}[transport]\n"a.test" = { relay = "h:587", auth_user = "u", auth_password = "p"${entry} }\n`;
    try {
      parseConfigText(text, 'x.toml', HOST);
      return [];
    } catch (e) {
      assert.ok(e instanceof ConfigError, String(e));
      return e.problems.map((p) => p.message);
    }
  };
  const why = (got: string, implicit = false): string =>
    `transport."a.test".tls: a relay with AUTH credentials must verify its certificate, so that the password only goes to the real relay: set tls = "required-verify" (and tls_ca_file for a private CA)${implicit ? ', or leave tls unset with implicit_tls = true' : ''}; got ${got}. To send the credentials without verification anyway, set transport."a.test".auth_over_unverified_tls = true`;
  assert.deepEqual(relay(', tls = "required"'), [why('string "required"')]);
  assert.deepEqual(relay(', tls = "opportunistic"'), [why('string "opportunistic"')]);
  assert.deepEqual(relay(''), [why('unset ([outbound] tls is string "opportunistic")')]);
  assert.deepEqual(relay('', '[outbound]\ntls = "required"\n'), [
    why('unset ([outbound] tls is string "required")'),
  ]);
  assert.deepEqual(relay(', implicit_tls = true, tls = "required"'), [why('string "required"', true)]);
  // Verified: accepted.
  assert.deepEqual(relay(', tls = "required-verify"'), []);
  assert.deepEqual(relay('', '[outbound]\ntls = "required-verify"\n'), []);
  assert.deepEqual(relay(', implicit_tls = true'), [], 'implicit TLS with credentials verifies by default');
  // The explicit opt-out, and only where there are credentials to protect.
  assert.deepEqual(relay(', tls = "required", auth_over_unverified_tls = true'), []);
  assert.deepEqual(
    problemsOf(() =>
      parseConfigText(
        '[transport]\n"a.test" = { relay = "h", tls = "required", auth_over_unverified_tls = true }\n',
        'x.toml',
        HOST,
      ),
    ),
    [
      'transport."a.test".auth_over_unverified_tls: only meaningful with transport."a.test".auth_user (there are no credentials to protect)',
    ],
  );
});

test('configWarnings: the auth_over_unverified_tls opt-out is named, verified relays are not', () => {
  const c = parseConfigText(
    `[transport]
"a.test" = { relay = "h:587", tls = "required", auth_user = "u", auth_password = "p", auth_over_unverified_tls = true }
"b.test" = { relay = "h:465", implicit_tls = true, auth_user = "u", auth_password = "p" }
`,
    'x.toml',
    HOST,
  );
  assert.deepEqual(configWarnings(c), [
    'transport."a.test".auth_over_unverified_tls = true: the AUTH password for h:587 is sent without verifying the relay\'s certificate; an active attacker on the path can collect it (prefer tls = "required-verify" with tls_ca_file)',
  ]);
});

test('transport: a bad relay table names the key', () => {
  assert.deepEqual(
    problemsOf(() => parseConfigText('[transport]\n"a.test" = { relay = "host:port" }\n', 'x.toml', HOST)),
    [
      'transport."a.test".relay: expected "host", "host:port" or "[address]:port", e.g. "smtp.example.net:587" or "[192.0.2.1]:25", got string "host:port"',
    ],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('[transport]\n"a.test" = { relay = "h:70000" }\n', 'x.toml', HOST)),
    ['transport."a.test".relay: the port must be from 1 to 65535, got string "h:70000"'],
  );
  assert.deepEqual(
    problemsOf(() =>
      parseConfigText('[transport]\n"a.test" = { relay = "h", tls = "yes" }\n', 'x.toml', HOST),
    ),
    [
      'transport."a.test".tls: expected one of "opportunistic", "required", "required-verify", "none", got string "yes"',
    ],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('[transport]\n"a.test" = { tls = "none" }\n', 'x.toml', HOST)),
    ['transport."a.test".relay: expected a string (in quotes), got nothing'],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('[transport]\n"a.test" = "smtp"\n', 'x.toml', HOST)),
    [
      'transport."a.test": expected "local", "discard", "lmtp:unix:/path/to/socket", "lmtp:[address]:port" or a table, got string "smtp"',
    ],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('[transport]\n"*" = "local"\n', 'x.toml', HOST)),
    [
      'transport."*": "*" (every other domain) may only name a relay table, e.g. { relay = "smtp.example.net:587" }, got string "local"',
    ],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('[transport]\n"*" = "lmtp:[127.0.0.1]:24"\n', 'x.toml', HOST)),
    [
      'transport."*": "*" (every other domain) may only name a relay table, e.g. { relay = "smtp.example.net:587" }, got string "lmtp:[127.0.0.1]:24"',
    ],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('[transport]\n"a.test" = "lmtp:unix:run/lmtp"\n', 'x.toml', HOST)),
    [
      'transport."a.test": expected "local", "discard", "lmtp:unix:/path/to/socket", "lmtp:[address]:port" or a table, got string "lmtp:unix:run/lmtp"',
    ],
  );
  const lmtp = parseConfigText(
    '[transport]\n"a.test" = "lmtp:unix:/run/dovecot/lmtp"\n"b.test" = "lmtp:[127.0.0.1]:24"\n',
    'x.toml',
    HOST,
  );
  assert.deepEqual(lmtp.transport, {
    'a.test': 'lmtp:unix:/run/dovecot/lmtp',
    'b.test': 'lmtp:[127.0.0.1]:24',
  });
  assert.deepEqual(
    problemsOf(() =>
      parseConfigText(
        '[transport]\n"a.test" = { relay = "h", tls = "required-verify", auth_user = "u" }\n',
        'x.toml',
        HOST,
      ),
    ),
    [
      'transport."a.test".auth_password_file: must be set when transport."a.test".auth_user is set (or auth_password)',
    ],
  );
  assert.deepEqual(
    problemsOf(() =>
      parseConfigText(
        '[transport]\n"a.test" = { relay = "h", auth_password = "p", auth_password_file = "f" }\n',
        'x.toml',
        HOST,
      ),
    ),
    [
      'transport."a.test".auth_password: set auth_password or auth_password_file, not both',
      'transport."a.test".auth_user: must be set when a password is set',
    ],
  );
  assert.deepEqual(
    problemsOf(() => parseConfigText('[transport]\n"a.test" = { relay = "h", relai = 1 }\n', 'x.toml', HOST)),
    [
      'unknown key "transport."a.test".relai" in table [transport."a.test"]; did you mean "transport."a.test".relay"?',
    ],
  );
});

test('auth: OAuth mechanisms need issuer, audience and one key source; paths are resolved', () => {
  assert.deepEqual(
    problemsOf(() => parseConfigText('[auth]\nmechanisms = ["PLAIN", "OAUTHBEARER"]\n', 'test', HOST)),
    [
      'auth.oauth.issuer: must be set when auth.mechanisms has OAUTHBEARER or XOAUTH2 (the tokens\' "iss")',
      'auth.oauth.audience: must be set when auth.mechanisms has OAUTHBEARER or XOAUTH2 (the tokens\' "aud", e.g. ["smtp.example.org"])',
      "auth.oauth.jwks_file: set exactly one of auth.oauth.jwks_file and auth.oauth.jwks_url (where the issuer's public keys are)",
    ],
  );
  assert.deepEqual(
    problemsOf(() =>
      parseConfigText(
        '[auth]\nmechanisms = ["XOAUTH2"]\n[auth.oauth]\nissuer = "https://id.test"\naudience = ["smtp"]\njwks_url = "ftp://x"\nalgorithms = ["none"]\n',
        'test',
        HOST,
      ),
    ),
    [
      'auth.oauth.algorithms[0]: expected one of "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", got string "none"',
      'auth.oauth.jwks_url: expected an http:// or https:// URL, got string "ftp://x"',
    ],
  );
  const cfg = parseConfigText(
    '[auth]\nmechanisms = ["OAUTHBEARER"]\n[auth.oauth]\nissuer = "https://id.test"\naudience = ["smtp"]\njwks_file = "keys/jwks.json"\n[auth.dovecot]\nsocket = "run/auth"\n',
    'test',
    HOST,
  );
  assert.equal(cfg.auth.oauth.jwks_file, resolve('keys/jwks.json'));
  assert.equal(cfg.auth.dovecot.socket, resolve('run/auth'));
});

test('auth: backend = "dovecot" refuses CRAM-MD5 and OAuth users = "known"', () => {
  assert.deepEqual(
    problemsOf(() =>
      parseConfigText(
        '[auth]\nbackend = "dovecot"\nmechanisms = ["PLAIN", "CRAM-MD5", "OAUTHBEARER"]\n[auth.oauth]\nissuer = "i"\naudience = ["a"]\njwks_url = "https://id.test/jwks"\n',
        'test',
        HOST,
      ),
    ),
    [
      'auth.mechanisms[1]: CRAM-MD5 cannot be relayed to Dovecot (backend = "dovecot" checks passwords: PLAIN and LOGIN)',
      'auth.oauth.users: must be "local_domains" with backend = "dovecot" (Sterna has no list of Dovecot\'s users)',
    ],
  );
});
