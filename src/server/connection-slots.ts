/**
 * Who may open one more SMTP connection: `[limits] connections` in total and
 * `connections_per_ip` per client network (policy/client-network.ts). Listeners ask before they
 * greet and give the slot back on close. In one process the counts are here (LocalSlots); in a
 * cluster they are leased from the primary so that the limits hold across every worker
 * (cluster/connection-leases.ts).
 * Trust: internal; the network keys come from the kernel's peer address.
 */

/** Why a connection was refused (the reply ids of smtp/replies.ts). */
export type SlotRefusal = 'TOO_MANY_CONNECTIONS' | 'TOO_MANY_CONNECTIONS_FROM_IP';

export interface ConnectionSlots {
  /**
   * Takes a slot for one connection from `network`: null when it got one, else why not. A
   * promise when the answer needs another process (a cluster worker asking its primary).
   */
  acquire(network: string): SlotRefusal | null | Promise<SlotRefusal | null>;
  /** Gives back the slot of a connection from `network` that acquire() granted. */
  release(network: string): void;
}

export interface SlotLimits {
  /** [limits] connections */
  total: number;
  /** [limits] connections_per_ip */
  perNetwork: number;
}

/** Open connections, in total and per network. */
export class ConnectionCounts {
  #total = 0;
  readonly #byNetwork = new Map<string, number>();

  get total(): number {
    return this.#total;
  }

  of(network: string): number {
    return this.#byNetwork.get(network) ?? 0;
  }

  add(network: string): void {
    this.#total++;
    this.#byNetwork.set(network, this.of(network) + 1);
  }

  /** Returns what is left open from `network`. */
  remove(network: string): number {
    this.#total = Math.max(0, this.#total - 1);
    const n = this.of(network) - 1;
    if (n <= 0) this.#byNetwork.delete(network);
    else this.#byNetwork.set(network, n);
    return Math.max(0, n);
  }
}

/** The limits counted in this process alone: exact when it is the only one listening. */
export class LocalSlots implements ConnectionSlots {
  readonly #limits: SlotLimits;
  readonly #open = new ConnectionCounts();

  constructor(limits: SlotLimits) {
    this.#limits = limits;
  }

  acquire(network: string): SlotRefusal | null {
    if (this.#open.total >= this.#limits.total) return 'TOO_MANY_CONNECTIONS';
    if (this.#open.of(network) >= this.#limits.perNetwork) return 'TOO_MANY_CONNECTIONS_FROM_IP';
    this.#open.add(network);
    return null;
  }

  release(network: string): void {
    this.#open.remove(network);
  }
}
