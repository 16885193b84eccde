/**
 * The HTTP servers of a fastify app on a list of addresses, as the admin listener
 * (admin/listener.ts) and the HTTP submission API (api/listener.ts) both run them: plain HTTP on
 * loopback, HTTPS (RFC 8446 via node:https) with the server's certificate on any other address
 * (kept current on certificate reloads), with the caller's timeouts and connection cap.
 * Trust: the servers accept untrusted clients; the app's routes check them.
 */
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { FastifyInstance } from 'fastify';
import { isLoopbackHost } from '../config/schema.js';
import type { Logger } from '../observability/log.js';
import { parseHostPort } from './listeners.js';
import type { TlsContextProvider } from './tls.js';

export interface HttpListenOptions {
  /** The listener's name in the log ("admin", "http_api"). */
  name: string;
  /** host:port entries. */
  listen: readonly string[];
  tls: TlsContextProvider;
  log: Logger;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  maxConnections: number;
}

export interface HttpServers {
  servers: Server[];
  addresses: { address: string; port: number; tls: boolean }[];
}

/** Binds one server per entry; if one cannot, those bound are closed and the error thrown. */
export async function listenHttp(app: FastifyInstance, o: HttpListenOptions): Promise<HttpServers> {
  const servers: Server[] = [];
  const addresses: HttpServers['addresses'] = [];
  const handler = (req: IncomingMessage, res: ServerResponse): void => app.routing(req, res);
  try {
    for (const entry of o.listen) {
      const { host, port } = parseHostPort(entry);
      const tls = !isLoopbackHost(host);
      let server: Server;
      if (tls) {
        const https = createHttpsServer(o.tls.serverOptions(), handler);
        // Clients without SNI get the default context: kept current on certificate reloads.
        o.tls.attach(https);
        server = https;
      } else {
        server = createHttpServer(handler);
      }
      server.headersTimeout = o.headersTimeoutMs;
      server.requestTimeout = o.requestTimeoutMs;
      server.maxConnections = o.maxConnections;
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
      o.log.info({ listener: o.name, address: host, port: addresses.at(-1)?.port, tls }, 'listening');
    }
  } catch (err) {
    const closed = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    for (const s of servers) s.closeAllConnections();
    await Promise.all(closed);
    throw err;
  }
  return { servers, addresses };
}
