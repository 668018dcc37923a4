/**
 * The process's adapters, chosen by configuration and shared by every service
 * the process runs (so that `all` wires stream -> indexer -> query through one
 * embedded log and index). Created on first use, closed once at shutdown.
 */
import type { EventLog } from "../shared/event_log/event_log.ts";
import { MemoryEventLog } from "../shared/event_log/memory_event_log.ts";
import { loadTweetCodec, type TweetCodec } from "../shared/events/tweet_event.ts";
import type { Logger } from "../shared/log/log.ts";
import { MemorySearchIndex } from "../shared/search_index/memory_search_index.ts";
import type { SearchIndex } from "../shared/search_index/search_index.ts";
import type { AppConfig } from "./config.ts";

export class Infrastructure {
  #eventLog: EventLog | undefined;
  #searchIndex: SearchIndex | undefined;
  #tweetCodec: Promise<TweetCodec> | undefined;

  constructor(readonly config: AppConfig, readonly logger: Logger) {}

  eventLog(): EventLog {
    if (this.#eventLog === undefined) {
      const { memoryRetentionRecords, memoryRetentionMs } = this.config.eventLog;
      this.#eventLog = new MemoryEventLog({
        retentionRecords: memoryRetentionRecords,
        retentionMs: memoryRetentionMs === 0 ? Infinity : memoryRetentionMs,
      });
      this.logger.info(
        "Event log: in-process (EVENT_LOG=memory); events live in this process only, " +
          "{records} records per partition for at most {ms} ms",
        { records: memoryRetentionRecords, ms: memoryRetentionMs },
      );
    }
    return this.#eventLog;
  }

  searchIndex(): SearchIndex {
    if (this.#searchIndex === undefined) {
      const { memoryMaxDocuments } = this.config.searchIndex;
      this.#searchIndex = new MemorySearchIndex({ maxDocuments: memoryMaxDocuments });
      this.logger.info(
        "Search index: in-process (SEARCH_INDEX=memory); documents live in this process only, " +
          "at most {documents}",
        { documents: memoryMaxDocuments },
      );
    }
    return this.#searchIndex;
  }

  tweetCodec(): Promise<TweetCodec> {
    this.#tweetCodec ??= loadTweetCodec();
    return this.#tweetCodec;
  }

  async close(): Promise<void> {
    await this.#eventLog?.close();
    await this.#searchIndex?.close();
  }
}
