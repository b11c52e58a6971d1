// No import cycle between the folders of server/src, checked with dependency-cruiser: its
// `no-folder-cycle` rule (.dependency-cruiser.cjs) covers the folders; a module directly in
// server/src (metrics.ts, pagination.ts, …) belongs to no folder of its own there, so this
// script also looks for cycles in the graph where each such module is a node beside the folders.
import { cruise, format } from 'dependency-cruiser';
import extractDepcruiseOptions from 'dependency-cruiser/config-utl/extract-depcruise-options';
import extractTSConfig from 'dependency-cruiser/config-utl/extract-ts-config';

const options = await extractDepcruiseOptions('./.dependency-cruiser.cjs');
const { output } = await cruise(['server/src'], options, {}, { tsConfig: extractTSConfig('tsconfig.json') });
const problems = [];

const rules = await format(output, { outputType: 'err' });
if (rules.exitCode !== 0) problems.push(rules.output.replace(/^\n+|\s+$/g, ''));

/** `server/src/auth/service.ts` → `auth/`, `server/src/metrics.ts` → `metrics.ts`. */
const unit = (path) => path.replace(/^server\/src\/([^/]+\/)?.*$/, (all, folder) => folder ?? path.slice(11));
/** unit → unit → the module imports that make the edge. */
const edges = new Map();
for (const module of output.modules) {
  const from = unit(module.source);
  for (const dependency of module.dependencies) {
    const to = unit(dependency.resolved);
    if (!dependency.resolved.startsWith('server/src/') || to === from) continue;
    const targets = edges.get(from) ?? new Map();
    edges.set(from, targets);
    targets.set(to, [...(targets.get(to) ?? []), `${module.source} → ${dependency.resolved}`]);
  }
}

// Strongly connected components (Tarjan); each one with more than one unit is a cycle.
const index = new Map();
const low = new Map();
const stack = [];
let next = 0;
function visit(node) {
  index.set(node, next);
  low.set(node, next++);
  stack.push(node);
  for (const target of edges.get(node)?.keys() ?? []) {
    if (!index.has(target)) {
      visit(target);
      low.set(node, Math.min(low.get(node), low.get(target)));
    } else if (stack.includes(target)) {
      low.set(node, Math.min(low.get(node), index.get(target)));
    }
  }
  if (low.get(node) !== index.get(node)) return;
  const component = [];
  for (let member; member !== node;) component.push((member = stack.pop()));
  if (component.length < 2) return;
  const lines = [`cycle between ${component.sort().join(', ')}:`];
  for (const from of component) {
    for (const [to, imports] of edges.get(from) ?? []) {
      if (component.includes(to)) lines.push(...imports.map((line) => `  ${line}`));
    }
  }
  problems.push(lines.join('\n'));
}
for (const node of edges.keys()) if (!index.has(node)) visit(node);

if (problems.length > 0) {
  console.error(`Import cycles in server/src (folders must form a DAG):\n\n${problems.join('\n\n')}`);
  process.exit(1);
}
