/** Reads counters from a server's `/metrics` (Prometheus text format). */

/** The exposition of `${url}/metrics`; Parley serves it to loopback without a token. */
export async function scrape(url: string): Promise<string> {
  const response = await fetch(`${url}/metrics`);
  if (!response.ok) throw new Error(`HTTP ${response.status} from ${url}/metrics`);
  return response.text();
}

/**
 * Every sample of metric `name` summed over its labels; null when the exposition does not
 * declare the metric at all (an instance built before it existed).
 */
export function sumOf(text: string, name: string): number | null {
  let declared = false;
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) {
      if (line.startsWith(`# TYPE ${name} `)) declared = true;
      continue;
    }
    const match = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match?.[1] !== name) continue;
    declared = true;
    total += Number(match[3]);
  }
  return declared ? total : null;
}
