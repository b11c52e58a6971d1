/**
 * Renders the Markdown table, the chart and (with `--docs`) the generated section of
 * docs/PERFORMANCE.md again from a results file, e.g. after a change to the report layout:
 *
 *   npx tsx bench/render.ts [bench/results/latest.json] [--docs]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { renderChart, renderMarkdown, renderTable, replaceDocsSection } from './report.js';
import type { BenchResults } from './results-types.js';

const args = process.argv.slice(2);
const file =
  args.find((arg) => !arg.startsWith('--')) ?? new URL('./results/latest.json', import.meta.url).pathname;
const results = JSON.parse(readFileSync(file, 'utf8')) as BenchResults;
const name = basename(file, '.json');
const directory = dirname(file);
writeFileSync(join(directory, `${name}.md`), renderMarkdown(results, `${name}.svg`));
writeFileSync(join(directory, `${name}.svg`), renderChart(results));
if (args.includes('--docs')) {
  const docs = new URL('../docs/PERFORMANCE.md', import.meta.url);
  writeFileSync(docs, replaceDocsSection(readFileSync(docs, 'utf8'), results));
}
console.log(renderTable(results));
