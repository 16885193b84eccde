/**
 * The JSON message of POST /v1/messages: its JSON schema (checked by fastify's validator), the
 * checks a schema cannot say (custom headers, base64), and the MIME message built from it by
 * nodemailer's composer (RFC 5322, RFC 2045-2049, RFC 2047 encoded words; Bcc is never written
 * into the message). Nothing is written by hand here: the composer folds, encodes and builds
 * multipart/alternative and multipart/mixed. It is given content only, never a path or URL.
 * Trust: every field is untrusted.
 */
import MailComposer from 'nodemailer/lib/mail-composer';
import { apiError, type ApiError } from './errors.js';

export interface AddressObject {
  name?: string;
  address: string;
}
export type AddressInput = string | AddressObject;

export interface JsonMessage {
  from: AddressInput;
  to?: AddressInput | AddressInput[];
  cc?: AddressInput | AddressInput[];
  bcc?: AddressInput | AddressInput[];
  replyTo?: AddressInput | AddressInput[];
  subject?: string;
  text?: string;
  html?: string;
  attachments?: { filename: string; content: string; contentType?: string }[];
  headers?: Record<string, string>;
}

/** No control characters (CR, LF, NUL ...) in a text that becomes a header. */
const NO_CONTROLS = '^[^\\u0000-\\u001f\\u007f]*$';

const address = {
  anyOf: [
    { type: 'string', minLength: 1, maxLength: 320 },
    {
      type: 'object',
      additionalProperties: false,
      required: ['address'],
      properties: {
        name: { type: 'string', maxLength: 256, pattern: NO_CONTROLS },
        address: { type: 'string', minLength: 1, maxLength: 320 },
      },
    },
  ],
} as const;
const addressList = { anyOf: [address, { type: 'array', items: address, maxItems: 100_000 }] } as const;

export const jsonMessageSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['from'],
  properties: {
    from: address,
    to: addressList,
    cc: addressList,
    bcc: addressList,
    replyTo: addressList,
    subject: { type: 'string', maxLength: 998, pattern: NO_CONTROLS },
    text: { type: 'string' },
    html: { type: 'string' },
    attachments: {
      type: 'array',
      maxItems: 1000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['filename', 'content'],
        properties: {
          filename: { type: 'string', minLength: 1, maxLength: 255, pattern: NO_CONTROLS },
          content: { type: 'string' },
          contentType: {
            type: 'string',
            maxLength: 255,
            pattern: '^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$',
          },
        },
      },
    },
    headers: { type: 'object', maxProperties: 100, additionalProperties: { type: 'string', maxLength: 998 } },
  },
} as const;

/** Headers a caller may not set: trace and envelope fields, and the ones the JSON fields or the composer own. */
const REFUSED_HEADERS = new Map<string, string>([
  ['received', 'Received is a trace field only servers add (RFC 5321 4.4)'],
  ['return-path', 'Return-Path is added at final delivery (RFC 5321 4.4)'],
  ['bcc', 'use the "bcc" field: Bcc recipients must not appear in the message'],
  ['authentication-results', 'only a verifier adds Authentication-Results (RFC 8601 5)'],
  ['from', 'use the "from" field'],
  ['to', 'use the "to" field'],
  ['cc', 'use the "cc" field'],
  ['reply-to', 'use the "replyTo" field'],
  ['subject', 'use the "subject" field'],
  ['date', 'the server adds Date'],
  ['mime-version', 'the MIME structure is built by the server'],
  ['content-type', 'the MIME structure is built by the server'],
  ['content-transfer-encoding', 'the MIME structure is built by the server'],
  ['content-disposition', 'the MIME structure is built by the server'],
]);

/** RFC 5322 3.6.8 field name: printable ASCII except ":". */
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]{1,76}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export function addressOf(a: AddressInput): string {
  return typeof a === 'string' ? a : a.address;
}

export function listOf(v: AddressInput | AddressInput[] | undefined): AddressInput[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** The checks the schema cannot express; null when the message may be composed. */
export function checkJsonMessage(m: JsonMessage): ApiError | null {
  for (const [name, value] of Object.entries(m.headers ?? {})) {
    if (!FIELD_NAME.test(name))
      return apiError(
        400,
        'bad_header',
        `header name ${JSON.stringify(name)} is not a field name (RFC 5322 3.6.8: printable ASCII, no colon)`,
      );
    const why = REFUSED_HEADERS.get(name.toLowerCase());
    if (why !== undefined)
      return apiError(400, 'header_not_allowed', `header ${name} may not be set: ${why}`);
    if (/[\r\n\x00]/.test(value))
      return apiError(400, 'bad_header', `header ${name}: a value may not hold CR, LF or NUL`);
  }
  for (const [i, a] of (m.attachments ?? []).entries()) {
    if (!BASE64.test(a.content))
      return apiError(
        400,
        'bad_attachment',
        `attachments[${i}].content is not base64 (RFC 4648 4, no line breaks)`,
      );
  }
  if (m.text === undefined && m.html === undefined && (m.attachments ?? []).length === 0)
    return apiError(400, 'empty_message', 'give at least one of text, html or attachments');
  return null;
}

function toComposer(a: AddressInput): { name: string; address: string } {
  return typeof a === 'string' ? { name: '', address: a } : { name: a.name ?? '', address: a.address };
}

/** Builds the RFC 5322 message (CRLF line endings). */
export function composeMessage(m: JsonMessage, ids: { messageId: string; date: number }): Promise<Buffer> {
  const headers = m.headers ?? {};
  const hasMessageId = Object.keys(headers).some((k) => k.toLowerCase() === 'message-id');
  const composer = new MailComposer({
    from: toComposer(m.from),
    to: listOf(m.to).map(toComposer),
    cc: listOf(m.cc).map(toComposer),
    replyTo: listOf(m.replyTo).map(toComposer),
    ...(m.subject !== undefined ? { subject: m.subject } : {}),
    ...(m.text !== undefined ? { text: m.text } : {}),
    ...(m.html !== undefined ? { html: m.html } : {}),
    attachments: (m.attachments ?? []).map((a) => ({
      filename: a.filename,
      content: Buffer.from(a.content, 'base64'),
      ...(a.contentType !== undefined ? { contentType: a.contentType } : {}),
    })),
    headers,
    ...(hasMessageId ? {} : { messageId: ids.messageId }),
    date: new Date(ids.date),
    newline: '\r\n',
    disableFileAccess: true,
    disableUrlAccess: true,
  });
  return composer.compile().build();
}
