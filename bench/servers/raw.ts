/**
 * The raw limit: bare `ws` + ioredis Pub/Sub, JSON frames, no auth, no persistence.
 * A client joins rooms, sends `{ t: 'send', id, room, body }`, gets `{ t: 'ack', id }` once the
 * frame is published; every other socket in the room gets `{ t: 'msg', room, body }`.
 * Also `POST /send` with `{ room, body, from }` for the HTTP transport.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { type WebSocket, WebSocketServer } from 'ws';
import { announceReady, gcHandler, serveCalls } from '../lib/children.js';

const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const channel = `${process.env.BENCH_PREFIX ?? 'bench:'}raw`;

const pub = new Redis(redisUrl);
const sub = new Redis(redisUrl);

interface Peer extends WebSocket {
  clientId?: string;
}
const rooms = new Map<string, Set<Peer>>();

// One channel for the instance: each published frame is decoded once and written, already
// serialised, to the local sockets of its room.
await sub.subscribe(channel);
sub.on('message', (_channel: string, raw: string) => {
  const frame = JSON.parse(raw) as { room: string; from: string; body: string };
  const members = rooms.get(frame.room);
  if (!members) return;
  const out = JSON.stringify({ t: 'msg', room: frame.room, body: frame.body });
  for (const peer of members) if (peer.clientId !== frame.from) peer.send(out);
});

const server = http.createServer((req, res) => {
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
    pub.publish(channel, JSON.stringify({ room: input.room, from: input.from, body: input.body })).then(
      () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'),
      () => res.writeHead(500).end(),
    );
  });
});

const wss = new WebSocketServer({ server });
wss.on('connection', (socket: Peer, req) => {
  socket.clientId = new URL(req.url ?? '/', 'http://x').searchParams.get('id') ?? undefined;
  const joined: string[] = [];
  socket.on('message', (data) => {
    const frame = JSON.parse((data as Buffer).toString('utf8')) as
      { t: 'join'; id: number; rooms: string[] } | { t: 'send'; id: number; room: string; body: string };
    if (frame.t === 'join') {
      for (const room of frame.rooms) {
        let members = rooms.get(room);
        if (!members) rooms.set(room, (members = new Set()));
        members.add(socket);
        joined.push(room);
      }
      socket.send(JSON.stringify({ t: 'ack', id: frame.id }));
      return;
    }
    pub.publish(channel, JSON.stringify({ room: frame.room, from: socket.clientId, body: frame.body })).then(
      () => socket.send(JSON.stringify({ t: 'ack', id: frame.id })),
      () => socket.send(JSON.stringify({ t: 'nack', id: frame.id })),
    );
  });
  socket.on('close', () => {
    for (const room of joined) {
      const members = rooms.get(room);
      members?.delete(socket);
      if (members?.size === 0) rooms.delete(room);
    }
  });
});

await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));

const shutdown = () => {
  for (const client of wss.clients) client.terminate();
  server.close();
  pub.disconnect();
  sub.disconnect();
  process.exit(0);
};
process.once('SIGTERM', shutdown);
serveCalls({ ...gcHandler });
announceReady({ port: (server.address() as AddressInfo).port });
