/**
 * The group-size, big-room, several-instances and partitions phases as tables, with their targets beside
 * the figures: for the console (aligned columns) and for Markdown. bench/report.ts places them.
 */
import type { ServerName } from './generator/worker.js';
import type { BenchResults, GroupRow } from './results-types.js';

const SHORT: Record<ServerName, string> = { parley: 'Parley', socketio: 'Socket.IO', raw: 'raw' };

export const TARGETS = {
  /** Redis memory per message, after the worker, at every group size. */
  bytesPerMessage: 2 * 1024,
  /** Redis CPU per send at `largestGroup` over that at `smallestGroup`, at most. */
  cpuGrowth: 2,
  smallestGroup: 10,
  largestGroup: 10_000,
  /** `largestGroup` built within this long, growing Redis by at most `buildRedisBytes`. */
  buildSeconds: 10,
  buildRedisBytes: 50 * 2 ** 20,
  /** Parley's big-room p99 over Socket.IO's, at most. */
  bigRoomP99: 2,
  /** Events an instance takes from Pub/Sub over those it hands to local subscriptions, at most. */
  pubsubPerFannedOut: 1.5,
} as const;

/** A table: a header row, then rows; the first column is left-aligned, the others right-aligned. */
export type Table = string[][];

export interface Section {
  title: string;
  table: Table;
  /** Columns aligned left (text); the others are figures, aligned right. */
  textColumns: number[];
  /** Lines after the table: targets, notes. */
  notes: string[];
}

const int = (value: number | null | undefined) =>
  value == null ? '–' : Math.round(value).toLocaleString('en-US');
const ms = (value: number | null | undefined) =>
  value == null ? '–' : value < 10 ? value.toFixed(2) : value.toFixed(1);
const size = (bytes: number | null | undefined) => {
  if (bytes == null) return '–';
  const magnitude = Math.abs(bytes);
  if (magnitude >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MB`;
  if (magnitude >= 10 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${Math.round(bytes).toLocaleString('en-US')} B`;
};
const check = (ok: boolean | null) => (ok === null ? 'not measured' : ok ? 'met' : 'NOT met');
const passFail = (ok: boolean | null) => (ok === null ? '–' : ok ? 'pass' : 'FAIL');

function groupRow(row: GroupRow): string[] {
  const seconds = row.buildSeconds == null ? '–' : row.buildSeconds.toFixed(2);
  const perMessage = row.redisBytesPerMessage;
  return [
    int(row.members),
    row.buildError ? `failed (${seconds})` : seconds,
    size(row.buildRedisBytes),
    `${row.sends}/${row.sends + row.sendErrors}`,
    ms(row.sendMs?.p50),
    ms(row.sendMs?.p99),
    int(row.redisUsPerSend),
    int(row.redisIdleUsPerS),
    size(perMessage),
    size(row.redisBytesPerMessageAtOnce),
    passFail(perMessage == null ? null : perMessage <= TARGETS.bytesPerMessage),
    [row.buildError, row.error].filter(Boolean).join('; ') || 'ok',
  ];
}

function groupsSection(results: BenchResults): Section | null {
  const groups = results.groups;
  if (!groups) return null;
  const small = groups.rows.find((row) => row.members === TARGETS.smallestGroup);
  const large = groups.rows.find((row) => row.members === TARGETS.largestGroup);
  const memoryOk =
    groups.rows.length === 0
      ? null
      : groups.rows.every(
          (row) => row.redisBytesPerMessage != null && row.redisBytesPerMessage <= TARGETS.bytesPerMessage,
        );
  const growth = (from: GroupRow | undefined, to: GroupRow | undefined) =>
    from?.redisUsPerSend && to?.redisUsPerSend != null ? to.redisUsPerSend / from.redisUsPerSend : null;
  const cpuRatio = growth(small, large);
  const smallest = groups.rows[0];
  const largest = groups.rows[groups.rows.length - 1];
  const spread = largest !== smallest ? growth(smallest, largest) : null;
  const largeBuilt = large ? large.built === large.members && !large.buildError : false;
  const buildOk = !large
    ? null
    : largeBuilt &&
      large.buildSeconds != null &&
      large.buildSeconds <= TARGETS.buildSeconds &&
      large.buildRedisBytes != null &&
      large.buildRedisBytes <= TARGETS.buildRedisBytes;
  return {
    title: `Group size (Parley): build, then ${groups.sends} sequential message.send over HTTP`,
    table: [
      [
        'G',
        'build s',
        'Redis growth building',
        'sends ok',
        'send p50 ms',
        'send p99 ms',
        'Redis µs per send',
        'Redis idle µs/s',
        'Redis bytes per message',
        '(at once)',
        `≤ ${TARGETS.bytesPerMessage / 1024} KB`,
        'outcome',
      ],
      ...groups.rows.map(groupRow),
    ],
    textColumns: [11],
    notes: [
      `memory per message ≤ ${TARGETS.bytesPerMessage / 1024} KB at every size: ${check(memoryOk)}` +
        (memoryOk === false
          ? ` (${groups.rows
              .filter(
                (row) =>
                  !(row.redisBytesPerMessage != null && row.redisBytesPerMessage <= TARGETS.bytesPerMessage),
              )
              .map(
                (row) =>
                  `${int(row.members)}: ${row.redisBytesPerMessage == null ? 'no figure' : size(row.redisBytesPerMessage)}`,
              )
              .join(', ')})`
          : ''),
      `Redis CPU per send at ${int(TARGETS.largestGroup)} ≤ ${TARGETS.cpuGrowth}× that at ${TARGETS.smallestGroup}: ` +
        (cpuRatio === null && large && large.redisUsPerSend == null
          ? `NOT met (no figure at ${int(large.members)}: nothing was sent)`
          : cpuRatio === null
            ? 'not measured' +
              (spread === null || !smallest || !largest
                ? ''
                : ` (at ${int(largest.members)}: ${spread.toFixed(1)}× that at ${int(smallest.members)})`)
            : `${check(cpuRatio <= TARGETS.cpuGrowth)} (${cpuRatio.toFixed(1)}×)`),
      `${int(TARGETS.largestGroup)} members built in ≤ ${TARGETS.buildSeconds} s with ≤ ${size(TARGETS.buildRedisBytes)} Redis growth: ` +
        check(buildOk) +
        (large
          ? ` (${largeBuilt ? `${large.buildSeconds?.toFixed(1)} s` : `built ${int(large.built)} of ${int(large.members)}`}, ${size(large.buildRedisBytes)})`
          : ''),
      'Redis µs per send: growth of every command’s usec in INFO commandstats over the sends, less Redis’s idle rate ' +
        'just before them (idle µs/s: other clients of this Redis and Parley’s own polling); bytes per message: growth ' +
        'of used_memory once the worker has written the messages and trimmed the stream, and (at once) right after the last send.',
    ],
  };
}

function bigRoomSection(results: BenchResults): Section | null {
  const rooms = results.servers.filter((result) => result.bigRoom);
  if (rooms.length === 0) return null;
  const first = rooms[0]?.bigRoom;
  const stepOf = (server: ServerName) =>
    results.servers.find((result) => result.server === server)?.bigRoom?.step ?? null;
  const parley = stepOf('parley');
  const socketio = stepOf('socketio');
  const ratio =
    parley && socketio && socketio.latencyMs.p99 > 0 ? parley.latencyMs.p99 / socketio.latencyMs.p99 : null;
  // A p99 over the messages that got through says little when others did not.
  const parleyClean = parley !== null && parley.errors === 0 && parley.loss === 0;
  return {
    title: first
      ? `Big room: ${int(first.subscribers)} subscribers in one room, one sender at ${first.ratePerS} messages/s for ${first.durationS} s`
      : 'Big room',
    table: [
      [
        'server',
        'connected',
        'connect s',
        'deliveries',
        'deliveries/s',
        'loss',
        'dup',
        'errors',
        'p50 ms',
        'p99 ms',
        'max ms',
        'server CPU %',
        'server CPU µs per delivery',
        'generator CPU %',
        'client CPU µs per delivery',
        'generator loop delay p99 ms',
      ],
      ...rooms.map((result) => {
        const room = result.bigRoom;
        const step = room?.step;
        return [
          SHORT[result.server],
          int(room?.connected),
          room?.connectSeconds == null ? '–' : room.connectSeconds.toFixed(1),
          int(step?.received),
          int(step?.deliveriesPerS),
          step ? String(step.loss) : '–',
          step ? String(step.duplicates) : '–',
          step ? String(step.errors) : '–',
          ms(step?.latencyMs.p50),
          ms(step?.latencyMs.p99),
          ms(step?.latencyMs.max),
          int(step?.serverCpuPercent),
          step?.serverCpuUsPerDelivery == null ? '–' : step.serverCpuUsPerDelivery.toFixed(1),
          int(step?.generatorCpuPercent),
          // The generators' CPU over what they received: what a delivery costs the clients.
          step && step.deliveriesPerS > 0
            ? ((step.generatorCpuPercent / 100 / step.deliveriesPerS) * 1e6).toFixed(1)
            : '–',
          ms(step?.generatorLoopDelayP99Ms),
        ];
      }),
    ],
    textColumns: [0],
    notes: [
      `Parley p99 / Socket.IO p99 ≤ ${TARGETS.bigRoomP99}×: ` +
        (ratio === null || !parley
          ? 'not measured'
          : `${check(parleyClean && ratio <= TARGETS.bigRoomP99)} (${ratio.toFixed(2)}×` +
            (parleyClean ? ')' : `; Parley: ${parley.errors} sends failed, ${parley.loss} deliveries lost)`)),
      'latency: from the send call to each subscriber’s client handing the message over, every delivery counted; ' +
        `the room's members are dealt over ${first?.generators ?? 1} generator process(es) (wall-clock time across them); ` +
        'generator CPU is their sum and loop delay p99 their worst, to show when they, not the server, were the limit.',
    ],
  };
}

function instancesSection(results: BenchResults): Section | null {
  const run = results.instances;
  if (!run) return null;
  const step = run.step;
  const ratios = run.perInstance.map((figures) =>
    figures.pubsubReceived === null || figures.fannedOut === 0
      ? null
      : figures.pubsubReceived / figures.fannedOut,
  );
  const exported = run.perInstance.every((figures) => figures.pubsubReceived !== null);
  const ratioOk =
    exported && ratios.every((ratio) => ratio !== null)
      ? ratios.every((ratio) => ratio !== null && ratio <= TARGETS.pubsubPerFannedOut)
      : null;
  return {
    title:
      `${run.instances} Parley instances on one Redis and PostgreSQL: ${int(run.clients)} clients round-robin, ` +
      `groups of ${run.groupSize}, ${run.ratePerClient} sends/client/s for ${run.durationS} s`,
    table: [
      [
        'instance',
        'clients',
        'events from Pub/Sub',
        'events fanned out',
        'received / fanned out',
        `≤ ${TARGETS.pubsubPerFannedOut}`,
        'server CPU %',
      ],
      ...run.perInstance.map((figures, i) => {
        const ratio = ratios[i] ?? null;
        return [
          String(figures.instance),
          int(figures.clients),
          figures.pubsubReceived === null ? 'n/a (counter not exported)' : int(figures.pubsubReceived),
          int(figures.fannedOut),
          ratio === null ? 'n/a' : ratio.toFixed(2),
          passFail(ratio === null ? null : ratio <= TARGETS.pubsubPerFannedOut),
          int(figures.serverCpuPercent),
        ];
      }),
    ],
    textColumns: [],
    notes: [
      `deliveries ${int(step.received)} of ${int(step.expected)} expected (${int(step.deliveriesPerS)}/s), ` +
        `loss ${step.loss}, duplicates ${step.duplicates}, errors ${step.errors}, ` +
        `p50 ${ms(step.latencyMs.p50)} ms, p99 ${ms(step.latencyMs.p99)} ms, server CPU ${int(step.serverCpuPercent)}% in all`,
      `no loss: ${check(step.loss === 0)}`,
      `Pub/Sub events received / events fanned out ≤ ${TARGETS.pubsubPerFannedOut} on every instance: ` +
        (exported ? check(ratioOk) : 'n/a (counter not exported)'),
    ],
  };
}

function partitionsSection(results: BenchResults): Section | null {
  const run = results.partitions;
  if (!run) return null;
  const percent = (share: number | null) => (share === null ? 'n/a' : `${(share * 100).toFixed(0)}%`);
  return {
    title:
      `Partitions on a Redis Cluster of ${run.masters} masters: ${run.pairs} pairs, each sending ` +
      `${run.sendsPerPair} messages over HTTP, all pairs at once`,
    table: [
      [
        'partitions',
        'sends',
        'sends/s',
        'Redis µs/send (all masters)',
        ...Array.from({ length: run.masters }, (_, i) => `master ${i + 1}: Redis CPU, scripts`),
        'busiest master',
      ],
      ...run.runs.map((figures) => [
        String(figures.partitions),
        int(figures.sends),
        int(figures.sendsPerS),
        figures.redisUsPerSend === null ? 'n/a' : int(figures.redisUsPerSend),
        ...figures.perMaster.map((master) => `${percent(master.share)}, ${int(master.scriptCalls)}`),
        percent(figures.busiestShare),
      ]),
    ],
    textColumns: [],
    notes: [
      'Redis CPU is `INFO commandstats` on each master over the sends; scripts are its EVALSHA calls. ' +
        "A partition is one hash slot: its master runs every script of its conversations' sends.",
      `errors: ${run.runs.map((figures) => `${figures.errors} with ${figures.partitions} partition(s)`).join(', ')}`,
    ],
  };
}

export function phaseSections(results: BenchResults): Section[] {
  return [
    groupsSection(results),
    bigRoomSection(results),
    instancesSection(results),
    partitionsSection(results),
  ].filter((section): section is Section => section !== null);
}

export function alignedTable(section: Section): string[] {
  const { table, textColumns } = section;
  const widths = (table[0] ?? []).map((_, column) =>
    Math.max(...table.map((cells) => (cells[column] ?? '').length)),
  );
  return table.map((cells) =>
    cells
      .map((cell, column) =>
        column === 0 || textColumns.includes(column)
          ? cell.padEnd(widths[column] ?? 0)
          : cell.padStart(widths[column] ?? 0),
      )
      .join('  ')
      .trimEnd(),
  );
}

export function markdownTable(section: Section): string[] {
  const [header, ...rows] = section.table;
  if (!header) return [];
  const escape = (cell: string) => cell.replaceAll('|', '\\|');
  const align = (column: number) => (column === 0 || section.textColumns.includes(column) ? '---' : '---:');
  return [
    `| ${header.map(escape).join(' | ')} |`,
    `|${header.map((_, column) => align(column)).join('|')}|`,
    ...rows.map((cells) => `| ${cells.map(escape).join(' | ')} |`),
  ];
}
