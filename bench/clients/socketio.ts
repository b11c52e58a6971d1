import { SignJWT } from 'jose';
import { io } from 'socket.io-client';
import { type ClientAdapter, postJson } from './types.js';

/** `socket.io-client` over WebSocket only (no long-polling start), matching `bench/servers/socketio.ts`. */
export const socketIoClient: ClientAdapter = {
  async prepare({ count, groupSize, jwtSecret }) {
    const secret = new TextEncoder().encode(jwtSecret);
    return Promise.all(
      Array.from({ length: count }, async (_, index) => ({
        index,
        conversationId: `g${Math.floor(index / groupSize)}`,
        token: await new SignJWT({})
          .setProtectedHeader({ alg: 'HS256' })
          .setSubject(`u${index}`)
          .setIssuedAt()
          .setExpirationTime('2h')
          .sign(secret),
      })),
    );
  },
  async connect(url, spec, transport, onMessage) {
    const socket = io(url, {
      transports: ['websocket'],
      auth: { token: spec.token },
      reconnection: false,
      forceNew: true,
    });
    socket.on('msg', (_room: string, body: string) => onMessage(body));
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    });
    await socket.timeout(30_000).emitWithAck('join', [spec.conversationId]);
    return {
      async send(conversationId, content) {
        if (transport === 'http') {
          await postJson(`${url}/send`, { room: conversationId, body: content, from: socket.id });
        } else {
          await socket.timeout(30_000).emitWithAck('msg', conversationId, content);
        }
        return null;
      },
      async close() {
        socket.disconnect();
        await Promise.resolve();
      },
    };
  },
};
