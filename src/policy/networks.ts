/**
 * Network lists (CIDR) for relay trust. Built on node:net BlockList; IPv4-mapped IPv6
 * addresses (::ffff:a.b.c.d) are matched as IPv4. A list never changes once built (a reload
 * builds a new one), so answers are remembered per address: BlockList.check makes a
 * SocketAddress on every call, and a message asks two or three times.
 */
import { BlockList, isIP } from 'node:net';

export class NetworkList {
  readonly #list = new BlockList();
  readonly #empty: boolean;
  /** Recent answers by address; emptied when it reaches MAX_REMEMBERED. */
  readonly #answers = new Map<string, boolean>();

  constructor(networks: readonly string[]) {
    this.#empty = networks.length === 0;
    for (const n of networks) {
      const [addr = '', bits] = n.split('/');
      const family = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
      if (bits === undefined) this.#list.addAddress(addr, family);
      else this.#list.addSubnet(addr, Number(bits), family);
    }
  }

  has(ip: string): boolean {
    if (this.#empty) return false;
    const known = this.#answers.get(ip);
    if (known !== undefined) return known;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
    const addr = mapped?.[1] ?? ip;
    const family = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
    const answer = this.#list.check(addr, family);
    if (this.#answers.size >= MAX_REMEMBERED) this.#answers.clear();
    this.#answers.set(ip, answer);
    return answer;
  }
}

/** Addresses whose answers a list remembers at most (a few hundred KiB). */
const MAX_REMEMBERED = 4096;
