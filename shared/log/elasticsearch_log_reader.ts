/** Searches the log lines shipped by `ElasticsearchLogSink` (every daily index of a prefix). */
import type { Client, estypes } from "@elastic/elasticsearch";
import { type EcsLogDocument, entryOfEcsDocument, indexPattern } from "./ecs_log_document.ts";
import {
  levelsFrom,
  type LogEntry,
  type LogQuery,
  type LogReader,
  searchLimit,
} from "./log_reader.ts";

export interface ElasticsearchLogReaderOptions {
  /** @default "logs-twitterapi" */
  readonly indexPrefix?: string;
}

export class ElasticsearchLogReader implements LogReader {
  readonly #client: Client;
  readonly #pattern: string;

  constructor(client: Client, options: ElasticsearchLogReaderOptions = {}) {
    this.#client = client;
    this.#pattern = indexPattern(options.indexPrefix ?? "logs-twitterapi");
  }

  async search(query: LogQuery): Promise<LogEntry[]> {
    const size = searchLimit(query);
    const filter: estypes.QueryDslQueryContainer[] = [];
    if (query.traceId !== undefined) filter.push({ term: { "trace.id": query.traceId } });
    if (query.service !== undefined) filter.push({ term: { "service.name": query.service } });
    if (query.level !== undefined) {
      filter.push({ terms: { "log.level": levelsFrom(query.level) } });
    }
    if (query.from !== undefined || query.to !== undefined) {
      filter.push({
        range: {
          "@timestamp": {
            format: "epoch_millis",
            ...(query.from === undefined ? {} : { gte: query.from }),
            ...(query.to === undefined ? {} : { lt: query.to }),
          },
        },
      });
    }
    if (query.text !== undefined && query.text.trim() !== "") {
      filter.push({ match: { message: { query: query.text, operator: "and" } } });
    }
    const response = await this.#client.search<EcsLogDocument>({
      index: this.#pattern,
      ignore_unavailable: true,
      allow_no_indices: true,
      size,
      query: { bool: { filter } },
      sort: [
        { "@timestamp": { order: "desc" } },
        { "event.sequence": { order: "desc", unmapped_type: "long" } },
      ],
    });
    return response.hits.hits.flatMap((hit) =>
      hit._source === undefined ? [] : [entryOfEcsDocument(hit._source)]
    );
  }
}
