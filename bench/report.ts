import type { ServerName } from './generator/worker.js';
import { alignedTable, markdownTable, phaseSections } from './report-phases.js';
import type { BenchResults, ServerResult, StepResult } from './results-types.js';

const LABELS: Record<ServerName, string> = {
  parley: 'Parley (PostgreSQL + Redis, persisting)',
  socketio: 'Socket.IO 4 + redis-adapter',
  raw: 'raw ws + Redis Pub/Sub',
};
const SHORT: Record<ServerName, string> = { parley: 'Parley', socketio: 'Socket.IO', raw: 'raw' };
const COLORS: Record<ServerName, string> = { parley: '#d1495b', socketio: '#00798c', raw: '#6c6f7d' };

const int = (value: number | null | undefined) =>
  value == null ? '–' : Math.round(value).toLocaleString('en-US');
const ms = (value: number | null | undefined) =>
  value == null ? '–' : value < 10 ? value.toFixed(2) : value.toFixed(1);

const HEADER = [
  'server',
  'sends/s',
  'deliveries/s',
  'loss',
  'dup',
  'errors',
  'p50 ms',
  'p95 ms',
  'p99 ms',
  'max ms',
  'server CPU %',
  'server CPU µs per delivery',
  'server RSS MB',
  'persist p50/p99 ms',
  'saturation deliveries/s',
  'KB per idle subscriber',
  'backlog rows/s',
];

/**
 * Server CPU per delivery at W1, the same load for every server: what a delivery costs, which
 * other load on the machine changes far less than latency.
 */
function cpuPerDelivery(result: ServerResult): string {
  const value = result.w1?.serverCpuUsPerDelivery;
  return value == null ? '–' : value.toFixed(0);
}

function row(result: ServerResult): string[] {
  const w1 = result.w1;
  return [
    SHORT[result.server],
    int(w1?.sendsPerS),
    int(w1?.deliveriesPerS),
    w1 ? String(w1.loss) : '–',
    w1 ? String(w1.duplicates) : '–',
    w1 ? String(w1.errors) : '–',
    ms(w1?.latencyMs.p50),
    ms(w1?.latencyMs.p95),
    ms(w1?.latencyMs.p99),
    ms(w1?.latencyMs.max),
    int(w1?.serverCpuPercent),
    cpuPerDelivery(result),
    int(w1?.serverRssPeakMB),
    w1?.persistLagMs ? `${ms(w1.persistLagMs.p50)} / ${ms(w1.persistLagMs.p99)}` : '–',
    int(result.saturationDeliveriesPerS),
    result.capacity ? (result.capacity.bytesPerConnection / 1024).toFixed(1) : '–',
    int(result.backlog?.rowsPerS),
  ];
}

/** The step of `curve` at `rate` sends per client per second (within 1%), if there is one. */
export function fixedCostStep(curve: readonly StepResult[], rate: number): StepResult | null {
  return curve.find((point) => Math.abs(point.ratePerClient - rate) <= rate * 0.01) ?? null;
}

/** Half the 120 µs per delivery Parley spent at 500 sends/s before events were written once. */
const FIXED_COST_TARGET_US = 60;

function ratio(a: number | null | undefined, b: number | null | undefined): string {
  if (a == null || b == null || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '–';
  return `${(a / b).toFixed(2)}×`;
}

function ratioLines(results: BenchResults): string[] {
  const by = (server: ServerName) => results.servers.find((result) => result.server === server);
  const parley = by('parley');
  if (!parley) return [];
  const lines: string[] = [];
  for (const peer of ['socketio', 'raw'] as const) {
    const other = by(peer);
    if (!other) continue;
    lines.push(
      `Parley vs ${SHORT[peer]}: W1 p99 ${ratio(parley.w1?.latencyMs.p99, other.w1?.latencyMs.p99)}, ` +
        `server CPU per delivery ${ratio(Number(cpuPerDelivery(parley)), Number(cpuPerDelivery(other)))}, ` +
        `saturation deliveries/s ${ratio(parley.saturationDeliveriesPerS, other.saturationDeliveriesPerS)}, ` +
        `memory per idle subscriber ${ratio(parley.capacity?.bytesPerConnection, other.capacity?.bytesPerConnection)}`,
    );
  }
  return lines;
}

function targetLines(results: BenchResults): string[] {
  const by = (server: ServerName) => results.servers.find((result) => result.server === server);
  const parley = by('parley');
  const socketio = by('socketio');
  const raw = by('raw');
  if (!parley) return [];
  const check = (ok: boolean | null) => (ok === null ? 'not measured' : ok ? 'met' : 'NOT met');
  const belowSaturationClean = results.servers.every((result) =>
    result.curve
      .filter((point) => point.latencyMs.p99 <= 50)
      .every((point) => point.loss === 0 && point.duplicates === 0),
  );
  const p99 = parley.w1 && socketio?.w1 ? parley.w1.latencyMs.p99 <= 2 * socketio.w1.latencyMs.p99 : null;
  const saturation =
    parley.saturationDeliveriesPerS != null && socketio?.saturationDeliveriesPerS != null
      ? parley.saturationDeliveriesPerS >= socketio.saturationDeliveriesPerS
      : null;
  const rawShare =
    parley.saturationDeliveriesPerS != null && raw?.saturationDeliveriesPerS
      ? parley.saturationDeliveriesPerS / raw.saturationDeliveriesPerS
      : null;
  const persist = parley.w1?.persistLagMs ? parley.w1.persistLagMs.p99 <= 250 : null;
  const backlog = parley.backlog ? parley.backlog.rowsPerS >= 50_000 : null;
  const memory = parley.capacity ? parley.capacity.bytesPerConnection <= 8 * 1024 : null;
  const fixedRate = results.workload.fixedRatePerClient ?? 0;
  const fixedCost = (result: ServerResult | undefined) =>
    result && fixedRate > 0 ? (fixedCostStep(result.curve, fixedRate)?.serverCpuUsPerDelivery ?? null) : null;
  const parleyFixed = fixedCost(parley);
  const fixedPeers = [socketio, raw]
    .map((result) => {
      const value = fixedCost(result);
      return result && value !== null ? `${SHORT[result.server]} ${value.toFixed(0)} µs` : null;
    })
    .filter((text) => text !== null);
  const fixedSends = Math.round(results.workload.clients * fixedRate).toLocaleString('en-US');
  return [
    `zero loss and duplicates below saturation: ${check(belowSaturationClean)}`,
    `W1 p99 ≤ 2× Socket.IO: ${check(p99)}`,
    `saturation ≥ Socket.IO: ${check(saturation)}` +
      (rawShare === null ? '' : ` (Parley at ${(rawShare * 100).toFixed(0)}% of the raw limit; goal 80%)`),
    `persistence lag p99 ≤ 250 ms at W1: ${check(persist)}`,
    `backlog drain ≥ 50,000 rows/s: ${check(backlog)}`,
    `≤ 8 KB per idle subscriber: ${check(memory)}`,
    ...(fixedRate > 0
      ? [
          `fixed cost ≤ ${FIXED_COST_TARGET_US} µs of server CPU per delivery at ${fixedSends} sends/s: ` +
            (parleyFixed === null
              ? check(null)
              : `${check(parleyFixed <= FIXED_COST_TARGET_US)} (Parley ${parleyFixed.toFixed(0)} µs` +
                `${fixedPeers.map((text) => `, ${text}`).join('')})`),
        ]
      : []),
  ];
}

function workloadLine(results: BenchResults): string {
  const w = results.workload;
  return (
    `${w.clients} clients in groups of ${w.groupSize}, ${w.ratePerClient} sends/client/s ` +
    `(${Math.round(w.clients * w.ratePerClient)} sends/s, ${Math.round(w.clients * w.ratePerClient * (w.groupSize - 1))} deliveries/s offered), ` +
    `${w.durationS} s, ${w.messageSize}-character messages, sends over ${w.transport}, ${w.generators} generator process(es)`
  );
}

/** Whether the run had W1, backlog or capacity figures (`--only` may have left them out). */
function hasMainPhases(results: BenchResults): boolean {
  return results.servers.some(
    (result) => result.w1 !== null || result.capacity !== null || result.backlog !== null,
  );
}

export function renderTable(results: BenchResults): string {
  const rows = [HEADER, ...results.servers.map(row)];
  const widths = HEADER.map((_, column) => Math.max(...rows.map((cells) => (cells[column] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, column) =>
        column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0),
      )
      .join('  ');
  const errors = results.servers
    .filter((result) => result.error)
    .map((result) => `${SHORT[result.server]}: ${result.error}`);
  const main = hasMainPhases(results)
    ? [
        `W1: ${workloadLine(results)}`,
        '',
        line(HEADER),
        ...rows.slice(1).map(line),
        '',
        ...ratioLines(results),
        '',
        'Targets:',
        ...targetLines(results).map((text) => `  ${text}`),
      ]
    : [];
  const phases = phaseSections(results).flatMap((section) => [
    '',
    `${section.title}:`,
    '',
    ...alignedTable(section),
    '',
    ...section.notes.map((text) => `  ${text}`),
  ]);
  return [
    ...main,
    ...phases,
    ...(errors.length > 0 ? ['', 'Errors:', ...errors.map((text) => `  ${text}`)] : []),
  ]
    .join('\n')
    .replace(/^\n+/, '');
}

export function renderMarkdown(
  results: BenchResults,
  chartFile: string,
  title = '# Benchmark results',
): string {
  const m = results.machine;
  const out: string[] = [
    title,
    '',
    `- Run: ${results.startedAt} → ${results.finishedAt}`,
    `- Command: \`${results.command}\``,
    `- Machine: ${m.cpus} CPUs (${m.cpuModel}), ${m.memoryGB} GB memory, Node ${m.node}, Linux ${m.kernel}`,
  ];
  out.push(...(hasMainPhases(results) ? mainMarkdown(results, chartFile) : ['']));
  for (const section of phaseSections(results)) {
    out.push(
      `#### ${section.title}`,
      '',
      ...markdownTable(section),
      '',
      ...section.notes.map((line) => `- ${line}`),
      '',
    );
  }
  const errors = results.servers.filter((result) => result.error);
  if (!hasMainPhases(results) && errors.length > 0) {
    out.push('#### Errors', '', ...errors.map((result) => `- ${SHORT[result.server]}: ${result.error}`), '');
  }
  return out.join('\n');
}

/** The W1 table, the targets, the chart and each server's steps, capacity and backlog. */
function mainMarkdown(results: BenchResults, chartFile: string): string[] {
  const out: string[] = [
    `- W1: ${workloadLine(results)}`,
    '',
    `| ${HEADER.join(' | ')} |`,
    `|${HEADER.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
    ...results.servers.map((result) => `| ${row(result).join(' | ')} |`),
    '',
    ...ratioLines(results).map((line) => `- ${line}`),
    '',
    '#### Targets',
    '',
    ...targetLines(results).map((line) => `- ${line}`),
    '',
    '#### Latency against load',
    '',
    `![p99 latency against offered load](${chartFile})`,
    '',
  ];
  for (const result of results.servers) {
    out.push(`#### ${LABELS[result.server]}`, '');
    if (result.error) out.push(`Error: ${result.error}`, '');
    if (result.machineBusyBeforePercent !== null) {
      out.push(
        `Machine CPU busy just before the runs (clients connected, idle): ${Math.round(result.machineBusyBeforePercent)}% of one core.`,
        '',
      );
    }
    if (result.curve.length > 0) {
      out.push(
        '| sends/client/s | offered deliveries/s | deliveries/s | loss | dup | late | errors | p50 ms | p99 ms | max ms | server CPU % | server loop busy % | server CPU µs/delivery | generator CPU % | machine CPU % | load avg | passed |',
        '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|',
      );
      for (const point of result.curve) {
        out.push(
          `| ${point.ratePerClient.toFixed(2)} | ${int(point.offeredDeliveriesPerS)} | ${int(point.deliveriesPerS)} | ${point.loss} | ${point.duplicates} | ${point.strays} | ${point.errors} | ${ms(point.latencyMs.p50)} | ${ms(point.latencyMs.p99)} | ${ms(point.latencyMs.max)} | ${int(point.serverCpuPercent)} | ${point.serverLoopBusyPercent == null ? '–' : int(point.serverLoopBusyPercent)} | ${point.serverCpuUsPerDelivery?.toFixed(0) ?? '–'} | ${int(point.generatorCpuPercent)} | ${int(point.machineCpuPercent)} | ${point.loadAverage.toFixed(1)} | ${point.passed ? 'yes' : 'no'} |`,
        );
      }
      out.push('');
    }
    if (result.capacity) {
      const c = result.capacity;
      out.push(
        `Idle subscribers: ${c.connected} of ${c.target} connected in ${c.connectSeconds.toFixed(1)} s (${c.failed} failed), ` +
          `server RSS ${c.rssBeforeMB.toFixed(0)} → ${c.rssAfterMB.toFixed(0)} MB, ${(c.bytesPerConnection / 1024).toFixed(1)} KB each` +
          (c.heapBytesPerConnection === undefined
            ? '.'
            : ` (live JavaScript heap after full collections: ${(c.heapBytesPerConnection / 1024).toFixed(1)} KB each).`),
        '',
      );
    }
    if (result.backlog) {
      const b = result.backlog;
      out.push(
        `Backlog: ${b.messages} messages appended in ${b.fillSeconds.toFixed(1)} s with the worker stopped; a fresh worker ` +
          `wrote ${b.rowsWritten} rows in ${b.drainSeconds.toFixed(1)} s: ${int(b.rowsPerS)} rows/s steady, ` +
          `${int(b.rowsPerSFromStart)} rows/s counting its start-up; group lag afterwards ${b.groupLagAfter ?? '–'}, pending ${b.pendingAfter ?? '–'}.`,
        '',
      );
    }
  }
  return out;
}

/** p99 latency (log scale) against offered deliveries/s, one line per server; plain SVG. */
export function renderChart(results: BenchResults): string {
  const width = 760;
  const height = 440;
  const left = 70;
  const right = 20;
  const top = 40;
  const bottom = 110;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const points = results.servers.flatMap((result) => result.curve);
  const maxX = Math.max(1, ...points.map((point) => point.offeredDeliveriesPerS)) * 1.05;
  const p99s = points.map((point) => Math.max(point.latencyMs.p99, 0.1));
  const minY = 10 ** Math.floor(Math.log10(Math.min(1, ...p99s)));
  const maxY = 10 ** Math.ceil(Math.log10(Math.max(100, ...p99s)));
  const x = (value: number) => left + (value / maxX) * plotW;
  const y = (value: number) =>
    top +
    plotH -
    ((Math.log10(Math.max(value, minY)) - Math.log10(minY)) / (Math.log10(maxY) - Math.log10(minY))) * plotH;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">p99 end-to-end latency against offered load</text>`,
  ];
  for (let decade = minY; decade <= maxY; decade *= 10) {
    parts.push(
      `<line x1="${left}" x2="${left + plotW}" y1="${y(decade).toFixed(1)}" y2="${y(decade).toFixed(1)}" stroke="#e3e3e3"/>`,
      `<text x="${left - 6}" y="${(y(decade) + 4).toFixed(1)}" text-anchor="end">${decade >= 1 ? decade : decade.toFixed(1)} ms</text>`,
    );
  }
  const xStep =
    10 ** Math.floor(Math.log10(maxX / 2)) * (maxX / 10 ** Math.floor(Math.log10(maxX)) > 5 ? 2 : 1);
  for (let tick = 0; tick <= maxX; tick += xStep) {
    parts.push(
      `<line x1="${x(tick).toFixed(1)}" x2="${x(tick).toFixed(1)}" y1="${top}" y2="${top + plotH}" stroke="#f0f0f0"/>`,
      `<text x="${x(tick).toFixed(1)}" y="${top + plotH + 18}" text-anchor="middle">${tick >= 1000 ? `${tick / 1000}k` : tick}</text>`,
    );
  }
  parts.push(
    `<line x1="${left}" x2="${left + plotW}" y1="${y(50).toFixed(1)}" y2="${y(50).toFixed(1)}" stroke="#999" stroke-dasharray="6 4"/>`,
    `<text x="${left + plotW - 4}" y="${(y(50) - 5).toFixed(1)}" text-anchor="end" fill="#666">50 ms</text>`,
    `<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#888"/>`,
    `<text x="${left + plotW / 2}" y="${top + plotH + 40}" text-anchor="middle">offered deliveries per second</text>`,
  );
  results.servers.forEach((result, index) => {
    const color = COLORS[result.server];
    const curve = [...result.curve].sort((a, b) => a.offeredDeliveriesPerS - b.offeredDeliveriesPerS);
    if (curve.length > 1) {
      const path = curve
        .map(
          (point, i) =>
            `${i === 0 ? 'M' : 'L'}${x(point.offeredDeliveriesPerS).toFixed(1)},${y(point.latencyMs.p99).toFixed(1)}`,
        )
        .join(' ');
      parts.push(`<path d="${path}" fill="none" stroke="${color}" stroke-width="2"/>`);
    }
    for (const point of curve) {
      parts.push(
        `<circle cx="${x(point.offeredDeliveriesPerS).toFixed(1)}" cy="${y(point.latencyMs.p99).toFixed(1)}" r="4" ` +
          `fill="${point.passed ? color : '#fff'}" stroke="${color}" stroke-width="2"/>`,
      );
    }
    const ly = top + plotH + 62 + index * 16;
    parts.push(
      `<line x1="${left}" x2="${left + 24}" y1="${ly - 4}" y2="${ly - 4}" stroke="${color}" stroke-width="2"/>`,
      `<text x="${left + 30}" y="${ly}">${LABELS[result.server]}</text>`,
    );
  });
  parts.push(
    `<text x="${left + plotW}" y="${top + plotH + 62}" text-anchor="end" fill="#666">hollow: p99 &gt; 50 ms, loss or errors</text>`,
    '</svg>',
    '',
  );
  return parts.join('\n');
}

const DOCS_BEGIN = '<!-- bench:begin -->';
const DOCS_END = '<!-- bench:end -->';

/** Replaces the generated section of docs/PERFORMANCE.md; the prose around it is kept. */
export function replaceDocsSection(document: string, results: BenchResults): string {
  const begin = document.indexOf(DOCS_BEGIN);
  const end = document.indexOf(DOCS_END);
  if (begin < 0 || end < begin) return document;
  const section = renderMarkdown(results, '../bench/results/latest.svg', '### Latest run');
  return `${document.slice(0, begin + DOCS_BEGIN.length)}\n\n${section}\n${document.slice(end)}`;
}
