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
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { isLoopbackHost, type Config } from '../config/schema.js';
import type { Logger } from '../observability/log.js';
import { parseHostPort } from '../server/listeners.js';
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

  const servers: Server[] = [];
  const addresses: AdminListener['addresses'] = [];
  const handler = (req: IncomingMessage, res: ServerResponse): void => app.routing(req, res);
  const closeServers = async (): Promise<void> => {
    const closed = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    for (const s of servers) s.closeAllConnections();
    await Promise.all(closed);
  };
  try {
    for (const entry of admin.listen) {
      const { host, port } = parseHostPort(entry);
      const tls = !isLoopbackHost(host);
      let server: Server;
      if (tls) {
        const https = createHttpsServer(deps.tls.serverOptions(), handler);
        // Clients without SNI get the default context: kept current on certificate reloads.
        deps.tls.attach(https);
        server = https;
      } else {
        server = createHttpServer(handler);
      }
      server.headersTimeout = 10_000;
      server.requestTimeout = 60_000;
      server.maxConnections = 256;
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      servers.push(server);
      const a = server.address();
      if (a !== null && typeof a === 'object') addresses.push({ address: a.address, port: a.port, tls });
      log.info({ listener: 'admin', address: host, port: addresses.at(-1)?.port, tls }, 'listening');
    }
  } catch (err) {
    await closeServers();
    await app.close();
    throw err;
  }
  return {
    addresses,
    async close() {
      await closeServers();
      await app.close();
    },
  };
}
