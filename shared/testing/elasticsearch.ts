/**
 * Elasticsearch for tests: the engine `deno task engines up elasticsearch`
 * starts, or ELASTICSEARCH_URL; and the log indices of one test run.
 */
import { Client } from "@elastic/elasticsearch";
import { indexPattern } from "../log/ecs_log_document.ts";

export const ELASTICSEARCH_URL = Deno.env.get("ELASTICSEARCH_URL") ?? "http://127.0.0.1:9200";

/** Resolves when Elasticsearch answers; rejects with how to start it otherwise. */
export async function assertElasticsearchReachable(url = ELASTICSEARCH_URL): Promise<void> {
  try {
    const response = await fetch(`${url}/_cluster/health`, { signal: AbortSignal.timeout(5_000) });
    await response.body?.cancel();
    if (!response.ok) throw new Error(`it answered ${response.status}`);
  } catch (cause) {
    throw new Error(
      `Elasticsearch is not reachable at ${url}: start it with \`deno task engines up elasticsearch\``,
      { cause },
    );
  }
}

/**
 * A log index prefix of its own for one test run. It does not start with
 * `logs-twitterapi`, whose template would overlap this one's at the same priority.
 */
export function testLogIndexPrefix(): string {
  return `test-logs-${Date.now()}-${crypto.randomUUID().slice(0, 8)}`;
}

/** Deletes the daily log indices and the index template of `prefix`. */
export async function deleteLogIndices(client: Client, prefix: string): Promise<void> {
  // Wildcard deletes are refused by default (action.destructive_requires_name).
  const indices = await client.indices.get({
    index: indexPattern(prefix),
    allow_no_indices: true,
    ignore_unavailable: true,
  });
  const names = Object.keys(indices);
  if (names.length > 0) await client.indices.delete({ index: names });
  await client.indices.deleteIndexTemplate({ name: prefix }, { ignore: [404] });
}
