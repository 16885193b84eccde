/**
 * A real Sterna with its admin listener on 127.0.0.1 (an ephemeral port), and a small fetch
 * wrapper for the admin API: with the bearer token, or without it. 127.0.0.1 is a trusted
 * network, so the tests can queue mail for other domains with sendMessage (helpers/outbound.ts);
 * with no DNS answering, that mail stays deferred in the queue.
 * Trust: test code only; it talks to 127.0.0.1.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startTestServer, type TestServer, type TestServerOptions } from './server.js';
import { startTlsSession } from './smtp-client.js';
import { makeTempDir } from './tools.js';

export interface AdminTestServer {
  server: TestServer;
  /** "http://127.0.0.1:PORT" */
  base: string;
  token: string | null;
  /** A request with the token (when the server has one), or without it (auth: false). */
  call(
    method: string,
    urlPath: string,
    opts?: { body?: unknown; auth?: boolean },
  ): Promise<{ status: number; json: unknown; text: string; headers: Headers }>;
  stop(): Promise<void>;
}

export async function startAdminServer(
  opts: { token?: boolean; admin?: string } & TestServerOptions = {},
): Promise<AdminTestServer> {
  const tmp = await makeTempDir('sterna-admin-');
  const token = opts.token === false ? null : randomBytes(24).toString('hex');
  const tokenFile = path.join(tmp.dir, 'admin-token');
  if (token !== null) await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
  const server = await startTestServer({
    ...opts,
    toml: `${opts.toml ?? ''}
[admin]
listen = ["127.0.0.1:0"]
${token !== null ? `token_file = "${tokenFile}"` : ''}
${opts.admin ?? ''}
`,
  });
  const port = server.app.admin[0]?.port ?? 0;
  const base = `http://127.0.0.1:${port}`;
  return {
    server,
    base,
    token,
    async call(method, urlPath, o = {}) {
      const headers: Record<string, string> = {};
      if (o.auth !== false && token !== null) headers['authorization'] = `Bearer ${token}`;
      if (o.body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(`${base}${urlPath}`, {
        method,
        headers,
        ...(o.body !== undefined ? { body: JSON.stringify(o.body) } : {}),
      });
      const text = await res.text();
      let json: unknown = null;
      try {
        json = JSON.parse(text);
      } catch {
        json = null;
      }
      return { status: res.status, json, text, headers: res.headers };
    },
    async stop() {
      await server.stop({ remove: true });
      await tmp.cleanup();
    },
  };
}

/** AUTH PLAIN after STARTTLS on the submission listener at `port`; the reply code (235, 535). */
export async function authPlain(port: number, user: string, password: string): Promise<number> {
  const { client } = await startTlsSession(port, 'client.test');
  try {
    return (await client.cmd(`AUTH PLAIN ${Buffer.from(`\0${user}\0${password}`).toString('base64')}`)).code;
  } finally {
    client.close();
  }
}
