import net from 'node:net';

export type ProxyState = 'open' | 'paused' | 'cut';

/** `up`: client to server; `down`: server to client. */
export type Direction = 'up' | 'down';

/** What to do with the next request whose bytes contain `match`. */
export type DropMode =
  /** Cut the connection before the request reaches the server. */
  | 'before-server'
  /** Let the server answer, then cut the connection instead of passing the answer on. */
  | 'after-server';

interface Rule {
  match: string;
  mode: DropMode;
  remaining: number;
}

interface Link {
  client: net.Socket;
  upstream: net.Socket;
  /** Bytes read but not forwarded because the proxy paused: delivered on restore. */
  held: { to: net.Socket; chunk: Buffer }[];
  /** A rule matched the request: the server's answer cuts the connection instead. */
  dropAnswer: boolean;
}

const DEFAULT_PORTS: Record<string, number> = {
  'http:': 80,
  'redis:': 6379,
  'postgres:': 5432,
  'postgresql:': 5432,
};

/**
 * A TCP proxy a test can break on purpose, in the spirit of Toxiproxy, in front of the app,
 * PostgreSQL or Redis: real sockets, really reset. It can
 * - `pause()`: keep every connection open but forward nothing; bytes already sent are held and
 *   delivered after `restore()` (a network partition that heals without resets);
 * - `cut()`: reset every connection and refuse new ones (a crashed or unreachable server);
 * - `restore()`: forward normally again;
 * - `reset()`: reset every open connection but go on accepting (a blip on the network);
 * - `drop(match, mode)`: cut the connection of the next request that contains `match`, before
 *   the server sees it or after it answered.
 * It records every client-to-server chunk, as text, to count attempts.
 */
export class TcpProxy {
  private readonly links = new Set<Link>();
  private readonly rules: Rule[] = [];
  private current: ProxyState = 'open';
  /** Client-to-server chunks, decoded as text, in the order they arrived. */
  readonly requests: string[] = [];
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

  /** Listens on a free port of 127.0.0.1 and forwards to `target` (a URL: its host and port). */
  static async start(target: string | { host: string; port: number }): Promise<TcpProxy> {
    const to = typeof target === 'string' ? hostAndPort(target) : target;
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address() as net.AddressInfo;
    const proxy = new TcpProxy(server, address.port, to);
    server.on('connection', (socket) => proxy.accept(socket));
    return proxy;
  }

  /** The proxy as an HTTP base URL, for a proxy in front of the app. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
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
    this.reset();
  }

  restore(): void {
    this.current = 'open';
    for (const link of this.links) {
      for (const { to, chunk } of link.held.splice(0)) if (!to.destroyed) to.write(chunk);
      link.client.resume();
      link.upstream.resume();
    }
  }

  reset(): void {
    for (const link of [...this.links]) this.sever(link);
  }

  /** Cuts the connection of the next `times` requests that contain `match`, the way `mode` says. */
  drop(match: string, mode: DropMode, times = 1): void {
    this.rules.push({ match, mode, remaining: times });
  }

  /** How many client-to-server chunks seen so far contain `text`. */
  count(text: string): number {
    return this.requests.filter((chunk) => chunk.includes(text)).length;
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
    const link: Link = { client, upstream, held: [], dropAnswer: false };
    this.links.add(link);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    this.forward(link, 'up');
    this.forward(link, 'down');
    if (this.current === 'paused') {
      client.pause();
      upstream.pause();
    }
    const end = () => this.sever(link);
    client.on('close', end);
    upstream.on('close', end);
    // Errors end the link like a close; the other side then sees a reset, as on a real network.
    client.on('error', end);
    upstream.on('error', end);
  }

  private sever(link: Link): void {
    if (!this.links.delete(link)) return;
    for (const socket of [link.client, link.upstream]) {
      // A reset, not a graceful end: the peer must see the connection die.
      if (!socket.destroyed) socket.resetAndDestroy();
    }
  }

  /** Whether a rule says to cut `link` here instead of forwarding `chunk`. */
  private ruled(link: Link, chunk: Buffer, direction: Direction): boolean {
    if (direction === 'down') return link.dropAnswer;
    const text = chunk.toString('utf8');
    this.requests.push(text);
    const rule = this.rules.find((candidate) => candidate.remaining > 0 && text.includes(candidate.match));
    if (!rule) return false;
    rule.remaining -= 1;
    if (rule.mode === 'before-server') return true;
    link.dropAnswer = true;
    return false;
  }

  /** Copies one direction of a link with backpressure, so a paused reader really holds the bytes. */
  private forward(link: Link, direction: Direction): void {
    const [from, to] = direction === 'up' ? [link.client, link.upstream] : [link.upstream, link.client];
    from.on('data', (chunk: Buffer) => {
      this.onForward?.(chunk, direction);
      if (this.ruled(link, chunk, direction)) {
        this.sever(link);
        return;
      }
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

function hostAndPort(url: string): { host: string; port: number } {
  const parsed = new URL(url);
  return {
    host: parsed.hostname || '127.0.0.1',
    port: Number(parsed.port || DEFAULT_PORTS[parsed.protocol] || 0),
  };
}
