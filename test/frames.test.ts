import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { sendEventFrame, textFrame } from '../server/src/realtime/frames.js';

/** A real `ws` server on port 0 that hands each accepted socket to `onSocket`. */
async function serve(onSocket: (socket: WebSocket) => void, perMessageDeflate = false) {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate });
  server.on('connection', onSocket);
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  return { server, url: `ws://127.0.0.1:${port}` };
}

/** A real `ws` client that collects the first `count` messages, each with whether it was binary. */
function receive(url: string, count: number, perMessageDeflate = false) {
  const client = new WebSocket(url, { perMessageDeflate });
  const received = new Promise<{ text: string; binary: boolean }[]>((resolve, reject) => {
    const messages: { text: string; binary: boolean }[] = [];
    client.on('message', (data: Buffer, binary) => {
      messages.push({ text: data.toString('utf8'), binary });
      if (messages.length === count) resolve(messages);
    });
    client.on('error', reject);
  });
  return { client, received };
}

const servers: WebSocketServer[] = [];
const clients: WebSocket[] = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.terminate();
  await Promise.all(
    servers.splice(0).map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
  );
});

// Each length class of the frame header (7-bit, 16-bit, 64-bit), at and around its edges, with
// characters of one to four UTF-8 bytes so that characters and bytes differ.
const texts = [
  '',
  'a'.repeat(125),
  'a'.repeat(126),
  'é'.repeat(63),
  '€'.repeat(42),
  'a'.repeat(65_535),
  'a'.repeat(65_536),
  `${'😀'.repeat(20_000)}end`,
];

describe('event frames built once', () => {
  it('frames text of every header length as a text frame a real client reads back unchanged', async () => {
    const { server, url } = await serve((socket) => {
      for (const [index, text] of texts.entries()) sendEventFrame(socket, {}, String(index), () => text);
    });
    servers.push(server);
    const { client, received } = receive(url, texts.length);
    clients.push(client);
    expect(await received).toEqual(texts.map((text) => ({ text, binary: false })));
    expect(textFrame('€').subarray(0, 2)).toEqual(Buffer.from([0x81, 3]));
  });

  it('shares one frame between the sockets that send the same event and key, and keeps other keys apart', async () => {
    const event = {};
    let built = 0;
    const text = (value: string) => () => {
      built += 1;
      return value;
    };
    const { server, url } = await serve((socket) => {
      sendEventFrame(socket, event, 'a', text('for everyone'));
      sendEventFrame(socket, event, 'b', text('with another request id'));
    });
    servers.push(server);
    const receivers = Array.from({ length: 3 }, () => receive(url, 2));
    clients.push(...receivers.map(({ client }) => client));
    for (const { received } of receivers) {
      expect((await received).map(({ text }) => text)).toEqual(['for everyone', 'with another request id']);
    }
    // Built once per key, not once per socket.
    expect(built).toBe(2);
  });

  it('builds a frame without a key for its own socket each time, and keeps none of them', async () => {
    const event = {};
    let built = 0;
    const { server, url } = await serve((socket) => {
      sendEventFrame(socket, event, null, () => `mine ${(built += 1)}`);
      // A keyed frame of the same event afterwards is built afresh: nothing was kept under it.
      sendEventFrame(socket, event, 'shared', () => `shared ${(built += 1)}`);
    });
    servers.push(server);
    const receivers = Array.from({ length: 2 }, () => receive(url, 2));
    clients.push(...receivers.map(({ client }) => client));
    const texts = await Promise.all(
      receivers.map(async ({ received }) => (await received).map(({ text }) => text)),
    );
    expect(texts[0]?.[0]).toMatch(/^mine \d$/);
    expect(new Set(texts.map((pair) => pair[0])).size).toBe(2);
    expect(texts.map((pair) => pair[1])).toEqual([texts[0]?.[1], texts[0]?.[1]]);
    // Two unkeyed frames, one per socket, and the keyed one once.
    expect(built).toBe(3);
  });

  it('sends through ws itself, in order, on a socket that negotiated compression', async () => {
    // ws compresses asynchronously: a frame written past its sender would overtake the message
    // it is still compressing.
    const first = 'compressible '.repeat(500);
    const { server, url } = await serve((socket) => {
      expect(socket.extensions).toContain('permessage-deflate');
      socket.send(first);
      sendEventFrame(socket, {}, 'a', () => 'second');
    }, true);
    servers.push(server);
    const { client, received } = receive(url, 2, true);
    clients.push(client);
    expect((await received).map(({ text }) => text)).toEqual([first, 'second']);
  });
});
