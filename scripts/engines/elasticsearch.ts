/**
 * Elasticsearch from Maven Central's `integ-test-zip` distribution: a minimal
 * build without a bundled JDK, run on Debian's Java 17 as a single node on
 * loopback with security off. It refuses to run as root, so it runs as
 * `ENGINE_USER`, with its configuration, data and logs in the data folder.
 * Health is a real cluster health request that waits for yellow.
 *
 * The distribution's only modules are apm, transport-netty4, x-pack-core and
 * x-pack-security: no analysis-common (no `pattern` tokenizer), no ingest,
 * no rest-root, so `GET /` (the client's `info()` and `ping()`) answers 405.
 * Check health with `cluster.health()` instead.
 */
import {
  aptInstall,
  CACHE_DIR,
  chown,
  type Engine,
  ENGINE_USER,
  type EngineProcess,
  ensureEngineUser,
  httpHealth,
  mavenArtifact,
  run,
} from "./engine.ts";
import { VERSIONS } from "./versions.ts";

const NAME = "elasticsearch";
const PORT = 9200;
const TRANSPORT_PORT = 9300;
const VERSION = VERSIONS.elasticsearch;
const ARTIFACT = `org.elasticsearch.distribution.integ-test-zip:elasticsearch:${VERSION}:zip`;
/** Where Maven unpacks the archive; the archive holds one `elasticsearch-<version>` folder. */
const CACHE = `${CACHE_DIR}/elasticsearch-${VERSION}`;
const HOME = `${CACHE}/elasticsearch-${VERSION}`;
/** ES 8 runs on Java 17; ES 9 would need Java 21. */
const JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64";
const HEAP = "512m";

export const elasticsearch: Engine = {
  name: NAME,
  port: PORT,
  startTimeoutMs: 120_000,

  async provision(): Promise<void> {
    await aptInstall(NAME, ["openjdk-17-jre-headless"]);
    await mavenArtifact(NAME, ARTIFACT, { unpack: true, target: CACHE });
    // The engine user reads the distribution that root downloaded.
    await run("chmod", ["-R", "a+rX", CACHE], {
      engine: NAME,
      what: `make ${CACHE} readable to every user`,
    });
  },

  async prepare(dataDir: string): Promise<EngineProcess> {
    const configDir = `${dataDir}/config`;
    const dataPath = `${dataDir}/data`;
    const logsDir = `${dataDir}/logs`;
    const tmpDir = `${dataDir}/tmp`;
    for (const dir of [configDir, dataPath, logsDir, tmpDir]) {
      await Deno.mkdir(dir, { recursive: true });
    }
    // The distribution's configuration, refreshed on every start; the
    // keystore that Elasticsearch creates in the folder is kept.
    await copyTree(`${HOME}/config`, configDir);
    await Deno.writeTextFile(
      `${configDir}/elasticsearch.yml`,
      elasticsearchYml({ data: dataPath, logs: logsDir }),
    );
    // The distribution writes GC logs and crash files relative to the working
    // directory, which is the (read-only) distribution: point them at the logs.
    const jvmOptions = await Deno.readTextFile(`${HOME}/config/jvm.options`);
    await Deno.writeTextFile(
      `${configDir}/jvm.options`,
      jvmOptions
        .replace("file=gc.log", `file=${logsDir}/gc.log`)
        .replace("-XX:ErrorFile=hs_err_pid%p.log", `-XX:ErrorFile=${logsDir}/hs_err_pid%p.log`),
    );
    await ensureEngineUser(NAME);
    await chown(NAME, ENGINE_USER, dataDir);
    return {
      command: `${HOME}/bin/elasticsearch`,
      args: [],
      user: ENGINE_USER,
      cwd: dataDir,
      env: {
        ES_JAVA_HOME: JAVA_HOME,
        ES_PATH_CONF: configDir,
        ES_TMPDIR: tmpDir,
        ES_JAVA_OPTS: `-Xms${HEAP} -Xmx${HEAP} -XX:HeapDumpPath=${logsDir}`,
      },
    };
  },

  async health(): Promise<void> {
    await httpHealth(
      `http://127.0.0.1:${PORT}/_cluster/health?wait_for_status=yellow&timeout=1s`,
    );
  },
};

function elasticsearchYml(paths: { data: string; logs: string }): string {
  return `# Written by scripts/engines/elasticsearch.ts on every start.
cluster.name: twitterapi
node.name: twitterapi-1
# Master and data only: no ingest pipelines (this distribution has no ML or GeoIP).
node.roles: [master, data]
discovery.type: single-node
network.host: 127.0.0.1
http.port: ${PORT}
transport.port: ${TRANSPORT_PORT}
path.data: ${paths.data}
path.logs: ${paths.logs}
# A dev machine's disk may be nearly full; never turn indices read-only.
cluster.routing.allocation.disk.threshold_enabled: false
# Tests delete indices by wildcard.
action.destructive_requires_name: false
# Loopback only, plain HTTP, no credentials.
xpack.security.enabled: false
`;
}

/** Copies the files and folders of `from` into `to`, overwriting files. */
async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    if (entry.isDirectory) await copyTree(`${from}/${entry.name}`, `${to}/${entry.name}`);
    else if (entry.isFile) await Deno.copyFile(`${from}/${entry.name}`, `${to}/${entry.name}`);
  }
}
