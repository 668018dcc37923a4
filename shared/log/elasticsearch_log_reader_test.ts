/**
 * The Elasticsearch log reader and sink against a real Elasticsearch
 * (`ELASTICSEARCH_URL`, by default the one `deno task engines up
 * elasticsearch` starts), in indices of this run's own prefix, deleted after.
 */
import { Client } from "@elastic/elasticsearch";
import { getLogger } from "@logtape/logtape";
import {
  assertElasticsearchReachable,
  deleteLogIndices,
  ELASTICSEARCH_URL,
  testLogIndexPrefix,
} from "../testing/elasticsearch.ts";
import { indexPattern } from "./ecs_log_document.ts";
import { ElasticsearchLogReader } from "./elasticsearch_log_reader.ts";
import { ElasticsearchLogSink } from "./elasticsearch_log_sink.ts";
import { runLogReaderContract } from "./log_reader_contract.ts";

runLogReaderContract("ElasticsearchLogReader", async () => {
  await assertElasticsearchReachable();
  const client = new Client({ node: ELASTICSEARCH_URL });
  const indexPrefix = testLogIndexPrefix();
  const sink = new ElasticsearchLogSink(client, {
    logger: getLogger(["test", "log-shipping"]),
    indexPrefix,
    flushIntervalMs: 50,
  });
  sink.start();
  return {
    sink: sink.sink,
    reader: new ElasticsearchLogReader(client, { indexPrefix }),
    async settle() {
      await sink.flush();
      await client.indices.refresh({ index: indexPattern(indexPrefix) });
    },
    async close() {
      await sink.close();
      await deleteLogIndices(client, indexPrefix);
      await client.close();
    },
  };
});
