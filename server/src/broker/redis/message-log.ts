import {
  channelName,
  clientIdKey,
  conversationLog,
  deletedKey,
  eventIdsStream,
  messagesStream,
  type Partition,
  pendingIndex,
  pendingKey,
  revokedSessionKey,
  revokedUserKey,
  rosterKey,
  sendThrottleKey,
  seqKey,
} from '../keyspace.js';
import {
  CLIENT_ID_TTL_MS,
  DELETED_MARK_TTL_MS,
  type EditResult,
  type MessageChange,
  type MessageLog,
  type NewMessage,
  type NewMessageResult,
  SEQ_SLOT,
  type SendGuards,
  sendWindow,
  type TombstoneResult,
} from '../ports/message-log.js';
import type { RedisConnection } from './connection.js';
import { defineScript } from './script.js';

/**
 * Once a change is queued: its pending copy (`<entry id>|<body>` under the conversation, and
 * `<entry id>|<conversation id>` in the index), then its announcement, under a new id from the
 * id stream, into the conversation's log and on its channel (as `eventAppend` does).
 */
const KEEP_AND_ANNOUNCE = `
redis.call('HSET', pending, messageId, id .. '|' .. body)
redis.call('HSET', pendingIndex, messageId, id .. '|' .. conversationId)
if announcement ~= '' then
  local eventId = redis.call('XADD', ids, 'MAXLEN', '1', '*', 'x', '1')
  redis.call('XADD', log, 'MAXLEN', maxLen, eventId, 'e', announcement)
  redis.call(publish, channel, eventId .. '\\n' .. announcement)
end`;

/**
 * The guards in order (each optional one comes as a key list of none or one key), then the seq,
 * the claim, the entry, the copy and the announcement: a crash can never leave a claimed id
 * without its message, a message without its copy or its event, or a seq handed out twice.
 */
const APPEND_NEW = defineScript({
  name: 'messageAppendNew',
  keys: ['queue', 'seq', 'pending', 'pendingIndex', 'ids', 'log'],
  keyLists: ['roster', 'revocations', 'sendCount', 'claim'],
  args: [
    'member',
    'issuedAt',
    'sendMax',
    'sendWindowMs',
    'claimValue',
    'claimTtlMs',
    'messageId',
    'conversationId',
    'template',
    'announced',
    'slot',
    'maxLen',
    'channel',
    'publish',
  ],
  body: `
if #roster > 0 then
  if redis.call('EXISTS', roster[1]) == 0 then return {'noRoster'} end
  if redis.call('SISMEMBER', roster[1], member) == 0 then return {'notMember'} end
end
if #revocations > 0 then
  if redis.call('EXISTS', revocations[1]) == 1 then return {'revoked'} end
  local since = redis.call('GET', revocations[2])
  if since and tonumber(since) >= tonumber(issuedAt) then return {'revoked'} end
end
if #sendCount > 0 then
  local count = redis.call('INCR', sendCount[1])
  if count == 1 then redis.call('PEXPIRE', sendCount[1], sendWindowMs) end
  if count > tonumber(sendMax) then return {'limited'} end
end
if #claim > 0 then
  local held = redis.call('GET', claim[1])
  if held then return {'duplicate', held} end
end
if redis.call('EXISTS', seq) == 0 then return {'seqMissing'} end
local n = string.format('%d', redis.call('INCR', seq))
if #claim > 0 then redis.call('SET', claim[1], claimValue, 'PX', claimTtlMs) end
local function fill(v)
  local at = string.find(v, slot, 1, true)
  if not at then return v end
  return string.sub(v, 1, at - 1) .. n .. string.sub(v, at + #slot)
end
local body = fill(template)
local announcement = ''
if announced ~= '' then announcement = fill(announced) end
local id = redis.call('XADD', queue, '*', 'op', 'create', 'm', body)
${KEEP_AND_ANNOUNCE}
return {'appended', id, n}`,
});

const CHANGE_KEYS = ['queue', 'deleted', 'pending', 'pendingIndex', 'ids', 'log'] as const;
const CHANGE_ARGS = [
  'messageId',
  'conversationId',
  'body',
  'announcement',
  'maxLen',
  'channel',
  'publish',
] as const;

const APPEND_EDIT = defineScript({
  name: 'messageAppendEdit',
  keys: CHANGE_KEYS,
  args: CHANGE_ARGS,
  body: `
if redis.call('EXISTS', deleted) == 1 then return {'deleted'} end
local id = redis.call('XADD', queue, '*', 'op', 'update', 'm', body)
${KEEP_AND_ANNOUNCE}
return {'appended', id}`,
});

const APPEND_TOMBSTONE = defineScript({
  name: 'messageAppendTombstone',
  keys: CHANGE_KEYS,
  args: [...CHANGE_ARGS, 'deletedTtlMs'],
  body: `
if redis.call('EXISTS', deleted) == 1 then return {'alreadyDeleted'} end
redis.call('SET', deleted, messageId, 'PX', deletedTtlMs)
local id = redis.call('XADD', queue, '*', 'op', 'update', 'm', body)
${KEEP_AND_ANNOUNCE}
return {'appended', id}`,
});

export class RedisMessageLog implements MessageLog {
  constructor(
    private readonly redis: RedisConnection,
    /** How many events each conversation log keeps (`EventLog`). */
    private readonly maxLen: number,
  ) {}

  async appendNew(
    message: NewMessage,
    guards: SendGuards,
    announcement: string | null,
  ): Promise<NewMessageResult> {
    const { id, conversationId, senderId, clientMessageId } = message;
    const { session, sendLimit } = guards;
    const p = this.redis.partitionFor(conversationId);
    const countKey = sendLimit
      ? sendThrottleKey(p, senderId, sendWindow(Date.now(), sendLimit.windowMs))
      : null;
    const result = (await this.redis.eval(APPEND_NEW, {
      keys: {
        queue: messagesStream(p),
        seq: seqKey(p, conversationId),
        ...this.copyKeys(conversationId),
      },
      keyLists: {
        roster: guards.roster ? [rosterKey(p, conversationId)] : [],
        revocations: session
          ? [revokedSessionKey(p, session.sessionId), revokedUserKey(p, session.userId)]
          : [],
        sendCount: countKey ? [countKey] : [],
        claim: clientMessageId ? [clientIdKey(p, senderId, conversationId, clientMessageId)] : [],
      },
      args: {
        member: senderId,
        issuedAt: session?.issuedAt ?? 0,
        sendMax: sendLimit?.max ?? 0,
        sendWindowMs: sendLimit?.windowMs ?? 0,
        claimValue: `${conversationId}:${id}`,
        claimTtlMs: CLIENT_ID_TTL_MS,
        messageId: id,
        conversationId,
        template: message.body,
        announced: announcement ?? '',
        slot: SEQ_SLOT,
        maxLen: this.maxLen,
        channel: this.redis.key(channelName(p, { conversation: conversationId })),
        publish: this.redis.publishCommand,
      },
    })) as [string, string?, string?];
    const [status, value = '', seq = '0'] = result;
    switch (status) {
      case 'appended':
        return { appended: true, entryId: value, seq: Number(seq) };
      case 'duplicate': {
        const colon = value.indexOf(':');
        return { duplicate: { conversationId: value.slice(0, colon), messageId: value.slice(colon + 1) } };
      }
      case 'seqMissing':
        return { seqMissing: true };
      case 'noRoster':
      case 'notMember':
      case 'revoked':
      case 'limited':
        return { refused: status };
      default:
        throw new Error(`messageAppendNew answered ${status}`);
    }
  }

  async appendEdit(change: MessageChange, announcement: string | null): Promise<EditResult> {
    const [status, entryId = ''] = (await this.redis.eval(
      APPEND_EDIT,
      this.change(change, announcement),
    )) as [string, string?];
    return status === 'appended' ? { appended: true, entryId } : { refused: 'deleted' };
  }

  async appendTombstone(change: MessageChange, announcement: string | null): Promise<TombstoneResult> {
    const input = this.change(change, announcement);
    const [status, entryId = ''] = (await this.redis.eval(APPEND_TOMBSTONE, {
      keys: input.keys,
      args: { ...input.args, deletedTtlMs: DELETED_MARK_TTL_MS },
    })) as [string, string?];
    return status === 'appended' ? { appended: true, entryId } : { alreadyDeleted: true };
  }

  async pendingOf(conversationId: string): Promise<string[]> {
    const p = this.redis.partitionFor(conversationId);
    const all = await this.redis.run(() =>
      this.redis.client.hvals(this.redis.key(pendingKey(p, conversationId))),
    );
    return all.map((value) => afterBar(value));
  }

  async pendingMessage(messageId: string): Promise<string | null> {
    const where = await this.indexEntry(messageId);
    if (where === null) return null;
    const value = await this.redis.run(() =>
      this.redis.client.hget(this.redis.key(pendingKey(where.p, afterBar(where.value))), messageId),
    );
    return value === null ? null : afterBar(value);
  }

  async pendingEntry(messageId: string): Promise<string | null> {
    const where = await this.indexEntry(messageId);
    return where === null ? null : where.value.slice(0, where.value.indexOf('|'));
  }

  async seq(conversationId: string): Promise<number | null> {
    const p = this.redis.partitionFor(conversationId);
    const value = await this.redis.run(() =>
      this.redis.client.get(this.redis.key(seqKey(p, conversationId))),
    );
    return value === null ? null : Number(value);
  }

  async restoreSeq(conversationId: string, highest: number): Promise<void> {
    const p = this.redis.partitionFor(conversationId);
    await this.redis.run(() =>
      this.redis.client.set(this.redis.key(seqKey(p, conversationId)), highest, 'NX'),
    );
  }

  async expireClaim(senderId: string, conversationId: string, clientMessageId: string): Promise<boolean> {
    const p = this.redis.partitionFor(conversationId);
    const key = this.redis.key(clientIdKey(p, senderId, conversationId, clientMessageId));
    return (await this.redis.run(() => this.redis.client.del(key))) === 1;
  }

  /**
   * Where a message's pending copy is: its partition's index entry. A message id does not name
   * its conversation, so each partition's index is asked (one command each).
   */
  private async indexEntry(messageId: string): Promise<{ p: Partition; value: string } | null> {
    const found = await this.redis.run(() =>
      Promise.all(
        this.redis.partitions.map((p) => this.redis.client.hget(this.redis.key(pendingIndex(p)), messageId)),
      ),
    );
    const at = found.findIndex((value) => value !== null);
    return at < 0 ? null : { p: this.redis.partition(at), value: found[at] as string };
  }

  private copyKeys(conversationId: string) {
    const p = this.redis.partitionFor(conversationId);
    return {
      pending: pendingKey(p, conversationId),
      pendingIndex: pendingIndex(p),
      ids: eventIdsStream(p),
      log: conversationLog(p, conversationId),
    };
  }

  private change(change: MessageChange, announcement: string | null) {
    const p = this.redis.partitionFor(change.conversationId);
    return {
      keys: {
        queue: messagesStream(p),
        deleted: deletedKey(p, change.id),
        ...this.copyKeys(change.conversationId),
      },
      args: {
        messageId: change.id,
        conversationId: change.conversationId,
        body: change.body,
        announcement: announcement ?? '',
        maxLen: this.maxLen,
        channel: this.redis.key(channelName(p, { conversation: change.conversationId })),
        publish: this.redis.publishCommand,
      },
    };
  }
}

/** What follows the `|` of a pending value. */
function afterBar(value: string): string {
  return value.slice(value.indexOf('|') + 1);
}
