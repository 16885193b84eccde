/**
 * Queues one message for the HTTP submission API exactly as the submission listener does
 * (DESIGN rule 10): the envelope checks of MAIL and RCPT (address syntax, smtp/address.ts;
 * limits.recipients; the recipient policy, policy/recipient.ts, as for an authenticated
 * session; the sender the user owns, UserStore.mayUseSender with auth.enforce_sender, and the
 * addresses the API key is bound to), the DATA decoder's body rules (smtp/data-decoder.ts:
 * limits.message_bytes, limits.text_line_bytes, NUL, smtp.bare_line_endings), the Received loop
 * limit, Message-ID and Date added when missing (RFC 6409 8.2, 8.3, message-body.ts), the
 * content filters whose scope names "http" (src/filters/, as at the end of an SMTP DATA), and
 * the spool's begin()/commit(): the caller answers only after commit() resolved (DESIGN rule 3).
 * Trust: the message and addresses are untrusted; the identity comes from a verified API key.
 */
import type { UserStore } from '../auth/users.js';
import type { Config } from '../config/schema.js';
import type { Envelope, MailParams } from '../message/envelope.js';
import { formatRfc5322Date, messageIdFor } from '../message/headers.js';
import type { Logger } from '../observability/log.js';
import { checkRecipient, type RecipientPolicy } from '../policy/recipient.js';
import { formatMailbox, parseForwardPath, parseReversePath } from '../smtp/address.js';
import { BdatDecoder, type DataError } from '../smtp/data-decoder.js';
import { forgedResultsFilter } from '../mailauth/forged-results.js';
import { MessageBody } from '../smtp/message-body.js';
import { SpoolError, type Spool } from '../queue/spool.js';
import type { DkimSigning } from '../mailauth/dkim-sign.js';
import { filterBeforeCommit, type ContentFilters } from '../filters/pipeline.js';
import { formatReply, type Reply } from '../smtp/replies.js';
import { apiError, type ApiError } from './errors.js';
import type { ApiIdentity } from './keys.js';
import { apiReceivedHeader } from './received.js';

export interface SubmitDeps {
  config: Config;
  spool: Spool;
  users: UserStore;
  policy: RecipientPolicy;
  log: Logger;
  now: () => number;
  /** Signs the message as authenticated submission (src/mailauth/dkim-sign.ts). */
  dkim?: DkimSigning;
  /** The content filters; those whose `listeners` name "http" check every message. */
  filters?: ContentFilters;
}

export interface SubmitRequest {
  identity: ApiIdentity;
  client: { ip: string; port: number };
  tls: { version: string; cipher: string } | undefined;
  /** The message, or a function that builds it once the queue id is known (for its Message-ID). */
  message: Buffer | ((ids: { qid: string; messageId: string; date: number }) => Promise<Buffer>);
  /** Called with the queue id after the body is checked and before the commit (idempotency). */
  beforeCommit?: (qid: string) => Promise<void>;
}

const CHUNK = 64 * 1024;

/** Sender and recipients checked as MAIL FROM and RCPT TO are; the canonical forms, or an error. */
export function checkEnvelope(
  deps: Pick<SubmitDeps, 'config' | 'users' | 'policy'>,
  identity: ApiIdentity,
  client: { ip: string; port: number },
  sender: string,
  recipients: readonly string[],
): { sender: string; recipients: string[] } | ApiError {
  const from = parseReversePath(`<${sender}>`, { smtputf8: true });
  if (!from.ok || from.mailbox === null)
    return apiError(
      400,
      'bad_sender',
      `sender "${sender}" is not a valid address: ${from.ok ? 'empty' : from.error.detail}`,
    );
  const senderText = formatMailbox(from.mailbox);
  if (!mayUse(deps, identity, senderText))
    return apiError(
      403,
      'sender_not_allowed',
      `${identity.user} may not send as <${senderText}> with this API key: use the user's own address, one of its sendAs entries (sterna user add --send-as), or one the key was created for (sterna apikey add --sender)`,
    );
  if (recipients.length === 0)
    return apiError(400, 'no_recipients', 'give at least one recipient (to, cc or bcc)');
  // RFC 5321 4.5.3.1.8: limits.recipients per message, as on SMTP.
  if (recipients.length > deps.config.limits.recipients)
    return apiError(
      400,
      'too_many_recipients',
      `${recipients.length} recipients; at most limits.recipients (${deps.config.limits.recipients}) per message: split the message`,
    );
  const out: string[] = [];
  for (const r of recipients) {
    const path = parseForwardPath(`<${r}>`, { smtputf8: true });
    if (!path.ok)
      return apiError(400, 'bad_recipient', `recipient "${r}" is not a valid address: ${path.error.detail}`);
    const verdict = checkRecipient(deps.policy, path.mailbox, {
      authUser: identity.user,
      client: { ip: client.ip, port: client.port },
    });
    const address = formatMailbox(path.mailbox);
    if (verdict.kind === 'reject')
      return apiError(
        400,
        'recipient_refused',
        `recipient <${address}> refused: ${verdict.reply.lines.join(' ')}`,
      );
    if (!out.includes(address)) out.push(address);
  }
  return { sender: senderText, recipients: out };
}

/** The submission rule (auth.enforce_sender, the user's sendAs), narrowed by the key's senders. */
function mayUse(deps: Pick<SubmitDeps, 'config' | 'users'>, identity: ApiIdentity, sender: string): boolean {
  if (!deps.users.has(identity.user)) return false;
  if (deps.config.auth.enforce_sender && !deps.users.mayUseSender(identity.user, sender)) return false;
  if (identity.senders.length === 0) return true;
  const wanted = sender.toLowerCase();
  const domain = wanted.slice(wanted.lastIndexOf('@'));
  return identity.senders.some((s) => (s.startsWith('@') ? s === domain : s === wanted));
}

function dataError(error: DataError, config: Config): ApiError {
  switch (error) {
    case 'too-big':
      return apiError(
        413,
        'message_too_big',
        `the message is larger than limits.message_bytes (${config.limits.message_bytes} octets)`,
      );
    case 'bare-lf':
      return apiError(
        400,
        'bare_line_ending',
        'the message has a bare CR or LF: end every line with CRLF (RFC 5322 2.3)',
      );
    case 'line-too-long':
      return apiError(
        400,
        'line_too_long',
        `a line is longer than limits.text_line_bytes (${config.limits.text_line_bytes} octets including CRLF, RFC 5322 2.1.1): encode the body (quoted-printable or base64)`,
      );
    case 'nul':
      return apiError(400, 'nul_in_message', 'the message has a NUL octet: encode binary content (base64)');
    default: {
      const never: never = error;
      throw new Error(`unhandled data error ${String(never)}`);
    }
  }
}

/** Writes and commits the message; the queue id once it is durable, or an error. */
export async function queueApiMessage(
  deps: SubmitDeps,
  req: SubmitRequest,
  envelope: { sender: string; recipients: string[] },
): Promise<{ qid: string } | ApiError> {
  const { config, spool, log } = deps;
  let writer;
  try {
    const spooled = spool.begin();
    writer = deps.dkim?.wrap(spooled, 'authenticated', log) ?? spooled;
  } catch (err) {
    return spoolFailure(log, err);
  }
  const now = deps.now();
  try {
    const messageId = messageIdFor(writer.qid, config.hostname);
    const bytes =
      typeof req.message === 'function'
        ? await req.message({ qid: writer.qid, messageId, date: now })
        : req.message;
    const body = new MessageBody(writer, {
      // RFC 8601 5: a forged Authentication-Results claiming our id is removed, as on SMTP.
      fieldFilter: forgedResultsFilter(config.mailauth.authserv_id || config.hostname),
      prefix: apiReceivedHeader({
        clientIp: req.client.ip,
        byHost: config.hostname,
        tls: req.tls !== undefined,
        user: req.identity.user,
        keyId: req.identity.id,
        qid: writer.qid,
        ...(envelope.recipients.length === 1 && envelope.recipients[0] !== undefined
          ? { singleRecipient: envelope.recipients[0] }
          : {}),
        date: now,
      }),
      // RFC 6409 8.2, 8.3: as the submission listener does.
      addMissing: (facts) =>
        (facts.hasMessageId ? '' : `Message-ID: ${messageId}\r\n`) +
        (facts.hasDate ? '' : `Date: ${formatRfc5322Date(now)}\r\n`),
    });
    const decoder = new BdatDecoder({
      maxMessageBytes: config.limits.message_bytes,
      maxLineBytes: config.limits.text_line_bytes,
      bareLineEndings: config.smtp.bare_line_endings,
    });
    for (let at = 0; at < bytes.length && decoder.error === null; at += CHUNK) {
      for (const piece of decoder.write(bytes.subarray(at, at + CHUNK))) await body.write(piece);
    }
    for (const piece of decoder.end()) await body.write(piece);
    if (decoder.error !== null) {
      writer.abort();
      return dataError(decoder.error, config);
    }
    const facts = await body.end();
    // RFC 5321 6.3: a loop, as on SMTP (limits.received_headers).
    if (facts.receivedCount > config.limits.received_headers) {
      writer.abort();
      return apiError(
        400,
        'mail_loop',
        `${facts.receivedCount} Received headers: more than limits.received_headers, a mail loop`,
      );
    }
    const mailParams: MailParams = {};
    if (bytes.some((b) => b > 0x7f)) mailParams.body = '8BITMIME';
    if (![envelope.sender, ...envelope.recipients].every((a) => /^[\x00-\x7f]*$/.test(a)))
      mailParams.smtputf8 = true;
    const env: Envelope = {
      sender: envelope.sender,
      mailParams,
      recipients: envelope.recipients.map((address) => ({ address, params: {} })),
      client: { ip: req.client.ip, port: req.client.port, helo: '' },
      listener: 'http',
      authUser: req.identity.user,
      ...(req.tls !== undefined ? { tls: req.tls } : {}),
      receivedAt: now,
    };
    // The content filters, as at the end of an SMTP DATA: before the commit, so 202 means accepted and stored.
    const plan = await filterBeforeCommit(
      deps.filters,
      {
        qid: writer.qid,
        sender: envelope.sender,
        recipients: envelope.recipients,
        helo: '',
        client: { ip: req.client.ip, port: req.client.port },
        listener: 'http',
        authUser: req.identity.user,
        tls: req.tls,
      },
      writer,
      env,
      log,
    );
    if (plan.kind === 'refuse') {
      writer.abort();
      return filterRefusal(plan.reply);
    }
    if (plan.kind === 'discard') {
      // Accepted and dropped, as the filter asked: the client is told "queued", as on SMTP.
      writer.abort();
      return { qid: writer.qid };
    }
    await req.beforeCommit?.(writer.qid);
    await writer.commit(plan.envelope, plan.prefix);
  } catch (err) {
    writer.abort();
    return spoolFailure(log, err);
  }
  log.info(
    {
      qid: writer.qid,
      size: writer.size,
      sender: envelope.sender,
      rcpts: envelope.recipients,
      user: req.identity.user,
      api_key: req.identity.id,
      client: req.client.ip,
    },
    'queued',
  );
  return { qid: writer.qid };
}

/**
 * A content filter's refusal as the API's error: a 5xx verdict (spam, a virus, a milter's own
 * 5xx reply) is 400 content_rejected, do not retry as is; a 4xx (soft reject, greylist, the
 * filter unavailable) is 503 content_deferred, retry later. The message carries the SMTP reply
 * a client of the smtp listener would get, the filter's own words in it.
 */
export function filterRefusal(r: Reply): ApiError {
  const smtp = formatReply(r)
    .trimEnd()
    .replace(/\r\n\d{3}[ -]/g, ' ');
  return r.code >= 500
    ? apiError(400, 'content_rejected', `the content filter refused the message: ${smtp}`)
    : apiError(503, 'content_deferred', `the content filter deferred the message; try again later: ${smtp}`);
}

function spoolFailure(log: Logger, err: unknown): ApiError {
  log.error({ err }, 'spool write failed; message not queued');
  return err instanceof SpoolError && err.code === 'ENOSPC'
    ? apiError(503, 'spool_full', 'the spool is full; nothing was queued: try again later')
    : apiError(
        503,
        'spool_unavailable',
        'the spool could not store the message; nothing was queued: try again later',
      );
}
