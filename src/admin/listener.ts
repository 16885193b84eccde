/**
 * The admin HTTP listener ([admin] listen; off by default): /healthz, /readyz, /metrics
 * (Prometheus text format) and the JSON admin API under /api/ (docs/operations.md). Plain HTTP
 * on loopback; HTTPS (RFC 8446 via node:https) with the server's certificate (server/tls.ts,
 * reloaded with it) on any other address, where a bearer token (RFC 6750, [admin] token_file)
 * is required too: the configuration refuses a non-loopback address without one. With a token,
 * every route but /healthz and /readyz needs it, on loopback too. fastify routes and validates;
 * its own logger is off, so no Authorization header is ever logged.
 * Trust: every request is untrusted until its token is checked.
 */
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/log.js';
import { listenHttp } from '../server/http-listen.js';
import type { TlsContextProvider } from '../server/tls.js';
import { DASHBOARD_PATHS } from './dashboard.js';
import type { Lifecycle } from './health.js';
import { readAdminToken, TokenCheck } from './token.js';

export interface AdminListenerDeps {
  config: Config;
  log: Logger;
  tls: TlsContextProvider;
  lifecycle: Lifecycle;
  /** Adds the routes (health, metrics, API) to the app before it starts. */
  routes: (app: FastifyInstance) => void;
}

export interface AdminListener {
  addresses: { address: string; port: number; tls: boolean }[];
  close(): Promise<void>;
}

/** An error body of the admin API: a stable code and a sentence saying what to do. */
export interface AdminError {
  code: string;
  message: string;
}

export function sendError(reply: FastifyReply, status: number, code: string, message: string): FastifyReply {
  const body: AdminError = { code, message };
  return reply.code(status).send(body);
}

/** Routes that answer without the token: probes from load balancers and orchestrators. */
const OPEN_ROUTES = new Set(['/healthz', '/readyz', ...DASHBOARD_PATHS]);

/** Starts the listeners of [admin] listen; none when the list is empty. */
export async function startAdminListener(deps: AdminListenerDeps): Promise<AdminListener> {
  const { config, log } = deps;
  const admin = config.admin;
  if (admin.listen.length === 0) return { addresses: [], close: () => Promise.resolve() };
  // The schema already refused a non-loopback address without a token (admin.token_file).
  const token = admin.token_file === '' ? null : new TokenCheck(await readAdminToken(admin.token_file));

  const app = Fastify({
    logger: false,
    bodyLimit: 64 * 1024,
    ajv: { customOptions: { coerceTypes: true, removeAdditional: false, allErrors: false } },
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(
      reply,
      404,
      'not_found',
      `no such endpoint: ${request.method} ${request.url.split('?')[0] ?? ''}; see docs/operations.md`,
    ),
  );
  app.setErrorHandler(
    (err: { statusCode?: number; message: string; validation?: unknown }, _request, reply) => {
      if (err.validation !== undefined) return sendError(reply, 400, 'invalid_request', err.message);
      if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500)
        return sendError(reply, err.statusCode, 'invalid_request', err.message);
      log.error({ err }, 'admin request failed');
      return sendError(reply, 500, 'internal_error', 'the request failed; the server log says why');
    },
  );
  if (token !== null) {
    app.addHook('onRequest', async (request, reply) => {
      if (OPEN_ROUTES.has(request.url.split('?')[0] ?? '')) return undefined;
      if (token.matches(request.headers.authorization)) return undefined;
      log.info(
        { client: request.socket.remoteAddress, url: request.url.split('?')[0] },
        'admin request refused: no valid token',
      );
      void reply.header('www-authenticate', 'Bearer realm="sterna-admin"');
      return sendError(
        reply,
        401,
        'unauthorized',
        'send the token of [admin] token_file as "Authorization: Bearer TOKEN"',
      );
    });
  }
  deps.routes(app);
  await app.ready();

  const { servers, addresses } = await listenHttp(app, {
    name: 'admin',
    listen: admin.listen,
    tls: deps.tls,
    log,
    headersTimeoutMs: 10_000,
    requestTimeoutMs: 60_000,
    maxConnections: 256,
  }).catch(async (err: unknown) => {
    await app.close();
    throw err;
  });
  const closeServers = async (): Promise<void> => {
    const closed = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    for (const s of servers) s.closeAllConnections();
    await Promise.all(closed);
  };
  return {
    addresses,
    async close() {
      await closeServers();
      await app.close();
    },
  };
}
