/**
 * Milter client: one message through a Sendmail milter (protocol version 6, as Postfix speaks
 * it; docs/filters.md). At the end of data Sterna opens a connection and replays the whole
 * transaction: option negotiation, connect, helo, envfrom, envrcpt (each recipient), data, the
 * header fields of the stored message (our Received included, as Postfix sends its own), end of
 * headers, the body in chunks of at most 65535 octets, end of message. Steps the milter declined
 * at negotiation (SMFIP_NO*) are not sent; steps it will not answer (SMFIP_NR_*) are not waited
 * for. Replies: accept, continue, reject, tempfail, discard, a custom reply (validated: a 4xx or
 * 5xx code whose enhanced code has its class), quarantine (the Junk folder); at end of message
 * the modifications: add, insert and change header fields, add and delete recipients, replace
 * the body. A refusal at any step (a recipient's too) refuses the message: there is no per
 * recipient answer left to give at the end of data.
 * Macros sent: j, {daemon_name}, _, {client_addr}, {client_port}, {client_name} (connect);
 * {tls_version}, {cipher} (helo, when TLS); i, {mail_addr}, {auth_authen} (envfrom); {rcpt_addr}
 * (envrcpt); i (end of message).
 * Trust level: the milter is trusted local software; what it sends is still bounded and checked
 * (names, values, codes, addresses) before it reaches a reply or the message.
 */
import net from 'node:net';
import { isIP } from 'node:net';
import {
  Action,
  BODY_CHUNK,
  Cmd,
  cstr,
  MILTER_VERSION,
  OFFERED_ACTIONS,
  OFFERED_PROTOCOL,
  packet,
  PacketReader,
  Proto,
  Reply,
  strings,
  u16,
  u32,
  type Packet,
} from './milter-protocol.js';
import type { FilterClient, FilterInput, FilterMessage } from './pipeline.js';
import {
  isFieldName,
  safeFieldValue,
  verdict,
  type FilterAction,
  type FilterVerdict,
  type MessageEdit,
} from './verdict.js';

export type MilterAddress = { host: string; port: number } | { path: string };

export interface MilterOptions {
  address: MilterAddress;
  /** Our hostname (macro j). */
  hostname: string;
  /** The largest replacement body kept (SMFIR_REPLBODY). */
  maxBodyBytes: number;
}

/** "inet:host:port" or "unix:/path" (Postfix's notation, validated by the config schema). */
export function parseMilterAddress(spec: string): MilterAddress {
  if (spec.startsWith('unix:')) return { path: spec.slice('unix:'.length) };
  const rest = spec.slice('inet:'.length);
  const colon = rest.lastIndexOf(':');
  return { host: rest.slice(0, colon).replace(/^\[(.*)\]$/, '$1'), port: Number(rest.slice(colon + 1)) };
}

/** The largest header section read from the stored message to send it field by field. */
const MAX_HEADER_BYTES = 1024 * 1024;

/** An early answer of the milter that ends the conversation. */
class Decided extends Error {
  constructor(readonly action: FilterAction) {
    super(`milter decided: ${action.kind}`);
  }
}

export class MilterClient implements FilterClient {
  readonly #o: MilterOptions;

  constructor(o: MilterOptions) {
    this.#o = o;
  }

  async check(msg: FilterMessage, signal: AbortSignal): Promise<FilterVerdict> {
    const stored = await msg.open();
    const socket =
      'path' in this.#o.address ? net.connect(this.#o.address.path) : net.connect(this.#o.address);
    const onAbort = (): void => {
      socket.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      const session = new MilterSession(socket, new PacketReader(socket), this.#o, msg.ctx);
      return await session.run(stored);
    } finally {
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
    }
  }
}

class MilterSession {
  readonly #socket: net.Socket;
  readonly #reader: PacketReader;
  readonly #o: MilterOptions;
  readonly #ctx: FilterInput;
  #actions = 0;
  #proto = 0;

  constructor(socket: net.Socket, reader: PacketReader, o: MilterOptions, ctx: FilterInput) {
    this.#socket = socket;
    this.#reader = reader;
    this.#o = o;
    this.#ctx = ctx;
  }

  async run(stored: AsyncIterable<Buffer>): Promise<FilterVerdict> {
    try {
      await this.#negotiate();
      await this.#envelope();
      const it = stored[Symbol.asyncIterator]();
      const { fields, rest } = await readHeader(it);
      await this.#headers(fields);
      await this.#body(rest, it);
      const v = await this.#endOfMessage();
      this.#send(packet(Cmd.QUIT));
      return v;
    } catch (err) {
      if (!(err instanceof Decided)) throw err;
      this.#send(packet(Cmd.QUIT));
      return verdict(err.action, `milter: ${err.action.kind} before the end of the message`);
    }
  }

  #send(p: Buffer): boolean {
    return this.#socket.write(p);
  }

  async #negotiate(): Promise<void> {
    this.#send(packet(Cmd.OPTNEG, u32(MILTER_VERSION), u32(OFFERED_ACTIONS), u32(OFFERED_PROTOCOL)));
    const r = await this.#reader.next();
    if (r.cmd !== Reply.OPTNEG || r.data.length < 12)
      throw new Error(`milter answered "${r.cmd}" to option negotiation`);
    const version = r.data.readUInt32BE(0);
    if (version < 2 || version > MILTER_VERSION) throw new Error(`milter speaks protocol version ${version}`);
    this.#actions = r.data.readUInt32BE(4) & OFFERED_ACTIONS;
    this.#proto = r.data.readUInt32BE(8);
    if ((this.#proto & ~OFFERED_PROTOCOL) !== 0)
      throw new Error(`milter asks for protocol steps Sterna does not offer (0x${this.#proto.toString(16)})`);
  }

  #has(flag: number): boolean {
    return (this.#proto & flag) !== 0;
  }

  #macros(cmd: string, pairs: [string, string | undefined][]): void {
    const parts: Buffer[] = [];
    for (const [name, value] of pairs) {
      if (value === undefined) continue;
      parts.push(cstr(name.length === 1 ? name : `{${name}}`), cstr(value));
    }
    if (parts.length > 0) this.#send(packet(Cmd.MACRO, cmd, ...parts));
  }

  /** Sends one step (unless declined) and waits for its answer (unless the milter gives none). */
  async #step(no: number, nr: number, p: Buffer): Promise<void> {
    if (no !== 0 && this.#has(no)) return;
    if (!this.#send(p)) await new Promise<void>((r) => this.#socket.once('drain', r));
    if (nr !== 0 && this.#has(nr)) return;
    const r = await this.#answer();
    if (r.cmd === Reply.CONTINUE) return;
    if (r.cmd === Reply.SKIP) throw new SkipBody();
    throw new Decided(this.#final(r));
  }

  /** The next answer that is not a progress report. */
  async #answer(): Promise<Packet> {
    for (;;) {
      const r = await this.#reader.next();
      if (r.cmd !== Reply.PROGRESS) return r;
    }
  }

  /** accept, reject, tempfail, discard or a custom reply; anything else is a protocol error. */
  #final(r: Packet): FilterAction {
    switch (r.cmd) {
      case Reply.ACCEPT:
        return { kind: 'accept' };
      case Reply.REJECT:
        return { kind: 'reject', text: '' };
      case Reply.TEMPFAIL:
        return { kind: 'tempfail', text: '' };
      case Reply.DISCARD:
        return { kind: 'discard' };
      case Reply.REPLYCODE:
        return replyCode(strings(r.data, 1)[0] ?? '');
      default:
        throw new Error(`milter answered "${r.cmd}" where a decision was due`);
    }
  }

  async #envelope(): Promise<void> {
    const c = this.#ctx;
    const family = isIP(c.client.ip) === 6 ? '6' : '4';
    const name = c.client.hostname ?? `[${c.client.ip}]`;
    this.#macros(Cmd.CONNECT, [
      ['j', this.#o.hostname],
      ['daemon_name', 'sterna'],
      ['_', `${c.helo !== '' ? c.helo : 'unknown'} [${c.client.ip}]`],
      ['client_addr', c.client.ip],
      ['client_port', String(c.client.port)],
      ['client_name', name],
    ]);
    await this.#step(
      Proto.NOCONNECT,
      Proto.NR_CONN,
      packet(Cmd.CONNECT, cstr(name), family, u16(c.client.port), cstr(c.client.ip)),
    );
    this.#macros(
      Cmd.HELO,
      c.tls !== undefined
        ? [
            ['tls_version', c.tls.version],
            ['cipher', c.tls.cipher],
          ]
        : [],
    );
    await this.#step(Proto.NOHELO, Proto.NR_HELO, packet(Cmd.HELO, cstr(c.helo)));
    this.#macros(Cmd.MAIL, [
      ['i', c.qid],
      ['mail_addr', c.sender],
      ['auth_authen', c.authUser],
    ]);
    await this.#step(Proto.NOMAIL, Proto.NR_MAIL, packet(Cmd.MAIL, cstr(`<${c.sender}>`)));
    for (const rcpt of c.recipients) {
      this.#macros(Cmd.RCPT, [['rcpt_addr', rcpt]]);
      await this.#step(Proto.NORCPT, Proto.NR_RCPT, packet(Cmd.RCPT, cstr(`<${rcpt}>`)));
    }
    await this.#step(Proto.NODATA, Proto.NR_DATA, packet(Cmd.DATA));
  }

  async #headers(fields: Buffer[]): Promise<void> {
    for (const raw of fields) {
      const text = raw.toString('utf8').replace(/\r\n$/, '');
      const colon = text.indexOf(':');
      if (colon <= 0) continue; // not a field: nothing a milter could name
      // As Postfix without SMFIP_HDR_LEADSPC: the space after the colon is not part of the
      // value; folded lines end in LF, as in sendmail's and Postfix's queue files.
      const value = text
        .slice(colon + 1)
        .replace(/^ /, '')
        .replace(/\r\n/g, '\n');
      await this.#step(
        Proto.NOHDRS,
        Proto.NR_HDR,
        packet(Cmd.HEADER, cstr(text.slice(0, colon).trimEnd()), cstr(value)),
      );
    }
    await this.#step(Proto.NOEOH, Proto.NR_EOH, packet(Cmd.EOH));
  }

  async #body(first: Buffer, it: AsyncIterator<Buffer>): Promise<void> {
    if (this.#has(Proto.NOBODY)) {
      await it.return?.();
      return;
    }
    try {
      // Full chunks of BODY_CHUNK octets across the spool's pieces, the remainder last.
      let pending = first;
      for (;;) {
        while (pending.length >= BODY_CHUNK) {
          await this.#step(0, Proto.NR_BODY, packet(Cmd.BODY, pending.subarray(0, BODY_CHUNK)));
          pending = pending.subarray(BODY_CHUNK);
        }
        const step = await it.next();
        if (step.done === true) break;
        pending = Buffer.concat([pending, step.value]);
      }
      if (pending.length > 0) await this.#step(0, Proto.NR_BODY, packet(Cmd.BODY, pending));
    } catch (err) {
      if (!(err instanceof SkipBody)) throw err;
      await it.return?.();
    }
  }

  /** End of message: the modifications, then the final answer. */
  async #endOfMessage(): Promise<FilterVerdict> {
    this.#macros(Cmd.BODYEOB, [['i', this.#ctx.qid]]);
    this.#send(packet(Cmd.BODYEOB));
    const edits: MessageEdit[] = [];
    const add: string[] = [];
    const remove: string[] = [];
    const body: Buffer[] = [];
    let bodyBytes = 0;
    let quarantine = false;
    for (;;) {
      const r = await this.#answer();
      switch (r.cmd) {
        case Reply.ADDHEADER: {
          this.#allowed(Action.ADDHDRS, r.cmd);
          const [name = '', value = ''] = strings(r.data, 2);
          edits.push({ op: 'append', name: fieldName(name), value: safeFieldValue(value) });
          break;
        }
        case Reply.INSHEADER: {
          this.#allowed(Action.ADDHDRS, r.cmd);
          const index = r.data.readUInt32BE(0);
          const [name = '', value = ''] = strings(r.data.subarray(4), 2);
          edits.push(
            index === 0
              ? { op: 'prepend', name: fieldName(name), value: safeFieldValue(value) }
              : { op: 'insert', index, name: fieldName(name), value: safeFieldValue(value) },
          );
          break;
        }
        case Reply.CHGHEADER: {
          this.#allowed(Action.CHGHDRS, r.cmd);
          const index = r.data.readUInt32BE(0);
          const [name = '', value = ''] = strings(r.data.subarray(4), 2);
          edits.push({
            op: 'change',
            name: fieldName(name),
            index: Math.max(1, index),
            value: value === '' ? null : safeFieldValue(value),
          });
          break;
        }
        case Reply.REPLBODY:
          this.#allowed(Action.CHGBODY, r.cmd);
          bodyBytes += r.data.length;
          if (bodyBytes > this.#o.maxBodyBytes)
            throw new Error(`replacement body over ${this.#o.maxBodyBytes} octets`);
          body.push(r.data);
          break;
        case Reply.ADDRCPT:
        case Reply.ADDRCPT_PAR:
          this.#allowed(Action.ADDRCPT, r.cmd);
          add.push(envelopeAddress(strings(r.data, 1)[0] ?? ''));
          break;
        case Reply.DELRCPT:
          this.#allowed(Action.DELRCPT, r.cmd);
          remove.push(envelopeAddress(strings(r.data, 1)[0] ?? ''));
          break;
        case Reply.QUARANTINE:
          this.#allowed(Action.QUARANTINE, r.cmd);
          quarantine = true;
          break;
        case Reply.CONTINUE:
        case Reply.ACCEPT: {
          if (body.length > 0) edits.push({ op: 'body', body: crlfBody(Buffer.concat(body)) });
          const v = verdict(
            quarantine ? { kind: 'junk' } : { kind: 'accept' },
            `milter: ${r.cmd === Reply.ACCEPT ? 'accept' : 'continue'}${quarantine ? ', quarantine' : ''}`,
            edits,
          );
          v.addRecipients = add;
          v.removeRecipients = remove;
          return v;
        }
        default: {
          const action = this.#final(r);
          return verdict(action, `milter: ${action.kind}`);
        }
      }
    }
  }

  #allowed(action: number, cmd: string): void {
    if ((this.#actions & action) === 0)
      throw new Error(`milter sent "${cmd}", a modification it did not ask for`);
  }
}

class SkipBody extends Error {}

/** The stored header section, field by field (with their CRLF), and what follows the empty line. */
async function readHeader(it: AsyncIterator<Buffer>): Promise<{ fields: Buffer[]; rest: Buffer }> {
  let held = Buffer.alloc(0);
  let end = -1;
  while (end < 0) {
    const step = await it.next();
    if (step.done === true) break;
    held = Buffer.concat([held, step.value]);
    end = held.indexOf('\r\n\r\n');
    if (end < 0 && held.length > MAX_HEADER_BYTES)
      throw new Error(`header section over ${MAX_HEADER_BYTES} octets`);
  }
  const header = end >= 0 ? held.subarray(0, end + 2) : held;
  const fields: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < header.length; i++) {
    if (header[i] === 0x0a && header[i + 1] !== 0x20 && header[i + 1] !== 0x09) {
      fields.push(header.subarray(start, i + 1));
      start = i + 1;
    }
  }
  if (start < header.length) fields.push(header.subarray(start));
  return { fields, rest: end >= 0 ? held.subarray(end + 4) : Buffer.alloc(0) };
}

function fieldName(name: string): string {
  if (!isFieldName(name)) throw new Error(`milter named a header field "${name.slice(0, 40)}"`);
  return name;
}

/** An address from SMFIR_ADDRCPT / SMFIR_DELRCPT: angle brackets optional, no spaces or controls. */
function envelopeAddress(raw: string): string {
  const a = raw.trim().replace(/^<(.*)>$/, '$1');
  if (!/^[^\s<>\x00-\x1f\x7f]+@[^\s<>@\x00-\x1f\x7f]+$/.test(a))
    throw new Error(`milter gave the address "${raw.slice(0, 60)}"`);
  return a;
}

/** A replacement body with CRLF line ends, ending in CRLF (RFC 5321 2.3.8). */
function crlfBody(b: Buffer): Buffer {
  const text = b.toString('latin1').replace(/\r?\n/g, '\r\n');
  return Buffer.from(text.endsWith('\r\n') || text === '' ? text : `${text}\r\n`, 'latin1');
}

/**
 * SMFIR_REPLYCODE: "550 5.7.1 text" (RFC 5321 4.2: a 4xx or 5xx code; RFC 3463: an enhanced code
 * of the same class, added when missing). A multi-line reply keeps its text, joined.
 */
export function replyCode(text: string): FilterAction {
  const lines = text.split(/\r?\n/).filter((l) => l !== '');
  const m = /^([45])(\d\d)[ -](?:([45])\.(\d{1,3})\.(\d{1,3})(?: |$))?(.*)$/.exec(lines[0] ?? '');
  if (m === null) throw new Error(`milter reply "${text.slice(0, 60)}" is not a 4xx or 5xx reply`);
  const [, cls = '', rest = '', ecls, sub, third] = m;
  if (ecls !== undefined && ecls !== cls)
    throw new Error(`milter reply "${text.slice(0, 60)}": enhanced code of another class`);
  const code = Number(cls + rest);
  const enhanced = ecls !== undefined ? `${ecls}.${sub ?? '0'}.${third ?? '0'}` : `${cls}.7.1`;
  const words = [
    m[6] ?? '',
    ...lines.slice(1).map((l) => l.replace(/^[45]\d\d[ -](?:[45]\.\d{1,3}\.\d{1,3} )?/, '')),
  ]
    .join(' ')
    .trim();
  return { kind: 'reply', code, enhanced, text: words };
}
