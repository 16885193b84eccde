/**
 * Network lists (CIDR) for relay trust. Built on node:net BlockList; IPv4-mapped IPv6
 * addresses (::ffff:a.b.c.d) are matched as IPv4.
 */
import { BlockList, isIP } from 'node:net';

export class NetworkList {
  readonly #list = new BlockList();
  readonly #empty: boolean;

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
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
    const addr = mapped?.[1] ?? ip;
    const family = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
    return this.#list.check(addr, family);
  }
}
