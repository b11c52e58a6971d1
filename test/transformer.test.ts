import superjson from 'superjson';
import { describe, expect, it } from 'vitest';
import { MemoryBroker } from '../server/src/broker/memory/engine.js';
import { compareStreamIds } from '../server/src/broker/types.js';
import { markText, readMark } from '../server/src/broker/ports/events.js';
import { SEQ_SLOT } from '../server/src/broker/ports/message-log.js';
import { stringify } from '../server/src/realtime/serialize.js';
import { BrokerEventPublisher } from '../server/src/realtime/publisher.js';
import {
  eventFrame,
  framePrefix,
  parseSharedEvent,
  shareEvent,
  transformer,
} from '../server/src/realtime/transformer.js';

const event = () => ({
  type: 'message.created' as const,
  message: {
    id: 'm1',
    sentAt: new Date(1_700_000_000_000),
    editedAt: null,
    deletedAt: new Date(0),
    'dotted.key': 1,
  },
});

describe('event transformer', () => {
  it('serializes a shared event, alone or in the adapter’s { id, data } wrapper, exactly as superjson does', () => {
    const plain = event();
    const shared = shareEvent(event());
    expect(transformer.serialize(shared)).toEqual(superjson.serialize(plain));
    const wrapped = transformer.serialize({ id: 'e.1-0', data: shared });
    expect(wrapped).toEqual(superjson.serialize({ id: 'e.1-0', data: plain }));
    const back = superjson.deserialize<{ id: string; data: ReturnType<typeof event> }>(wrapped);
    expect(back.data.message.sentAt).toEqual(new Date(1_700_000_000_000));
    expect(back.data.message.deletedAt).toEqual(new Date(0));
  });

  it('reuses one serialization for every recipient of a shared event', () => {
    const shared = shareEvent(event());
    const first = transformer.serialize({ id: 'a', data: shared });
    const second = transformer.serialize({ id: 'b', data: shared });
    expect(first.json).not.toBe(second.json);
    expect((first.json as { data: unknown }).data).toBe((second.json as { data: unknown }).data);
  });

  it('leaves everything else to superjson', () => {
    const value = { at: new Date(5), list: [1, 2] };
    expect(transformer.serialize(value)).toEqual(superjson.serialize(value));
    expect(transformer.deserialize(transformer.serialize(value))).toEqual(value);
    expect(transformer.deserialize(undefined)).toBeUndefined();
  });
});

describe('data frames written directly', () => {
  // What tRPC's WebSocket adapter sends for `tracked(id, data)`: the response, transformed,
  // then JSON.stringify (adapters/ws `respond`).
  const adapterFrame = (rpcId: string | number, jsonrpc: '2.0' | undefined, eventId: string, data: object) =>
    JSON.stringify({
      id: rpcId,
      jsonrpc,
      result: { type: 'data', data: transformer.serialize({ id: eventId, data }), id: eventId },
    });

  it('are the adapter’s frames, text for text, for shared and unshared events', () => {
    const shared = shareEvent(event());
    for (const [rpcId, jsonrpc] of [
      [1, undefined],
      ['sub "x"', '2.0'],
    ] as const) {
      const prefix = framePrefix({ id: rpcId, jsonrpc });
      expect(eventFrame(prefix, 'ep.5-1', shared)).toBe(adapterFrame(rpcId, jsonrpc, 'ep.5-1', shared));
      expect(eventFrame(prefix, 'ep.5-2', shared)).toBe(adapterFrame(rpcId, jsonrpc, 'ep.5-2', shared));
      const plain = { type: 'resync' as const };
      expect(eventFrame(prefix, 'ep.6-0', plain)).toBe(adapterFrame(rpcId, jsonrpc, 'ep.6-0', plain));
    }
  });

  it('of an event received as text are the same frames, built from the text it came in', () => {
    const prefix = framePrefix({ id: 7, jsonrpc: '2.0' });
    const inner = { at: new Date(3) };
    for (const value of [
      event(),
      { type: 'resync' },
      { type: 'x', list: [new Date(1), undefined, { 'back\\slash.dot': new Date(2) }], none: undefined },
      { type: 'x', text: 'quotes " and \u2028 and \ud83d\ude00', n: -0.5e-7 },
      // References: superjson rewrites them relative to the whole, so no text is kept.
      { type: 'x', a: inner, b: inner },
    ]) {
      const payload = stringify(value);
      const received = parseSharedEvent<object>(payload);
      expect(received).toEqual(superjson.parse(payload));
      const afresh = shareEvent(superjson.parse<object>(payload));
      expect(eventFrame(prefix, 'ep.9-0', received)).toBe(eventFrame(prefix, 'ep.9-0', afresh));
      expect(eventFrame(prefix, 'ep.9-1', received)).toBe(adapterFrame(7, '2.0', 'ep.9-1', afresh));
    }
  });

  it('of a message event are built from the text the message log filled in, seq included', () => {
    const broker = new MemoryBroker();
    const publisher = new BrokerEventPublisher(broker.events, broker.bus);
    const message = { ...event().message, seq: 0, content: `"message":{"seq":0, ${SEQ_SLOT}` };
    const payload = publisher
      .newMessageAnnouncement({ type: 'message.created', message } as never, SEQ_SLOT)
      .replace(SEQ_SLOT, '42');
    const received = parseSharedEvent<ReturnType<typeof event>>(payload);
    expect(received.message).toMatchObject({ seq: 42, sentAt: new Date(1_700_000_000_000) });
    const prefix = framePrefix({ id: 1, jsonrpc: undefined });
    expect(eventFrame(prefix, 'ep.3-0', received)).toBe(
      adapterFrame(1, undefined, 'ep.3-0', shareEvent(superjson.parse<object>(payload))),
    );
  });

  it('fall back to a whole serialization where superjson rewrites references', () => {
    const inner = { at: new Date(3) };
    const withReferences = shareEvent({ type: 'x', a: inner, b: inner });
    const frame = eventFrame(framePrefix({ id: 2, jsonrpc: undefined }), 'ep.1-0', withReferences);
    const parsed = JSON.parse(frame) as { result: { data: Parameters<typeof superjson.deserialize>[0] } };
    const back = superjson.deserialize<{ id: string; data: typeof withReferences }>(parsed.result.data);
    expect(back.data.a).toBe(back.data.b);
    expect(back.data.a.at).toEqual(new Date(3));
  });
});

describe('stream ids', () => {
  it('compare numerically, part by part', () => {
    const ordered = [
      '0-0',
      '0-1',
      '9-0',
      '10-0',
      '10-2',
      '10-10',
      '1795318107917-0',
      '1795318107917-11',
      '18446744073709551615-0',
    ];
    for (let i = 0; i < ordered.length; i++) {
      for (let j = 0; j < ordered.length; j++) {
        expect(
          Math.sign(compareStreamIds(ordered[i] ?? '', ordered[j] ?? '')),
          `${ordered[i]} vs ${ordered[j]}`,
        ).toBe(Math.sign(i - j));
      }
    }
  });
});

describe('events channel', () => {
  const message = (content: string) => ({
    id: '0190a000-0000-7000-8000-000000000001',
    conversationId: '0190a000-0000-7000-8000-000000000002',
    seq: 0,
    senderId: '0190a000-0000-7000-8000-000000000003',
    senderUsername: 'al',
    type: 'text' as const,
    content,
    clientMessageId: null,
    sentAt: new Date(1_700_000_000_000),
    editedAt: null,
    deletedAt: null,
  });

  it('tells a membership mark from an event on a channel', () => {
    const payload = superjson.stringify({ type: 'read', conversationId: 'c', userId: 'u', seq: 3 });
    expect(readMark(payload)).toBeNull();
    const mark = { change: 'in' as const, conversationId: 'c1' };
    expect(readMark(markText(mark))).toEqual(mark);
    expect(readMark(markText({ change: 'out', conversationId: 'c2' }))).toEqual({
      change: 'out',
      conversationId: 'c2',
    });
    expect(readMark('!gone c3')).toBeNull();
    expect(readMark('!in')).toBeNull();
  });

  it('puts the seq stand-in where the seq goes, ahead of any text the sender wrote', () => {
    const broker = new MemoryBroker();
    const publisher = new BrokerEventPublisher(broker.events, broker.bus);
    const slot = SEQ_SLOT;
    // Content that imitates both the stand-in and the text around the seq.
    const content = `"message":{"seq":0, ${slot} \n x`;
    const announcement = publisher.newMessageAnnouncement(
      { type: 'message.created', message: message(content) },
      slot,
    );
    // The message log fills in the first stand-in only.
    const payload = announcement.replace(slot, '42');
    expect(superjson.parse(payload)).toEqual({
      type: 'message.created',
      message: { ...message(content), seq: 42 },
    });
  });
});
