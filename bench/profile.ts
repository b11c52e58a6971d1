/**
 * Summarises a V8 `.cpuprofile` (from `npm run bench -- --cpu-prof`): where the server's CPU
 * time goes, by function (self time) and by package. Given a `.heapprofile` (sampled
 * allocations still live, from `--heap-prof-subscribers`), the same for retained memory.
 *
 *   npx tsx bench/profile.ts bench/results/tmp/<file>.cpuprofile [top]
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: tsx bench/profile.ts <file.cpuprofile> [top]');
  process.exit(64);
}
const top = Number(topArg ?? 30);
interface HeapNode {
  callFrame: ProfileNode['callFrame'];
  selfSize: number;
  children: HeapNode[];
}
const raw = JSON.parse(readFileSync(file, 'utf8')) as Profile | { head: HeapNode };
if ('head' in raw) {
  summariseHeap(raw.head);
  process.exit(0);
}
const profile = raw;
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const selfUs = new Map<number, number>();
profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
const total = [...selfUs.values()].reduce((sum, value) => sum + value, 0);

function where(url: string): string {
  const modules = url.lastIndexOf('node_modules/');
  if (modules >= 0) {
    const rest = url.slice(modules + 'node_modules/'.length).split('/');
    return rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1]}` : (rest[0] ?? url);
  }
  if (url.includes('/server/src/')) return `parley:${url.slice(url.indexOf('/server/src/') + 12)}`;
  if (url.startsWith('node:')) return url;
  return url === '' ? '(native/V8)' : url.replace(/^file:\/\//, '');
}

const functions = new Map<string, number>();
const packages = new Map<string, number>();
for (const [id, us] of selfUs) {
  const node = byId.get(id);
  if (!node) continue;
  const { functionName, url, lineNumber } = node.callFrame;
  const place = where(url);
  const name = `${functionName || '(anonymous)'}  ${place}${url ? `:${lineNumber + 1}` : ''}`;
  functions.set(name, (functions.get(name) ?? 0) + us);
  const pkg = place.startsWith('parley:') ? 'parley' : place;
  packages.set(pkg, (packages.get(pkg) ?? 0) + us);
}
// Inclusive time: every sample counts once for each distinct function on its stack.
const parent = new Map<number, number>();
for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
const inclusive = new Map<string, number>();
for (const [id, us] of selfUs) {
  const seen = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const node = byId.get(at);
    if (!node) break;
    const place = where(node.callFrame.url);
    if (!place.startsWith('parley:') && !place.startsWith('@trpc') && place !== 'superjson') continue;
    const name = `${node.callFrame.functionName || '(anonymous)'}  ${place}:${node.callFrame.lineNumber + 1}`;
    if (seen.has(name)) continue;
    seen.add(name);
    inclusive.set(name, (inclusive.get(name) ?? 0) + us);
  }
}
const pct = (us: number) => `${((us / total) * 100).toFixed(1).padStart(5)}%`;
console.log(`total sampled: ${(total / 1e6).toFixed(1)} s\n\nself time by package:`);
for (const [name, us] of [...packages].sort((a, b) => b[1] - a[1]).slice(0, 15))
  console.log(`  ${pct(us)}  ${name}`);
console.log('\nself time by function:');
for (const [name, us] of [...functions].sort((a, b) => b[1] - a[1]).slice(0, top))
  console.log(`  ${pct(us)}  ${name}`);
console.log('\ninclusive time, Parley / tRPC / superjson functions:');
for (const [name, us] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, top))
  console.log(`  ${pct(us)}  ${name}`);

function summariseHeap(head: HeapNode): void {
  const bytesByFunction = new Map<string, number>();
  const bytesByPackage = new Map<string, number>();
  const inclusiveBytes = new Map<string, number>();
  let totalBytes = 0;
  const walk = (node: HeapNode, stack: string[]) => {
    const { functionName, url, lineNumber } = node.callFrame;
    const place = where(url);
    const name = `${functionName || '(anonymous)'}  ${place}${url ? `:${lineNumber + 1}` : ''}`;
    const here = place.startsWith('parley:') || place.startsWith('@trpc') ? [...stack, name] : stack;
    if (node.selfSize > 0) {
      totalBytes += node.selfSize;
      bytesByFunction.set(name, (bytesByFunction.get(name) ?? 0) + node.selfSize);
      const pkg = place.startsWith('parley:') ? 'parley' : place;
      bytesByPackage.set(pkg, (bytesByPackage.get(pkg) ?? 0) + node.selfSize);
      for (const frame of new Set(here))
        inclusiveBytes.set(frame, (inclusiveBytes.get(frame) ?? 0) + node.selfSize);
    }
    for (const child of node.children) walk(child, here);
  };
  walk(head, []);
  const share = (bytes: number) =>
    `${((bytes / totalBytes) * 100).toFixed(1).padStart(5)}%  ${(bytes / 2 ** 20).toFixed(1).padStart(6)} MB`;
  console.log(`live sampled allocations: ${(totalBytes / 2 ** 20).toFixed(1)} MB\n\nby package:`);
  for (const [name, bytes] of [...bytesByPackage].sort((a, b) => b[1] - a[1]).slice(0, 12))
    console.log(`  ${share(bytes)}  ${name}`);
  console.log('\nby allocating function:');
  for (const [name, bytes] of [...bytesByFunction].sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(`  ${share(bytes)}  ${name}`);
  console.log('\ninclusive, Parley / tRPC functions on the allocating stack:');
  for (const [name, bytes] of [...inclusiveBytes].sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(`  ${share(bytes)}  ${name}`);
}
