/**
 * The HTTP submission API's listener and routes (docs/http-api.md): [http_api] listen
 * addresses, plain HTTP on loopback and HTTPS (RFC 9110, RFC 8446 via node:https) with the
 * server's certificate (server/tls.ts, reloaded with it) elsewhere; fastify routes and
 * validates the JSON (its schema, api/compose.ts). Each request: the Bearer API key (RFC 6750),
 * the Idempotency-Key, the key's rate limit, then api/submit.ts queues it as submission would.
 * Nothing of a request's Authorization header is ever logged (fastify's own logger is off).
 * Trust: every request is untrusted until its key is verified.
 */
import type { Server } from 'node:http';
import { TLSSocket } from 'node:tls';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import type { UserStore } from '../auth/users.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/log.js';
import type { RecipientPolicy } from '../policy/recipient.js';
import type { Spool } from '../queue/spool.js';
import type { DkimSigning } from '../mailauth/dkim-sign.js';
import { listenHttp } from '../server/http-listen.js';
import type { TlsContextProvider } from '../server/tls.js';
import {
  addressOf,
  checkJsonMessage,
  composeMessage,
  jsonMessageSchema,
  listOf,
  type JsonMessage,
} from './compose.js';
import { apiError, isApiError, type ApiError } from './errors.js';
import { IdempotencyStore, isValidIdempotencyKey, requestHash } from './idempotency.js';
import { ApiKeyStore, type ApiIdentity } from './keys.js';
import type { RateLimits } from '../policy/rate-limits.js';
import { KeyRateLimiter } from './rate-limit.js';
import type { ContentFilters } from '../filters/pipeline.js';
import { checkEnvelope, queueApiMessage, type SubmitDeps, type SubmitRequest } from './submit.js';

export interface HttpApiDeps {
  config: Config;
  log: Logger;
  tls: TlsContextProvider;
  users: UserStore;
  policy: RecipientPolicy;
  spool: Spool;
  /** DKIM signing: API mail is authenticated submission (src/mailauth/dkim-sign.ts). */
  dkim?: DkimSigning;
  /** The shared rate limits ([rate_limits]): the key's user counts like an SMTP AUTH user. */
  rates?: RateLimits;
  /** The content filters ([[filters]]) whose `listeners` name "http" (src/filters/). */
  filters?: ContentFilters;
  /** True once the server drains (SIGTERM): new requests get 503, as new SMTP sessions get 421. */
  draining?: () => boolean;
}

export interface HttpApi {
  addresses: { address: string; port: number; tls: boolean }[];
  close(): Promise<void>;
}

const JSON_SLACK = 1024 * 1024;

/** Retry-After of the 503 a draining server answers: a restart takes seconds. */
const DRAINING_RETRY_AFTER_S = 30;

const unsupportedMediaType = apiError(
  415,
  'unsupported_media_type',
  'send Content-Type: application/json to /v1/messages, message/rfc822 to /v1/messages/raw',
);

const rawQuerySchema = {
  type: 'object',
  properties: {
    from: { type: 'string', maxLength: 320 },
    to: { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }] },
  },
} as const;

/** Starts the listeners of [http_api] listen; none when the list is empty. */
export async function startHttpApi(deps: HttpApiDeps): Promise<HttpApi> {
  const { config, log } = deps;
  const api = config.http_api;
  if (api.listen.length === 0) return { addresses: [], close: () => Promise.resolve() };

  const keys = new ApiKeyStore(api.keys_file, (err) =>
    log.error({ err, keys_file: api.keys_file }, 'API keys file unreadable; keeping the keys read before'),
  );
  const idempotency = await IdempotencyStore.open({
    dataDir: config.data_dir,
    windowMs: api.idempotency_window_ms,
    maxEntries: api.idempotency_max_entries,
    fsync: config.spool.fsync,
    inSpool: (qid) => deps.spool.list().some((m) => m.qid === qid),
  });
  const limiter = new KeyRateLimiter(api.messages_per_minute);
  const submitDeps: SubmitDeps = { ...deps, now: Date.now };
  const identities = new WeakMap<FastifyRequest, ApiIdentity>();
  /** Requests being handled: close() lets them finish (a commit under way gets its answer). */
  const inFlight = new Set<Promise<unknown>>();

  const app = Fastify({
    logger: false,
    bodyLimit: Math.ceil((config.limits.message_bytes * 4) / 3) + JSON_SLACK,
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
  });
  // Only the two media types the endpoints take (fastify would parse text/plain too).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    'application/json',
    { parseAs: 'string' },
    app.getDefaultJsonParser('error', 'error'),
  );
  app.addContentTypeParser(
    'message/rfc822',
    // One octet over the limit still reaches the DATA decoder, which refuses it as DATA would.
    { parseAs: 'buffer', bodyLimit: config.limits.message_bytes + 1 },
    (_req, body, done) => done(null, body),
  );

  const send = (reply: FastifyReply, e: ApiError, request: FastifyRequest): FastifyReply => {
    log.info(
      {
        status: e.status,
        code: e.code,
        api_key: identities.get(request)?.id,
        client: request.socket.remoteAddress,
      },
      'api request refused',
    );
    if (e.retryAfter !== undefined) void reply.header('retry-after', String(e.retryAfter));
    return reply.code(e.status).send({ code: e.code, message: e.message });
  };

  app.setNotFoundHandler((request, reply) =>
    send(
      reply,
      apiError(
        404,
        'not_found',
        `no such endpoint: ${request.method} ${request.url.split('?')[0] ?? ''}; see docs/http-api.md`,
      ),
      request,
    ),
  );
  app.setErrorHandler(
    (err: { code?: string; statusCode?: number; message: string; validation?: unknown }, request, reply) => {
      if (err.validation !== undefined)
        return send(reply, apiError(400, 'invalid_request', err.message), request);
      switch (err.code) {
        case 'FST_ERR_CTP_BODY_TOO_LARGE':
          return send(
            reply,
            apiError(
              413,
              'message_too_big',
              `the request is larger than limits.message_bytes (${config.limits.message_bytes} octets) allows`,
            ),
            request,
          );
        case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
          return send(reply, unsupportedMediaType, request);
        default:
          if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500)
            return send(reply, apiError(400, 'invalid_request', err.message), request);
          log.error({ err }, 'api request failed');
          return send(
            reply,
            apiError(
              503,
              'internal_error',
              'the server failed to handle the request; nothing was queued: try again later',
            ),
            request,
          );
      }
    },
  );

  // Authentication first, before the body is read or parsed (RFC 6750 2.1); a draining server
  // takes nothing new at all, like its SMTP listeners (421 4.3.2), and says when to come back.
  app.addHook('onRequest', async (request, reply) => {
    if (deps.draining?.() === true)
      return send(
        reply,
        {
          ...apiError(
            503,
            'shutting_down',
            'the server is shutting down and takes no new messages; nothing was queued: try again shortly',
          ),
          retryAfter: DRAINING_RETRY_AFTER_S,
        },
        request,
      );
    const auth = request.headers.authorization ?? '';
    const m = /^Bearer ([\x21-\x7e]+)$/i.exec(auth);
    if (m === null) {
      void reply.header('www-authenticate', 'Bearer realm="sterna"');
      return send(
        reply,
        apiError(
          401,
          'unauthorized',
          'send the API key as "Authorization: Bearer KEY" (create one with sterna apikey add USER)',
        ),
        request,
      );
    }
    const identity = await keys.verify(m[1] ?? '');
    if (identity === null || !deps.users.has(identity.user)) {
      void reply.header('www-authenticate', 'Bearer realm="sterna", error="invalid_token"');
      return send(
        reply,
        apiError(401, 'invalid_key', 'the API key is unknown, deleted, or its user no longer exists'),
        request,
      );
    }
    identities.set(request, identity);
    return undefined;
  });

  /** Idempotency, rate limit, envelope checks and queuing, shared by both endpoints. */
  const handle = (...args: Parameters<typeof handleNow>): Promise<FastifyReply> => {
    const p = handleNow(...args);
    inFlight.add(p);
    return p.finally(() => inFlight.delete(p));
  };
  const handleNow = async (
    request: FastifyRequest,
    reply: FastifyReply,
    hashParts: (string | Buffer)[],
    sender: string,
    recipients: string[],
    message: SubmitRequest['message'],
    precheck: () => ApiError | null,
  ): Promise<FastifyReply> => {
    const identity = identities.get(request);
    if (identity === undefined) throw new Error('request reached a route without an identity');
    const idemHeader = request.headers['idempotency-key'];
    let idem: { key: string; hash: string } | null = null;
    if (idemHeader !== undefined) {
      if (typeof idemHeader !== 'string' || !isValidIdempotencyKey(idemHeader))
        return send(
          reply,
          apiError(400, 'bad_idempotency_key', 'Idempotency-Key: 1 to 255 visible ASCII characters, once'),
          request,
        );
      idem = { key: `${identity.id}\0${idemHeader}`, hash: requestHash(hashParts) };
      const found = idempotency.begin(idem.key, idem.hash);
      switch (found.kind) {
        case 'replay':
          return reply
            .code(found.answer.status)
            .header('idempotent-replayed', 'true')
            .send(found.answer.body);
        case 'mismatch':
          return send(
            reply,
            apiError(
              422,
              'idempotency_key_reused',
              'this Idempotency-Key was used with a different request: use a new key for a new message',
            ),
            request,
          );
        case 'in-progress':
          return send(
            reply,
            apiError(
              409,
              'idempotency_in_progress',
              'a request with this Idempotency-Key is still being handled: retry in a moment',
            ),
            request,
          );
        case 'new':
          break;
        default: {
          const never: never = found;
          throw new Error(`unhandled lookup ${String(never)}`);
        }
      }
    }
    const result = await (async (): Promise<{ qid: string } | ApiError> => {
      const early = precheck();
      if (early !== null) return early;
      const envelope = checkEnvelope(deps, identity, clientOf(request), sender, recipients);
      if (isApiError(envelope)) return envelope;
      const wait = limiter.take(identity.id);
      if (wait > 0)
        return {
          ...apiError(
            429,
            'rate_limited',
            `more than http_api.messages_per_minute (${api.messages_per_minute}) messages a minute with this key: retry after ${wait} s`,
          ),
          retryAfter: wait,
        };
      // One rule, every path: the per-user, per-sender-domain and per-network limits of
      // [rate_limits] count API messages exactly as they count SMTP ones.
      const shared = await sharedLimits(deps, identity.user, sender, clientOf(request).ip, recipients.length);
      if (shared !== null) {
        limiter.refund(identity.id);
        return shared;
      }
      const queued = await queueApiMessage(
        submitDeps,
        {
          identity,
          client: clientOf(request),
          tls: tlsOf(request),
          message,
          ...(idem !== null
            ? { beforeCommit: (qid: string) => idempotency.pending(idem.key, idem.hash, qid) }
            : {}),
        },
        envelope,
      );
      if (isApiError(queued)) limiter.refund(identity.id);
      return queued;
    })().catch((err: unknown) => {
      if (idem !== null) idempotency.release(idem.key);
      throw err;
    });
    if (isApiError(result)) {
      if (idem !== null) idempotency.release(idem.key);
      return send(reply, result, request);
    }
    const body = { id: result.qid };
    if (idem !== null) await idempotency.done(idem.key, idem.hash, { status: 202, body });
    return reply.code(202).send(body);
  };

  /** 415 before validation when a route gets the other endpoint's media type. */
  const accepts =
    (type: string) =>
    async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
      const given = (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
      if (given === type) return undefined;
      return send(reply, unsupportedMediaType, request);
    };

  app.post<{ Body: JsonMessage }>(
    '/v1/messages',
    { schema: { body: jsonMessageSchema }, preValidation: accepts('application/json') },
    (request, reply) => {
      const m = request.body;
      return handle(
        request,
        reply,
        ['json', JSON.stringify(m)],
        addressOf(m.from),
        [...listOf(m.to), ...listOf(m.cc), ...listOf(m.bcc)].map(addressOf),
        (ids) => composeMessage(m, ids),
        () => checkJsonMessage(m),
      );
    },
  );

  app.post<{ Body: Buffer; Querystring: { from?: string; to?: string | string[] } }>(
    '/v1/messages/raw',
    { schema: { querystring: rawQuerySchema }, preValidation: accepts('message/rfc822') },
    (request, reply) => {
      const identity = identities.get(request);
      const headerTo = request.headers['sterna-envelope-to'];
      const headerFrom = request.headers['sterna-envelope-from'];
      const recipients = [
        ...(request.query.to === undefined
          ? []
          : Array.isArray(request.query.to)
            ? request.query.to
            : [request.query.to]),
        ...(headerTo === undefined ? [] : Array.isArray(headerTo) ? headerTo : [headerTo]),
      ]
        .flatMap((v) => v.split(','))
        .map((v) => v.trim())
        .filter((v) => v !== '');
      const sender =
        request.query.from ??
        (typeof headerFrom === 'string' ? headerFrom.trim() : undefined) ??
        identity?.user ??
        '';
      return handle(
        request,
        reply,
        ['raw', sender, recipients.join(','), request.body],
        sender,
        recipients,
        request.body,
        () => null,
      );
    },
  );

  await app.ready();
  // Counted per API listener, not together with the SMTP listeners' limits.connections.
  const { servers, addresses } = await listenHttp(app, {
    name: 'http_api',
    listen: api.listen,
    tls: deps.tls,
    log,
    headersTimeoutMs: config.limits.command_timeout_ms,
    requestTimeoutMs: config.limits.data_total_timeout_ms,
    maxConnections: config.limits.connections,
  }).catch(async (err: unknown) => {
    await idempotency.close();
    throw err;
  });
  return {
    addresses,
    async close() {
      await closeAll(servers, inFlight);
      await app.close();
      await idempotency.close();
    },
  };
}

/** Stops accepting, lets the requests being handled finish, then closes every connection. */
async function closeAll(servers: Server[], inFlight: ReadonlySet<Promise<unknown>>): Promise<void> {
  const closed = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
  for (const s of servers) s.closeIdleConnections();
  await Promise.allSettled([...inFlight]);
  for (const s of servers) s.closeAllConnections();
  await Promise.all(closed);
}

function clientOf(request: FastifyRequest): { ip: string; port: number } {
  return { ip: request.socket.remoteAddress ?? '', port: request.socket.remotePort ?? 0 };
}

function tlsOf(request: FastifyRequest): { version: string; cipher: string } | undefined {
  const s = request.socket;
  if (!(s instanceof TLSSocket)) return undefined;
  return { version: s.getProtocol() ?? '', cipher: s.getCipher().name };
}

/** The [rate_limits] verdict for one API message: null when it may go, else the 429 (or 503) to send. */
async function sharedLimits(
  deps: HttpApiDeps,
  user: string,
  sender: string,
  ip: string,
  recipients: number,
): Promise<ApiError | null> {
  const rates = deps.rates;
  if (rates === undefined) return null;
  const subject = { user, senderDomain: sender.slice(sender.lastIndexOf('@') + 1), ip };
  try {
    let verdict = await rates.messages(subject);
    if (verdict.kind === 'ok') verdict = await rates.recipients(subject, recipients);
    if (verdict.kind === 'ok') return null;
    deps.log.warn(
      { limit: verdict.name, max: verdict.limit, scope: verdict.scope, subject: verdict.subject },
      'rate limit reached',
    );
    return {
      ...apiError(
        429,
        'rate_limited',
        `rate_limits.${verdict.name} (${verdict.limit} per hour for ${verdict.subject}) reached: retry after ${verdict.retryAfterSeconds} s`,
      ),
      retryAfter: verdict.retryAfterSeconds,
    };
  } catch (err) {
    deps.log.error({ err }, 'policy state store failed');
    if (deps.config.state.on_error === 'accept') return null;
    return apiError(503, 'policy_unavailable', 'the rate-limit check is unavailable: retry later');
  }
}
