/**
 * Socket.IO 4 with `@socket.io/redis-adapter`, as a TypeScript team would write the same chat:
 * a JWT checked in the handshake, `join` puts the socket in its conversations' rooms, `msg`
 * is broadcast to the room (everyone but the sender) and acknowledged.
 * Also `POST /send` with `{ room, body, from }` for the HTTP transport.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { jwtVerify } from 'jose';
import { Server } from 'socket.io';
import { announceReady, gcHandler, serveCalls } from '../lib/children.js';

const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = process.env.BENCH_PREFIX ?? 'bench:';
const secret = new TextEncoder().encode(process.env.BENCH_JWT_SECRET ?? '');

const pub = new Redis(redisUrl);
const sub = pub.duplicate();

const server = http.createServer();
const io = new Server(server, {
  adapter: createAdapter(pub, sub, { key: `${prefix}socket.io` }),
  serveClient: false,
});

io.use((socket, next) => {
  const token = (socket.handshake.auth as { token?: unknown }).token;
  if (typeof token !== 'string') {
    next(new Error('unauthorized'));
    return;
  }
  jwtVerify(token, secret, { algorithms: ['HS256'] }).then(
    ({ payload }) => {
      (socket.data as { userId?: string }).userId = payload.sub;
      next();
    },
    () => next(new Error('unauthorized')),
  );
});

io.on('connection', (socket) => {
  socket.on('join', (rooms: string[], ack: () => void) => {
    void Promise.resolve(socket.join(rooms)).then(() => ack());
  });
  socket.on('msg', (room: string, body: string, ack: (ok: boolean) => void) => {
    socket.to(room).emit('msg', room, body);
    ack(true);
  });
});

// Socket.IO's own HTTP handler answers /socket.io/; everything else reaches this listener.
server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
  if (req.url?.startsWith('/socket.io')) return;
  if (req.method !== 'POST' || req.url !== '/send') {
    res.writeHead(404).end();
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const input = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
      room: string;
      body: string;
      from: string;
    };
    io.to(input.room).except(input.from).emit('msg', input.room, input.body);
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  });
});

await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));

process.once('SIGTERM', () => {
  void io.close();
  pub.disconnect();
  sub.disconnect();
  process.exit(0);
});
serveCalls({ ...gcHandler });
announceReady({ port: (server.address() as AddressInfo).port });
