import { Client } from "@elastic/elasticsearch";
import { getLogger } from "@logtape/logtape";
import { ElasticsearchLogSink } from "../shared/log/elasticsearch_log_sink.ts";
import { logIndexTemplate } from "../shared/log/ecs_log_document.ts";
const client = new Client({ node: "http://127.0.0.1:9200" });
try { console.log(await client.indices.putIndexTemplate(logIndexTemplate("test-logs-dbg"))); } catch (e) { console.log("ERR", e.message); }
await client.close();
const r = await fetch("http://127.0.0.1:9200/_index_template/test-logs-dbg", {method: "PUT", headers: {"content-type": "application/json"}, body: JSON.stringify((({name, ...rest}) => rest)(logIndexTemplate("test-logs-dbg")))});
console.log(await r.text());
