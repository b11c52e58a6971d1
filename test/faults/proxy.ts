import net from 'node:net';

export type ProxyState = 'open' | 'paused' | 'cut';

interface Link {
  client: net.Socket;
  upstream: net.Socket;
  /** Bytes read but not forwarded because the proxy paused: delivered on restore. */
  held: { to: net.Socket; chunk: Buffer }[];
}

/** `up`: client to server; `down`: server to client. */
export type Direction = 'up' | 'down';

/**
 * A TCP proxy a test can break on purpose, in the spirit of Toxiproxy: it sits between Parley
 * and PostgreSQL or Redis and can
 * - `pause()`: keep every connection open but forward nothing; bytes already sent are held and
 *   delivered after `restore()` (a network partition that heals without resets);
 * - `cut()`: reset every connection and refuse new ones (a crashed or unreachable server);
 * - `restore()`: forward normally again.
 */
export class FaultProxy {
  private readonly links = new Set<Link>();
  private current: ProxyState = 'open';
  /** Connections accepted since the proxy started, for tests that check reconnects. */
  accepted = 0;
  /**
   * Sees every chunk before it is forwarded. Calling `pause()` from here holds that very chunk,
   * which lets a test stop a conversation at an exact point (say, just before a COMMIT).
   */
  onForward: ((chunk: Buffer, direction: Direction) => void) | null = null;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}

  /** Listens on a free port of 127.0.0.1 and forwards to `target`. */
  static async start(target: { host: string; port: number }): Promise<FaultProxy> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address() as net.AddressInfo;
    const proxy = new FaultProxy(server, address.port, target);
    server.on('connection', (socket) => proxy.accept(socket));
    return proxy;
  }

  /** A proxy for the host and port of `url` (postgres:// or redis://). */
  static forUrl(url: string): Promise<FaultProxy> {
    const parsed = new URL(url);
    const defaultPort = parsed.protocol.startsWith('redis') ? 6379 : 5432;
    return FaultProxy.start({
      host: parsed.hostname || '127.0.0.1',
      port: Number(parsed.port || defaultPort),
    });
  }

  /** `url` with its host and port replaced by this proxy's. */
  rewrite(url: string): string {
    const parsed = new URL(url);
    parsed.hostname = '127.0.0.1';
    parsed.port = String(this.port);
    return parsed.toString();
  }

  get state(): ProxyState {
    return this.current;
  }

  /** Open connections through the proxy. */
  get connections(): number {
    return this.links.size;
  }

  pause(): void {
    this.current = 'paused';
    for (const link of this.links) {
      link.client.pause();
      link.upstream.pause();
    }
  }

  cut(): void {
    this.current = 'cut';
    for (const link of [...this.links]) this.drop(link);
  }

  restore(): void {
    this.current = 'open';
    for (const link of this.links) {
      for (const { to, chunk } of link.held.splice(0)) if (!to.destroyed) to.write(chunk);
      link.client.resume();
      link.upstream.resume();
    }
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    if (this.current === 'cut') {
      client.resetAndDestroy();
      return;
    }
    this.accepted++;
    const upstream = net.connect(this.target);
    const link: Link = { client, upstream, held: [] };
    this.links.add(link);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    this.forward(link, 'up');
    this.forward(link, 'down');
    if (this.current === 'paused') {
      client.pause();
      upstream.pause();
    }
    const end = () => this.drop(link);
    client.on('close', end);
    upstream.on('close', end);
    // Errors end the link like a close; the other side then sees a reset, as on a real network.
    client.on('error', end);
    upstream.on('error', end);
  }

  private drop(link: Link): void {
    if (!this.links.delete(link)) return;
    for (const socket of [link.client, link.upstream]) {
      // A reset, not a graceful end: the peer must see the connection die.
      if (!socket.destroyed) socket.resetAndDestroy();
    }
  }

  /** Copies one direction of a link with backpressure, so a paused reader really holds the bytes. */
  private forward(link: Link, direction: Direction): void {
    const [from, to] = direction === 'up' ? [link.client, link.upstream] : [link.upstream, link.client];
    from.on('data', (chunk: Buffer) => {
      this.onForward?.(chunk, direction);
      if (this.current !== 'open') {
        link.held.push({ to, chunk });
        from.pause();
        return;
      }
      if (to.destroyed) return;
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => {
          if (this.current === 'open' && !from.destroyed) from.resume();
        });
      }
    });
  }
}
