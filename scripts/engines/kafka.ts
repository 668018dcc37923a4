/**
 * Apache Kafka as one KRaft node in combined mode (broker and controller in
 * one process), from the Maven artifacts `org.apache.kafka:kafka_2.13` and its
 * runtime dependencies, run on Java 17 on loopback: the event log's real
 * engine. Health is a real Kafka request (Metadata through @platformatic/kafka,
 * the default client; kafkajs prints a TimeoutNegativeWarning on connect,
 * tulios/kafkajs#1751).
 */
import { Admin } from "@platformatic/kafka";
import { CACHE_DIR, type Engine, type EngineProcess, exists, run } from "./engine.ts";
import { VERSIONS } from "./versions.ts";

// 9092 is the gateway's (as in the seed, whose brokers listened on 19092 and up).
const PORT = 19092;
const CONTROLLER_PORT = 19093;
const JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java";
const MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1";
const HERE = new URL("./kafka/", import.meta.url).pathname;
/** Names the broker's runtime dependencies; the version comes from versions.ts. */
const POM = `${HERE}pom.xml`;
const LOG4J_CONFIG = `${HERE}log4j.properties`;

function libsDir(): string {
  return `${CACHE_DIR}/kafka-${VERSIONS.kafka}/libs`;
}

/** Java class path: every jar of the libs folder. */
function classPath(): string {
  return `${libsDir()}/*`;
}

/** A KRaft cluster id: 16 random bytes, base64url without padding, as `Uuid.randomUuid`. */
function clusterId(): string {
  for (;;) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    const id = btoa(String.fromCharCode(...bytes))
      .replaceAll("+", "-")
      .replaceAll("/", "_")
      .replace(/=+$/, "");
    // Kafka never hands out ids starting with '-': they read as command-line options.
    if (!id.startsWith("-")) return id;
  }
}

function serverProperties(logDirs: string): string {
  const settings: Record<string, string | number | boolean> = {
    "process.roles": "broker,controller",
    "node.id": 1,
    "controller.quorum.voters": `1@127.0.0.1:${CONTROLLER_PORT}`,
    "listeners": `PLAINTEXT://127.0.0.1:${PORT},CONTROLLER://127.0.0.1:${CONTROLLER_PORT}`,
    "advertised.listeners": `PLAINTEXT://127.0.0.1:${PORT}`,
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "log.dirs": logDirs,
    // Topics are created by the services (EventLog.ensureTopic), never by a typo.
    "auto.create.topics.enable": false,
    "num.partitions": 1,
    "default.replication.factor": 1,
    "min.insync.replicas": 1,
    // One node: the internal topics cannot have more replicas than that.
    "offsets.topic.replication.factor": 1,
    "transaction.state.log.replication.factor": 1,
    "transaction.state.log.min.isr": 1,
    // A group's first member is assigned at once instead of after three seconds.
    "group.initial.rebalance.delay.ms": 0,
    "log.retention.hours": 168,
  };
  const lines = Object.entries(settings).map(([key, value]) => `${key}=${value}`);
  return `# Written by scripts/engines/kafka.ts on every start; edits are overwritten.\n${
    lines.join("\n")
  }\n`;
}

export const kafka: Engine = {
  name: "kafka",
  port: PORT,
  startTimeoutMs: 90_000,

  async provision(): Promise<void> {
    const target = libsDir();
    if (await exists(target)) return;
    const staging = `${target}.partial`;
    await Deno.remove(staging, { recursive: true }).catch(() => {});
    await run("mvn", [
      "-q",
      "-B",
      "-f",
      POM,
      `${MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies`,
      `-Dkafka.version=${VERSIONS.kafka}`,
      "-DincludeScope=runtime",
      `-DoutputDirectory=${staging}`,
    ], { engine: "kafka", what: `download Kafka ${VERSIONS.kafka} with Maven` });
    await Deno.rename(staging, target);
  },

  async prepare(dataDir: string): Promise<EngineProcess> {
    const logDirs = `${dataDir}/kraft-logs`;
    const properties = `${dataDir}/server.properties`;
    await Deno.mkdir(logDirs, { recursive: true });
    await Deno.writeTextFile(properties, serverProperties(logDirs));
    if (!await exists(`${logDirs}/meta.properties`)) {
      await run(JAVA, [
        "-cp",
        classPath(),
        `-Dlog4j.configuration=file:${LOG4J_CONFIG}`,
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        clusterId(),
        "--config",
        properties,
        "--ignore-formatted",
      ], { engine: "kafka", what: "format the KRaft storage", cwd: dataDir });
    }
    return {
      command: JAVA,
      args: [
        "-Xms512m",
        "-Xmx512m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        `-Dlog4j.configuration=file:${LOG4J_CONFIG}`,
        `-Dkafka.logs.dir=${dataDir}`,
        "-cp",
        classPath(),
        "kafka.Kafka",
        properties,
      ],
      cwd: dataDir,
    };
  },

  async health(): Promise<void> {
    const admin = new Admin({
      clientId: "engines-health",
      bootstrapBrokers: [`127.0.0.1:${PORT}`],
      connectTimeout: 2000,
      timeout: 2000,
      retries: 0,
    });
    try {
      const metadata = await admin.metadata({ topics: [] });
      if (metadata.brokers.size === 0) throw new Error("Metadata answered without brokers");
    } finally {
      await admin.close();
    }
  },
};
