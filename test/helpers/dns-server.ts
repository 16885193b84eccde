/**
 * A small authoritative DNS server for tests, on 127.0.0.1 (UDP, and TCP on the same port for
 * answers that do not fit a datagram). Tests point Node's resolver at it
 * (`resolver.setServers(['127.0.0.1:' + port])`) and never touch the system resolver.
 *
 * Follows RFC 1035 (message format, 4.1; name encoding, 3.1; TCP framing, 4.2.2), RFC 2181 10.1
 * (CNAME: the alias record comes first, then the target's records), RFC 2308 (NXDOMAIN for a
 * name that does not exist, NODATA = NOERROR without answers for a name that exists without the
 * asked type; no SOA is sent, so resolvers do not cache negative answers), RFC 6891 (the
 * requestor's EDNS UDP payload size is honoured as the datagram limit; no OPT is sent back) and
 * RFC 7505 (null MX is `MX 0 .`, written in a zone as exchange "" or ".").
 *
 * Answers carry AA and RA (so c-ares accepts them as a recursive server's answers), echo the
 * query id, RD and the question bytes as received (case preserved). An answer longer than the
 * UDP limit is sent with TC and no records, which makes the client retry over TCP.
 *
 * Trust: test code only. It parses untrusted-looking bytes defensively (a malformed query gets
 * FORMERR or nothing) but is not meant to face a network: it binds only to 127.0.0.1.
 */
import dgram from 'node:dgram';
import net from 'node:net';

export type DnsRcodeName = 'NXDOMAIN' | 'SERVFAIL' | 'REFUSED';

export interface ZoneEntry {
  MX?: { preference: number; exchange: string }[];
  A?: string[];
  AAAA?: string[];
  CNAME?: string;
  /** PTR targets (RFC 1035 3.3.12), for names under in-addr.arpa / ip6.arpa (see reverseName). */
  PTR?: string[];
  /** Each record is a list of character-strings (at most 255 bytes each). */
  TXT?: string[][];
  /** TTL of every record of this name, in seconds. Default 300. */
  ttl?: number;
  /** Answer every query for this name with this rcode and no records. */
  rcode?: DnsRcodeName;
  /** Wait this long before answering (slow server). */
  delayMs?: number;
  /** Never answer queries for this name (the client times out). */
  drop?: boolean;
}

/** Names are matched case-insensitively, with or without a trailing dot. */
export interface Zone {
  [name: string]: ZoneEntry;
}

export interface DnsQueryLog {
  /** The asked name, lower-cased, without a trailing dot. */
  name: string;
  /** 'A', 'AAAA', 'MX', 'CNAME', 'TXT', … or 'TYPE<n>' for other types. */
  type: string;
  transport: 'udp' | 'tcp';
}

export interface TestDnsServer {
  port: number;
  host: '127.0.0.1';
  /** Every query received, in arrival order (including dropped ones). */
  queries: DnsQueryLog[];
  /** Replace the zone; later queries are answered from the new one. */
  setZone(z: Zone): void;
  close(): Promise<void>;
}

const TYPE = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, OPT: 41 } as const;
const TYPE_NAMES = new Map<number, string>(Object.entries(TYPE).map(([k, v]) => [v, k]));
const CLASS_IN = 1;
const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
const DEFAULT_TTL = 300;
const MAX_CNAME_CHAIN = 8;
/** RFC 1035 4.2.1: without EDNS a UDP message is at most 512 bytes. */
const UDP_MIN_PAYLOAD = 512;

function normalizeName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

function typeName(type: number): string {
  return TYPE_NAMES.get(type) ?? `TYPE${type}`;
}

interface ParsedQuery {
  id: number;
  flags: number;
  name: string;
  type: number;
  /** The question section exactly as received (name + type + class). */
  questionBytes: Buffer;
  /** The EDNS UDP payload size the client advertised, if it sent an OPT record. */
  ednsPayload: number | undefined;
}

/** Reads an uncompressed name (queries never compress the question) starting at `offset`. */
function readName(buf: Buffer, offset: number): { labels: string[]; end: number } | undefined {
  const labels: string[] = [];
  let pos = offset;
  for (;;) {
    const len = buf[pos];
    if (len === undefined || len > 63) return undefined;
    pos += 1;
    if (len === 0) return { labels, end: pos };
    if (pos + len > buf.length) return undefined;
    labels.push(buf.toString('latin1', pos, pos + len));
    pos += len;
  }
}

/** Skips a name in a resource record (may end in a compression pointer). */
function skipName(buf: Buffer, offset: number): number | undefined {
  let pos = offset;
  for (;;) {
    const len = buf[pos];
    if (len === undefined) return undefined;
    if ((len & 0xc0) === 0xc0) return pos + 2 <= buf.length ? pos + 2 : undefined;
    if (len > 63) return undefined;
    pos += 1 + len;
    if (len === 0) return pos;
  }
}

/** Returns the query, or 'formerr' with the id when the header is readable, or undefined. */
function parseQuery(buf: Buffer): ParsedQuery | { formerr: number; flags: number } | undefined {
  if (buf.length < 12) return undefined;
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  if (flags & 0x8000) return undefined; // a response, not a query
  const qdcount = buf.readUInt16BE(4);
  const arcount = buf.readUInt16BE(10);
  if (qdcount !== 1) return { formerr: id, flags };
  const name = readName(buf, 12);
  if (name === undefined || name.end + 4 > buf.length) return { formerr: id, flags };
  const type = buf.readUInt16BE(name.end);
  const questionBytes = Buffer.from(buf.subarray(12, name.end + 4));
  let ednsPayload: number | undefined;
  // Additional section (after empty answer and authority sections in a query): look for OPT.
  let pos = name.end + 4;
  for (let i = 0; i < arcount; i += 1) {
    const afterName = skipName(buf, pos);
    if (afterName === undefined || afterName + 10 > buf.length) break;
    const rrType = buf.readUInt16BE(afterName);
    const rrClass = buf.readUInt16BE(afterName + 2);
    const rdlength = buf.readUInt16BE(afterName + 8);
    if (rrType === TYPE.OPT) ednsPayload = rrClass;
    pos = afterName + 10 + rdlength;
  }
  return { id, flags, name: name.labels.join('.'), type, questionBytes, ednsPayload };
}

function encodeName(name: string): Buffer {
  const n = normalizeName(name);
  if (n === '') return Buffer.from([0]);
  const parts: Buffer[] = [];
  for (const label of n.split('.')) {
    const bytes = Buffer.from(label, 'latin1');
    if (bytes.length === 0 || bytes.length > 63) throw new Error(`test DNS: bad label in ${name}`);
    parts.push(Buffer.from([bytes.length]), bytes);
  }
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

function encodeRdata(
  type: number,
  value: string | string[] | { preference: number; exchange: string },
): Buffer {
  if (type === TYPE.A && typeof value === 'string') {
    if (net.isIPv4(value)) return Buffer.from(value.split('.').map(Number));
  } else if (type === TYPE.AAAA && typeof value === 'string') {
    if (net.isIPv6(value)) return ipv6Bytes(value);
  } else if ((type === TYPE.CNAME || type === TYPE.PTR) && typeof value === 'string') {
    return encodeName(value);
  } else if (type === TYPE.MX && typeof value === 'object' && !Array.isArray(value)) {
    const pref = Buffer.alloc(2);
    pref.writeUInt16BE(value.preference);
    const exchange = value.exchange === '.' ? '' : value.exchange;
    return Buffer.concat([pref, encodeName(exchange)]);
  } else if (type === TYPE.TXT && Array.isArray(value)) {
    const parts: Buffer[] = [];
    for (const s of value) {
      const bytes = Buffer.from(s, 'utf8');
      if (bytes.length > 255) throw new Error('test DNS: TXT character-string longer than 255 bytes');
      parts.push(Buffer.from([bytes.length]), bytes);
    }
    return Buffer.concat(parts);
  }
  throw new Error(`test DNS: bad ${typeName(type)} value ${JSON.stringify(value)}`);
}

function ipv6Bytes(address: string): Buffer {
  let text = address;
  // An embedded IPv4 tail (::ffff:192.0.2.1) becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1] !== undefined) {
    const o = v4[1].split('.').map(Number);
    const hi = (((o[0] ?? 0) << 8) | (o[1] ?? 0)).toString(16);
    const lo = (((o[2] ?? 0) << 8) | (o[3] ?? 0)).toString(16);
    text = text.slice(0, -v4[1].length) + `${hi}:${lo}`;
  }
  const [head = '', tail] = text.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros: string[] = new Array<string>(8 - headGroups.length - tailGroups.length).fill('0');
  const groups = tail === undefined ? headGroups : [...headGroups, ...zeros, ...tailGroups];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function encodeRecord(owner: Buffer, type: number, ttl: number, rdata: Buffer): Buffer {
  const fixed = Buffer.alloc(10);
  fixed.writeUInt16BE(type, 0);
  fixed.writeUInt16BE(CLASS_IN, 2);
  fixed.writeUInt32BE(ttl, 4);
  fixed.writeUInt16BE(rdata.length, 8);
  return Buffer.concat([owner, fixed, rdata]);
}

/** Pointer to the question name at offset 12 (RFC 1035 4.1.4). */
const QNAME_POINTER: Buffer = Buffer.from([0xc0, 0x0c]);

function lookup(zone: Zone, name: string): ZoneEntry | undefined {
  const n = normalizeName(name);
  for (const [key, entry] of Object.entries(zone)) if (normalizeName(key) === n) return entry;
  return undefined;
}

/** The rcode and answer records for one question, following CNAMEs inside the zone. */
function answer(zone: Zone, qname: string, qtype: number): { rcode: number; records: Buffer[] } {
  const records: Buffer[] = [];
  let name = qname;
  let owner: Buffer = QNAME_POINTER;
  for (let depth = 0; depth <= MAX_CNAME_CHAIN; depth += 1) {
    const entry = lookup(zone, name);
    if (entry === undefined) return { rcode: RCODE.NXDOMAIN, records };
    if (entry.rcode !== undefined) return { rcode: RCODE[entry.rcode], records };
    const ttl = entry.ttl ?? DEFAULT_TTL;
    if (entry.CNAME !== undefined && qtype !== TYPE.CNAME) {
      records.push(encodeRecord(owner, TYPE.CNAME, ttl, encodeRdata(TYPE.CNAME, entry.CNAME)));
      name = entry.CNAME;
      owner = encodeName(name);
      continue;
    }
    const values: (string | string[] | { preference: number; exchange: string })[] =
      qtype === TYPE.A
        ? (entry.A ?? [])
        : qtype === TYPE.AAAA
          ? (entry.AAAA ?? [])
          : qtype === TYPE.MX
            ? (entry.MX ?? [])
            : qtype === TYPE.TXT
              ? (entry.TXT ?? [])
              : qtype === TYPE.PTR
                ? (entry.PTR ?? [])
                : qtype === TYPE.CNAME && entry.CNAME !== undefined
                  ? [entry.CNAME]
                  : [];
    for (const v of values) records.push(encodeRecord(owner, qtype, ttl, encodeRdata(qtype, v)));
    return { rcode: RCODE.NOERROR, records };
  }
  return { rcode: RCODE.SERVFAIL, records: [] };
}

function buildResponse(
  id: number,
  queryFlags: number,
  rcode: number,
  question: Buffer | undefined,
  records: Buffer[],
  truncated: boolean,
): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  const opcode = queryFlags & 0x7800;
  const rd = queryFlags & 0x0100;
  // QR | opcode | AA | TC | RD | RA | rcode
  const flags = 0x8000 | opcode | 0x0400 | (truncated ? 0x0200 : 0) | rd | 0x0080 | (rcode & 0x0f);
  header.writeUInt16BE(flags, 2);
  header.writeUInt16BE(question === undefined ? 0 : 1, 4);
  header.writeUInt16BE(truncated ? 0 : records.length, 6);
  return Buffer.concat([header, question ?? Buffer.alloc(0), ...(truncated ? [] : records)]);
}

/**
 * The reverse-lookup name of an IP address (RFC 1035 3.5 in-addr.arpa, RFC 3596 2.5 ip6.arpa),
 * for writing PTR records in a zone: reverseName('192.0.2.1') is '1.2.0.192.in-addr.arpa'.
 */
export function reverseName(address: string): string {
  if (net.isIPv4(address)) return `${address.split('.').reverse().join('.')}.in-addr.arpa`;
  const nibbles = ipv6Bytes(address).toString('hex').split('').reverse().join('.');
  return `${nibbles}.ip6.arpa`;
}

/**
 * Starts the server on 127.0.0.1, UDP and TCP on the same ephemeral port.
 * Zone names may be given with or without a trailing dot; matching ignores case.
 */
export async function startDnsServer(initialZone: Zone): Promise<TestDnsServer> {
  let zone = initialZone;
  const queries: DnsQueryLog[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const sockets = new Set<net.Socket>();
  let closed = false;

  /** Computes the reply to one query message; undefined means "do not answer". */
  const respond = (msg: Buffer, transport: 'udp' | 'tcp'): { reply: Buffer; delayMs: number } | undefined => {
    const q = parseQuery(msg);
    if (q === undefined) return undefined;
    if ('formerr' in q) {
      return { reply: buildResponse(q.formerr, q.flags, RCODE.FORMERR, undefined, [], false), delayMs: 0 };
    }
    queries.push({ name: normalizeName(q.name), type: typeName(q.type), transport });
    if ((q.flags & 0x7800) !== 0) {
      return { reply: buildResponse(q.id, q.flags, RCODE.NOTIMP, q.questionBytes, [], false), delayMs: 0 };
    }
    const entry = lookup(zone, q.name);
    if (entry?.drop === true) return undefined;
    const { rcode, records } = answer(zone, q.name, q.type);
    let reply = buildResponse(q.id, q.flags, rcode, q.questionBytes, records, false);
    const limit = Math.max(UDP_MIN_PAYLOAD, q.ednsPayload ?? 0);
    if (transport === 'udp' && reply.length > limit) {
      reply = buildResponse(q.id, q.flags, rcode, q.questionBytes, records, true);
    }
    return { reply, delayMs: entry?.delayMs ?? 0 };
  };

  const later = (delayMs: number, fn: () => void): void => {
    if (delayMs <= 0) {
      fn();
      return;
    }
    const t = setTimeout(() => {
      timers.delete(t);
      if (!closed) fn();
    }, delayMs);
    timers.add(t);
  };

  const handleTcp = (socket: net.Socket): void => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let pending: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2) {
        const len = pending.readUInt16BE(0);
        if (pending.length < 2 + len) break;
        const msg = pending.subarray(2, 2 + len);
        pending = pending.subarray(2 + len);
        const r = respond(msg, 'tcp');
        if (r === undefined) continue;
        later(r.delayMs, () => {
          if (socket.destroyed) return;
          const prefix = Buffer.alloc(2);
          prefix.writeUInt16BE(r.reply.length);
          socket.write(Buffer.concat([prefix, r.reply]));
        });
      }
    });
  };

  const { udp, tcp, port } = await bindPair(handleTcp);
  udp.on('message', (msg, rinfo) => {
    const r = respond(msg, 'udp');
    if (r === undefined) return;
    later(r.delayMs, () => udp.send(r.reply, rinfo.port, rinfo.address));
  });

  return {
    port,
    host: '127.0.0.1',
    queries,
    setZone(z: Zone): void {
      zone = z;
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      await Promise.all([
        new Promise<void>((resolve) => udp.close(() => resolve())),
        new Promise<void>((resolve) => tcp.close(() => resolve())),
      ]);
    },
  };
}

/** Binds UDP on an ephemeral port of 127.0.0.1, then TCP on the same port; retries on a clash. */
async function bindPair(
  onConnection: (s: net.Socket) => void,
): Promise<{ udp: dgram.Socket; tcp: net.Server; port: number }> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 20; attempt += 1) {
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(0, '127.0.0.1', () => {
        udp.off('error', reject);
        resolve();
      });
    });
    const port = udp.address().port;
    const tcp = net.createServer(onConnection);
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, '127.0.0.1', () => {
          tcp.off('error', reject);
          resolve();
        });
      });
      return { udp, tcp, port };
    } catch (err) {
      lastError = err;
      await new Promise<void>((resolve) => udp.close(() => resolve()));
    }
  }
  throw new Error(`test DNS: no port free for both UDP and TCP: ${String(lastError)}`);
}
