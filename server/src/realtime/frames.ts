import type { WebSocket } from 'ws';

/** The part of `ws`'s sender that writes a frame built beforehand (Socket.IO's engine uses it too). */
interface FrameSender {
  sendFrame(list: readonly Buffer[], callback?: (error?: Error) => void): void;
}

/** Frames built for an event, by the text's key (the subscription's request id and the event id). */
const built = new WeakMap<object, Map<string, Buffer>>();

/**
 * Sends `text()` as a WebSocket text frame, building the frame (header and UTF-8 payload, one
 * buffer) once for every socket that sends the same `key` of the same `event`: in a group,
 * every recipient's frame is the same bytes, so a delivery is one write of a shared buffer,
 * without encoding the text or framing it again for each socket. A null `key` is a frame no
 * other socket sends: built, not kept. Sockets with an extension (compression), or a `ws`
 * without the sender this relies on, get `socket.send(text())`.
 */
export function sendEventFrame(
  socket: WebSocket,
  event: object,
  key: string | null,
  text: () => string,
): void {
  const sender = (socket as unknown as { _sender?: Partial<FrameSender> })._sender;
  if (socket.extensions !== '' || typeof sender?.sendFrame !== 'function') {
    socket.send(text());
    return;
  }
  if (key === null) {
    sender.sendFrame([textFrame(text())]);
    return;
  }
  let frames = built.get(event);
  if (!frames) {
    frames = new Map();
    built.set(event, frames);
  }
  let frame = frames.get(key);
  if (!frame) {
    frame = textFrame(text());
    frames.set(key, frame);
  }
  sender.sendFrame([frame]);
}

/** An unmasked, unfragmented text frame (RFC 6455 §5.2): what a server sends. */
export function textFrame(text: string): Buffer {
  const length = Buffer.byteLength(text);
  const headerLength = length < 126 ? 2 : length < 65_536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(headerLength + length);
  frame[0] = 0x81; // FIN, opcode 1 (text)
  if (length < 126) {
    frame[1] = length;
  } else if (length < 65_536) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(length), 2);
  }
  frame.write(text, headerLength, 'utf8');
  return frame;
}
