/**
 * Starts a real Sterna for a test: a fresh data directory, listeners on 127.0.0.1 ephemeral
 * ports, the same startSterna() that production runs. Extra TOML is appended to the base config.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { addUser } from '../../src/auth/users.js';
import { parseConfigText } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { createLogger, silentLogger, type Logger } from '../../src/observability/log.js';
import { startSterna, type RunningSterna } from '../../src/server/app.js';
import { generateSelfSigned, TEST_CERT_NAME, TEST_KEY_NAME } from '../../src/server/tls.js';

export interface TestServer {
  config: Config;
  dataDir: string;
  ports: { smtp: number; submission: number; submissions: number };
  app: RunningSterna;
  /** Stops the server; keeps the data directory (for restart tests) unless remove is true. */
  stop(opts?: { remove?: boolean }): Promise<void>;
}

export interface TestServerOptions {
  /** TOML appended after the base config (top-level keys must come before any table). */
  toml?: string;
  /** Top-level TOML keys (placed before tables). */
  top?: string;
  /** Replaces the body of the [listen] table. */
  listen?: string;
  /** Keys for the [auth] table. */
  auth?: string;
  users?: { address: string; password: string; cram?: boolean; sendAs?: string[] }[];
  /** Reuse a data directory (restart). */
  dataDir?: string;
  /** The server's logger; default silent (debug JSON on stdout with STERNA_TEST_LOG set). */
  log?: Logger;
}

export const TEST_HOSTNAME = 'mx.sterna.test';

/**
 * The resolver of a test server that brings no [dns] table of its own: a loopback port where
 * nothing answers, so mail to another domain is deferred (DNS temporary failure) and no test
 * ever asks the system's resolver, or sends a query off this machine.
 */
const NO_DNS = `[dns]
servers = ["127.0.0.1:9"]
timeout_ms = 200
tries = 1
`;

/**
 * Mail authentication is on for the smtp listener by default; tests that do not test it turn it
 * off (they assert exact delivered bytes, and their resolver never answers), unless their TOML
 * brings a [mailauth] table (test/mailauth.test.ts).
 */
const NO_MAILAUTH = `[mailauth]
listeners = []
`;

export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const dataDir = opts.dataDir ?? (await mkdtemp(path.join(tmpdir(), 'sterna-test-')));
  const text = `hostname = "${TEST_HOSTNAME}"
data_dir = "${dataDir}"
local_domains = ["sterna.test", "localhost"]
${opts.top ?? ''}
[listen]
${opts.listen ?? 'smtp = ["127.0.0.1:0"]\nsubmission = ["127.0.0.1:0"]\nsubmissions = ["127.0.0.1:0"]'}
[auth]
failure_delay_ms = 10
${opts.auth ?? ''}
[log]
level = "${process.env['STERNA_TEST_LOG'] !== undefined ? 'debug' : 'silent'}"
format = "json"
${opts.toml ?? ''}
${/^\[dns\]/m.test(opts.toml ?? '') ? '' : NO_DNS}
${/^\[mailauth\]/m.test(opts.toml ?? '') ? '' : NO_MAILAUTH}`;
  const config = parseConfigText(text, 'test config');
  for (const u of opts.users ?? []) {
    await addUser(config.auth.users_file, u.address, u.password, {
      ...(u.cram !== undefined ? { cram: u.cram } : {}),
      ...(u.sendAs !== undefined ? { sendAs: u.sendAs } : {}),
    });
  }
  const log =
    opts.log ??
    (process.env['STERNA_TEST_LOG'] !== undefined
      ? createLogger({ level: 'debug', format: 'json' })
      : silentLogger());
  const app = await startSterna(config, log);
  const port = (kind: string): number => app.addresses.find((a) => a.listener === kind)?.port ?? 0;
  return {
    config,
    dataDir,
    ports: { smtp: port('smtp'), submission: port('submission'), submissions: port('submissions') },
    app,
    async stop(stopOpts = {}) {
      await app.close();
      if (stopOpts.remove === true) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Fresh data directories that already hold one shared test certificate, so the servers of a
 * test file do not each generate an RSA key (slow on a busy machine). startTestServer reuses it.
 */
export async function dataDirsWithCert(n: number): Promise<string[]> {
  const pems = await generateSelfSigned(TEST_HOSTNAME, new Date());
  return Promise.all(
    Array.from({ length: n }, async () => {
      const dir = await mkdtemp(path.join(tmpdir(), 'sterna-test-'));
      await mkdir(path.join(dir, 'tls'), { mode: 0o700 });
      await writeFile(path.join(dir, 'tls', TEST_KEY_NAME), pems.key, { mode: 0o600 });
      await writeFile(path.join(dir, 'tls', TEST_CERT_NAME), pems.cert);
      return dir;
    }),
  );
}
