import WebSocket from 'ws';
import { type ClientAdapter, postJson } from './types.js';

/** Plain JSON frames over `ws`, matching `bench/servers/raw.ts`. */
export const rawClient: ClientAdapter = {
  prepare({ count, groupSize }) {
    return Promise.resolve(
      Array.from({ length: count }, (_, index) => ({
        index,
        conversationId: `g${Math.floor(index / groupSize)}`,
        token: '',
      })),
    );
  },
  async connect(url, spec, transport, onMessage) {
    const socket = new WebSocket(`${url.replace(/^http/, 'ws')}/?id=${spec.index}`, {
      perMessageDeflate: false,
    });
    const acks = new Map<number, { resolve: () => void; reject: (error: Error) => void }>();
    let nextId = 1;
    socket.on('message', (data) => {
      const frame = JSON.parse((data as Buffer).toString('utf8')) as
        { t: 'ack' | 'nack'; id: number } | { t: 'msg'; body: string };
      if (frame.t === 'msg') {
        onMessage(frame.body);
        return;
      }
      const pending = acks.get(frame.id);
      acks.delete(frame.id);
      if (frame.t === 'ack') pending?.resolve();
      else pending?.reject(new Error('not published'));
    });
    socket.on('close', () => {
      for (const pending of acks.values()) pending.reject(new Error('socket closed'));
      acks.clear();
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('open', resolve);
      socket.once('error', reject);
    });
    socket.on('error', () => undefined);
    const request = (frame: Record<string, unknown>) =>
      new Promise<void>((resolve, reject) => {
        const id = nextId++;
        acks.set(id, { resolve, reject });
        socket.send(JSON.stringify({ ...frame, id }));
      });
    await request({ t: 'join', rooms: [spec.conversationId] });
    return {
      async send(conversationId, content) {
        if (transport === 'http') {
          await postJson(`${url}/send`, { room: conversationId, body: content, from: String(spec.index) });
        } else {
          await request({ t: 'send', room: conversationId, body: content });
        }
        return null;
      },
      async close() {
        socket.terminate();
        await Promise.resolve();
      },
    };
  },
};
