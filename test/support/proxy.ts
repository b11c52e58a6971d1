import net from 'node:net';
import type { AddressInfo } from 'node:net';

/** What to do with the next request whose head or body contains `match`. */
export type DropMode =
  /** Close the client's connection before the request reaches the server. */
  | 'before-server'
  /** Let the server answer, then close the client's connection instead of passing the answer on. */
  | 'after-server';

interface Rule {
  match: string;
  mode: DropMode;
  remaining: number;
}

/**
 * A TCP proxy in front of an app, for dropping connections at chosen moments: real sockets,
 * really closed. It also records every request chunk that passes, to count attempts.
 */
export class DroppingProxy {
  private readonly rules: Rule[] = [];
  private readonly sockets = new Set<net.Socket>();
  /** Client-to-server chunks, decoded as text, in the order they arrived. */
  readonly requests: string[] = [];

  private constructor(
    private readonly server: net.Server,
    readonly url: string,
  ) {}

  static async start(target: string): Promise<DroppingProxy> {
    const { hostname, port } = new URL(target);
    let proxy: DroppingProxy | null = null;
    const server = net.createServer((client) => proxy?.accept(client, hostname, Number(port)));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address() as AddressInfo;
    proxy = new DroppingProxy(server, `http://127.0.0.1:${address.port}`);
    return proxy;
  }

  /** Drops the next `times` requests that contain `match`, the way `mode` says. */
  drop(match: string, mode: DropMode, times = 1): void {
    this.rules.push({ match, mode, remaining: times });
  }

  /** How many requests seen so far contain `text`. */
  count(text: string): number {
    return this.requests.filter((chunk) => chunk.includes(text)).length;
  }

  /** Closes every open connection, as a network outage would. */
  cutAll(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket, host: string, port: number): void {
    const upstream = net.connect(port, host);
    this.sockets.add(client);
    this.sockets.add(upstream);
    let dropNextAnswer = false;
    const cut = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      this.requests.push(text);
      const rule = this.rules.find((candidate) => candidate.remaining > 0 && text.includes(candidate.match));
      if (rule) {
        rule.remaining -= 1;
        if (rule.mode === 'before-server') {
          cut();
          return;
        }
        dropNextAnswer = true;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (dropNextAnswer) {
        cut();
        return;
      }
      client.write(chunk);
    });
    for (const socket of [client, upstream]) {
      socket.on('error', cut);
      socket.on('close', () => {
        this.sockets.delete(socket);
        cut();
      });
    }
  }
}
