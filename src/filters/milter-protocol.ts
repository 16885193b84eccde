/**
 * The Sendmail milter protocol, version 6, on the wire (libmilter's mfdef.h, as Postfix's
 * milter8.c speaks it): packets are a 32-bit big-endian length (the command octet included),
 * one command octet and the data; strings are NUL-terminated. This module encodes the MTA's
 * packets and reads the milter's, bounded in size; no policy here (milter.ts).
 * Trust level: the milter is a trusted local daemon, but its packets are still bounded
 * (MAX_PACKET) and parsed defensively: a malformed one throws.
 */
import type { Socket } from 'node:net';

export const MILTER_VERSION = 6;

/** MTA → milter commands (SMFIC_*). */
export const Cmd = {
  ABORT: 'A',
  BODY: 'B',
  CONNECT: 'C',
  MACRO: 'D',
  BODYEOB: 'E',
  HELO: 'H',
  HEADER: 'L',
  MAIL: 'M',
  EOH: 'N',
  OPTNEG: 'O',
  QUIT: 'Q',
  RCPT: 'R',
  DATA: 'T',
} as const;

/** milter → MTA replies (SMFIR_*). */
export const Reply = {
  ADDRCPT: '+',
  DELRCPT: '-',
  ADDRCPT_PAR: '2',
  ACCEPT: 'a',
  REPLBODY: 'b',
  CONTINUE: 'c',
  DISCARD: 'd',
  CHGFROM: 'e',
  ADDHEADER: 'h',
  INSHEADER: 'i',
  CHGHEADER: 'm',
  PROGRESS: 'p',
  QUARANTINE: 'q',
  REJECT: 'r',
  SKIP: 's',
  TEMPFAIL: 't',
  REPLYCODE: 'y',
  OPTNEG: 'O',
} as const;

/** SMFIF_*: the modifications the MTA allows. */
export const Action = {
  ADDHDRS: 0x01,
  CHGBODY: 0x02,
  ADDRCPT: 0x04,
  DELRCPT: 0x08,
  CHGHDRS: 0x10,
  QUARANTINE: 0x20,
} as const;

/** SMFIP_*: steps the milter does not want (NO*), or to which it will not reply (NR_*). */
export const Proto = {
  NOCONNECT: 0x1,
  NOHELO: 0x2,
  NOMAIL: 0x4,
  NORCPT: 0x8,
  NOBODY: 0x10,
  NOHDRS: 0x20,
  NOEOH: 0x40,
  NR_HDR: 0x80,
  NOUNKNOWN: 0x100,
  NODATA: 0x200,
  SKIP: 0x400,
  NR_CONN: 0x1000,
  NR_HELO: 0x2000,
  NR_MAIL: 0x4000,
  NR_RCPT: 0x8000,
  NR_DATA: 0x10000,
  NR_UNKN: 0x20000,
  NR_EOH: 0x40000,
  NR_BODY: 0x80000,
} as const;

/** What Sterna offers: every modification it applies, every step a milter may skip or not answer. */
export const OFFERED_ACTIONS =
  Action.ADDHDRS | Action.CHGBODY | Action.ADDRCPT | Action.DELRCPT | Action.CHGHDRS | Action.QUARANTINE;
export const OFFERED_PROTOCOL = Object.values(Proto).reduce((a, b) => a | b, 0);

/** The largest packet accepted from a milter (a REPLBODY chunk is at most 64 KiB in libmilter). */
export const MAX_PACKET = 1024 * 1024;
/** The largest BODY chunk sent (libmilter's MILTER_CHUNK_SIZE). */
export const BODY_CHUNK = 65535;

export interface Packet {
  cmd: string;
  data: Buffer;
}

export function packet(cmd: string, ...parts: (Buffer | string)[]): Buffer {
  const data = Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : p)));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(data.length + 1, 0);
  head.write(cmd, 4, 'latin1');
  return Buffer.concat([head, data]);
}

/** A NUL-terminated string. */
export function cstr(s: string): Buffer {
  return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

export function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n & 0xffff, 0);
  return b;
}

/** The NUL-terminated strings of a packet's data (a missing final NUL is an error). */
export function strings(data: Buffer, count: number): string[] {
  const out: string[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    const nul = data.indexOf(0, at);
    if (nul < 0) throw new Error('milter packet: string without its NUL');
    out.push(data.subarray(at, nul).toString('utf8'));
    at = nul + 1;
  }
  return out;
}

/** Reads packets from a socket, one at a time, bounded; rejects when the socket fails or closes. */
export class PacketReader {
  #buf = Buffer.alloc(0);
  #waiting: { resolve: (p: Packet) => void; reject: (e: Error) => void } | null = null;
  #error: Error | null = null;

  constructor(socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      this.#pump();
    });
    socket.on('error', (err) => this.#fail(err));
    socket.on('close', () => this.#fail(new Error('the milter closed the connection')));
  }

  next(): Promise<Packet> {
    if (this.#waiting !== null) return Promise.reject(new Error('milter: two reads at once'));
    return new Promise<Packet>((resolve, reject) => {
      this.#waiting = { resolve, reject };
      this.#pump();
    });
  }

  #pump(): void {
    const w = this.#waiting;
    if (w === null) return;
    if (this.#buf.length >= 4) {
      const len = this.#buf.readUInt32BE(0);
      if (len < 1 || len > MAX_PACKET) {
        this.#fail(new Error(`milter packet of ${len} octets`));
        return;
      }
      if (this.#buf.length >= 4 + len) {
        const cmd = String.fromCharCode(this.#buf[4] ?? 0);
        const data = Buffer.from(this.#buf.subarray(5, 4 + len));
        this.#buf = this.#buf.subarray(4 + len);
        this.#waiting = null;
        w.resolve({ cmd, data });
        return;
      }
    }
    if (this.#error !== null) {
      this.#waiting = null;
      w.reject(this.#error);
    }
  }

  #fail(err: Error): void {
    if (this.#error === null) this.#error = err;
    this.#pump();
  }
}
