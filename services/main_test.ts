/**
 * The entry point as users run it: a child process of `services/main.ts`,
 * talked to over HTTP on loopback and stopped with a signal.
 */
import assert from "node:assert/strict";
import { mockUserId } from "../shared/events/mock_users.ts";
import { importKeycloakTestRealm } from "../shared/testing/keycloak.ts";
import { waitFor } from "../shared/testing/wait.ts";
import { tokenize } from "../shared/text/tokenize.ts";
import realmFile from "../shared/auth/twitterapi-realm.json" with { type: "json" };
import { clientCredentialsToken, passwordGrantToken } from "./identity/_testing.ts";
import { selectServices } from "./main.ts";

const MAIN = new URL("./main.ts", import.meta.url).pathname;
const PERMISSIONS = [
  "--allow-net",
  "--allow-env",
  "--allow-read",
  "--allow-sys=hostname,osRelease,homedir",
];

function spawnMain(args: string[], env: Record<string, string>) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MAIN, ...args],
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** The child's JSON log lines, read on demand and all kept. */
class LogLines {
  readonly lines: Record<string, unknown>[] = [];
  #buffer = "";
  #next = 0;
  constructor(readonly reader: ReadableStreamDefaultReader<string>) {}

  /** Reads until a line satisfies `done`; fails if the output ends first. */
  async until(done: (line: Record<string, unknown>) => boolean): Promise<void> {
    while (true) {
      while (this.#next < this.lines.length) {
        if (done(this.lines[this.#next++]!)) return;
      }
      const { value, done: ended } = await this.reader.read();
      if (ended) {
        throw new Error(`The output ended before the expected line: ${JSON.stringify(this.lines)}`);
      }
      const parts = (this.#buffer + value).split("\n");
      this.#buffer = parts.pop()!;
      this.lines.push(...parts.map((part) => JSON.parse(part)));
    }
  }
}

Deno.test("selectServices() accepts service names or all, in start order", () => {
  assert.deepEqual(selectServices(["all"]), [
    "registry",
    "identity",
    "config",
    "stream",
    "indexer",
    "wordcount",
    "analytics",
    "query",
    "console",
    "gateway",
  ]);
  assert.deepEqual(selectServices(["query", "stream"]), ["stream", "query"]);
  assert.equal(selectServices([]), undefined);
  assert.equal(selectServices(["all", "query"]), undefined);
  assert.equal(selectServices(["gateway-of-doom"]), undefined);
});

/** A port that was free a moment ago, for a service others must find before it runs. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

Deno.test("main runs all services, serves searchable tweets and shuts down on SIGTERM", async () => {
  const registryPort = freePort();
  const identityPort = freePort();
  const child = spawnMain(["all"], {
    REGISTRY_PORT: String(registryPort),
    REGISTRY_URLS: `http://127.0.0.1:${registryPort}`,
    IDENTITY_PORT: String(identityPort),
    OIDC_ISSUER: `http://127.0.0.1:${identityPort}/realms/twitterapi`,
    CONFIG_PORT: "0",
    GATEWAY_PORT: "0",
    GATEWAY_MANAGEMENT_PORT: "0",
    STREAM_PORT: "0",
    INDEXER_PORT: "0",
    WORDCOUNT_PORT: "0",
    QUERY_PORT: "0",
    ANALYTICS_PORT: "0",
    CONSOLE_PORT: "0",
    STREAM_COUNT: "200",
    STREAM_RATE_PER_SECOND: "400",
  });
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const log = new LogLines(stdout);
  const stderrText = new Response(child.stderr).text();
  const urls: Record<string, string> = {};
  // A hung child fails the test instead of hanging it.
  const watchdog = setTimeout(() => child.kill("SIGKILL"), 60_000);
  try {
    const managementUrls: Record<string, string> = {};
    await log.until((line) => {
      const match = /^(\w+) listening on (http:\/\/\S+)$/.exec(String(line.message));
      if (match) urls[match[1]!] = match[2]!;
      const management = /^(\w+) management listening on (http:\/\/\S+)$/.exec(
        String(line.message),
      );
      if (management) managementUrls[management[1]!] = management[2]!;
      return Object.keys(urls).length === 10;
    });

    // Ready once started: wordcount joins its group and restores its partitions,
    // analytics migrates its embedded database. The gateway answers /ready on its
    // management port only; its public port says 404.
    for (const path of ["/ready", "/metrics"]) {
      const response = await fetch(`${urls.gateway}${path}`);
      await response.body?.cancel();
      assert.equal(response.status, 404, `the gateway's public ${path}`);
    }
    assert.ok(managementUrls.gateway, "the gateway logs its management URL");
    assert.match(
      await (await fetch(`${managementUrls.gateway}/metrics`)).text(),
      /gateway_breaker_state/,
    );
    for (const url of Object.values({ ...urls, ...managementUrls })) {
      await waitFor(`${url}/ready`, async () => {
        const ready = await fetch(`${url}/ready`);
        await ready.body?.cancel();
        return ready.status === 200;
      });
    }
    // Tokens from the identity service; the services verify them as the gateway does.
    const tokenEndpoint = `${urls.identity}/realms/twitterapi/protocol/openid-connect/token`;
    const user = { authorization: `Bearer ${await passwordGrantToken(tokenEndpoint, "app_user")}` };
    // The super user sees every tweet; app_user only those its development grants allow.
    const superUser = {
      authorization: `Bearer ${await passwordGrantToken(tokenEndpoint, "app_super_user")}`,
    };
    const admin = {
      authorization: `Bearer ${await passwordGrantToken(tokenEndpoint, "app_admin")}`,
    };
    await waitFor("200 searchable tweets", async () => {
      const response = await fetch(`${urls.query}/api/v2/tweets?size=1`, { headers: superUser });
      return (await response.json()).page.total === 200;
    });
    const kafka = await fetch(`${urls.query}/api/v1/tweets?text=kafka&size=100`, {
      headers: superUser,
    });
    assert.equal(kafka.status, 200);
    const tweets: { text: string }[] = await kafka.json();
    assert.ok(tweets.length > 0 && tweets.length < 100);
    assert.ok(tweets.every((tweet) => /\bkafka\b/i.test(tweet.text)));
    const kafkaCount = tweets.flatMap((tweet) => tokenize(tweet.text))
      .filter((word) => word === "kafka").length;
    const granted = new Set(Array.from({ length: 5 }, (_, i) => mockUserId(i).toString()));
    const visible = await (await fetch(`${urls.query}/api/v2/tweets?size=100`, { headers: user }))
      .json();
    assert.ok(visible.page.total < 200);
    assert.ok(
      visible.data.every((tweet: { author: { id: string } }) => granted.has(tweet.author.id)),
    );

    // Prometheus's client reads the registry; nobody reads it without a token.
    const reader = {
      authorization: `Bearer ${await clientCredentialsToken(tokenEndpoint, "prometheus")}`,
    };
    const anonymousRead = await fetch(`${urls.registry}/api/v1/registry/services`);
    assert.equal(anonymousRead.status, 401);
    await anonymousRead.body?.cancel();
    await waitFor("every service registered", async () => {
      const response = await fetch(`${urls.registry}/api/v1/registry/services`, {
        headers: reader,
      });
      const { services } = await response.json();
      const names = services.map((entry: { service: string }) => entry.service).sort();
      return JSON.stringify(names) ===
        JSON.stringify([
          "analytics",
          "config",
          "console",
          "gateway",
          "identity",
          "indexer",
          "query",
          "stream",
          "wordcount",
        ]);
    });
    const registered =
      await (await fetch(`${urls.registry}/api/v1/registry/services/query/instances`, {
        headers: reader,
      }))
        .json();
    assert.equal(registered.instances[0].baseUrl, urls.query);
    // wordcount publishes the partitions it answers for, and answers counts of the 200 tweets.
    await waitFor("wordcount's partitions in the registry", async () => {
      const response = await fetch(
        `${urls.registry}/api/v1/registry/services/wordcount/instances`,
        { headers: reader },
      );
      const { instances } = await response.json();
      return instances[0]?.metadata["wordcount-partitions"] === "0,1,2";
    });
    await waitFor("kafka counted", async () => {
      const response = await fetch(`${urls.wordcount}/api/v1/words/kafka`, { headers: user });
      return response.status === 200 && (await response.json()).count === kafkaCount;
    });
    // The count flows on to analytics, and from there into the search's word counts.
    await waitFor("kafka's count in search responses", async () => {
      const response = await fetch(`${urls.query}/api/v1/tweets?text=kafka&size=1`, {
        headers: superUser,
      });
      await response.body?.cancel();
      return response.headers.get("word-counts") === `kafka=${kafkaCount}`;
    });
    for (const path of ["/api/v1/words/kafka", "/api/v1/analytics/words/kafka"]) {
      const response = await fetch(`${urls.gateway}${path}`, { headers: user });
      assert.equal(response.status, 200, path);
      assert.equal((await response.json()).count, kafkaCount, path);
    }

    // Through the gateway: the query service found through the registry.
    const viaGateway = await fetch(`${urls.gateway}/api/v2/tweets?text=kafka&size=3`, {
      headers: superUser,
    });
    assert.equal(viaGateway.status, 200);
    assert.ok((await viaGateway.json()).page.total > 0);
    const anonymous = await fetch(`${urls.gateway}/api/v2/tweets?text=kafka`);
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
    // The registry is not reachable through the gateway, whatever the token.
    for (const path of ["/api/v1/registry/services", "/api/v1/registry/services/query/instances"]) {
      const response = await fetch(`${urls.gateway}${path}`, { headers: reader });
      assert.equal(response.status, 404, path);
      await response.body?.cancel();
    }

    const status = await (await fetch(`${urls.stream}/api/v1/stream`, { headers: admin })).json();
    assert.equal(status.state, "completed");
    assert.equal(status.produced, 200);
    const metrics = await (await fetch(`${urls.indexer}/metrics`)).text();
    assert.match(metrics, /indexer_events_total\{outcome="indexed"\} 200/);
  } finally {
    child.kill("SIGTERM");
  }
  await log.until((line) => line.message === "Shut down cleanly");
  await stdout.cancel();
  const { code } = await child.status;
  clearTimeout(watchdog);
  assert.equal(code, 0);
  assert.match(await stderrText, /query\s+http:\/\/127\.0\.0\.1:\d+/);

  const lines = log.lines;
  for (const line of lines) {
    assert.ok(typeof line.service === "string" && typeof line.instance === "string");
  }
  assert.deepEqual(
    lines.filter((line) => /refuses the credentials/.test(String(line.message))),
    [],
    "no registration was refused",
  );
  // Query and the gateway log one search of a hundred (the first), and every failed one.
  const requestLines = lines.filter((line) => /^\/api\/v[12]\/tweets$/.test(String(line.path)));
  assert.ok(requestLines.length > 0);
  for (const line of requestLines) assert.match(String(line.traceId), /^[0-9a-f]{32}$/);
  const stops = lines.map((line) => line.message).filter((message) =>
    /^Stopped (producing|indexing)/.test(String(message))
  );
  assert.deepEqual(stops, [
    "Stopped producing after 200 tweets",
    "Stopped indexing; offsets committed",
  ]);
});

Deno.test("main refuses an invalid setting and names the variable", async () => {
  const child = spawnMain(["all"], { QUERY_PORT: "99999", LOG_LEVEL: "loud" });
  const { code, stdout, stderr } = await child.output();
  assert.equal(code, 1);
  assert.equal(new TextDecoder().decode(stdout), "");
  const message = new TextDecoder().decode(stderr);
  assert.match(message, /QUERY_PORT: must be between 0 and 65535, got 99999/);
  assert.match(message, /LOG_LEVEL: must be one of trace, debug, info, warning, error, fatal/);
});

Deno.test("main refuses unknown services with its usage", async () => {
  const { code, stderr } = await spawnMain(["nonsense"], {}).output();
  assert.equal(code, 2);
  assert.match(new TextDecoder().decode(stderr), /^Usage: main\.ts <service\.\.\.>\|all/);
});

Deno.test("main reports an unreachable Kafka on /ready and retries it, never falling back", async () => {
  const child = spawnMain(["stream"], {
    STREAM_PORT: "0",
    EVENT_LOG: "kafka",
    KAFKA_BROKERS: "127.0.0.1:1",
  });
  const log = new LogLines(child.stdout.pipeThrough(new TextDecoderStream()).getReader());
  const stderr = new Response(child.stderr).text();
  const watchdog = setTimeout(() => child.kill("SIGKILL"), 60_000);
  let url = "";
  try {
    await log.until((line) => {
      url = /^stream listening on (\S+)$/.exec(String(line.message))?.[1] ?? "";
      return url !== "";
    });
    assert.equal((await fetch(`${url}/health`)).status, 200);
    const ready = await fetch(`${url}/ready`);
    assert.equal(ready.status, 503);
    const body = await ready.json();
    assert.equal(body.checks["event-log"].status, "down");
    await log.until((line) =>
      line.level === "WARN" &&
      /^Cannot create topic twitter-topic, retrying in \d+ ms/.test(String(line.message))
    );
    assert.ok(!log.lines.some((line) => /in-process/.test(String(line.message))));
  } finally {
    child.kill("SIGTERM");
  }
  await log.until((line) => line.message === "Shut down cleanly");
  await log.reader.cancel();
  const { code } = await child.status;
  clearTimeout(watchdog);
  await stderr;
  assert.equal(code, 0);
});

Deno.test("services renew short-lived tokens from the identity service and stay registered", async () => {
  const registryPort = freePort();
  const identityPort = freePort();
  // Tokens of two seconds: each service's token source fetches a new one every second.
  const realm = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.writeTextFile(realm, JSON.stringify({ ...realmFile, accessTokenLifespan: 2 }));
  const child = spawnMain(["registry", "identity", "gateway", "stream"], {
    REGISTRY_PORT: String(registryPort),
    REGISTRY_URLS: `http://127.0.0.1:${registryPort}`,
    REGISTRY_TTL_MS: "1500",
    IDENTITY_PORT: String(identityPort),
    IDENTITY_REALM_FILE: realm,
    OIDC_ISSUER: `http://127.0.0.1:${identityPort}/realms/twitterapi`,
    GATEWAY_PORT: "0",
    GATEWAY_MANAGEMENT_PORT: "0",
    STREAM_PORT: "0",
    STREAM_AUTO_START: "false",
  });
  const log = new LogLines(child.stdout.pipeThrough(new TextDecoderStream()).getReader());
  const stderr = new Response(child.stderr).text();
  const watchdog = setTimeout(() => child.kill("SIGKILL"), 60_000);
  const registry = `http://127.0.0.1:${registryPort}`;
  try {
    await log.until((line) => /^stream listening on /.test(String(line.message)));
    const tokenEndpoint =
      `http://127.0.0.1:${identityPort}/realms/twitterapi/protocol/openid-connect/token`;
    const names = async () => {
      const reader = {
        authorization: `Bearer ${await clientCredentialsToken(tokenEndpoint, "prometheus")}`,
      };
      const response = await fetch(`${registry}/api/v1/registry/services`, { headers: reader });
      const { services } = await response.json();
      return services.map((entry: { service: string }) => entry.service).sort().join(",");
    };
    await waitFor(
      "every service registered",
      async () => await names() === "gateway,identity,stream",
    );
    // Six token lifetimes, the instances listed throughout.
    const until = Date.now() + 12_000;
    await waitFor("six token lifetimes", async () => {
      assert.equal(await names(), "gateway,identity,stream");
      return Date.now() > until;
    }, 20_000);
    const identityMetrics = await (await fetch(`http://127.0.0.1:${identityPort}/metrics`)).text();
    const tokenRequests = [...identityMetrics.matchAll(
      /http_requests_total\{method="POST",route="[^"]*token[^"]*",status="200"\} (\d+)/g,
    )].reduce((sum, match) => sum + Number(match[1]), 0);
    // Three services, a new token each second for twelve seconds, and the test's own.
    assert.ok(tokenRequests >= 30, `${tokenRequests} tokens issued`);
    const registryMetrics = await (await fetch(`${registry}/metrics`)).text();
    assert.doesNotMatch(registryMetrics, /registry_evictions_total [1-9]/);
  } finally {
    child.kill("SIGTERM");
  }
  await log.until((line) => line.message === "Shut down cleanly");
  await log.reader.cancel();
  const { code } = await child.status;
  clearTimeout(watchdog);
  await stderr;
  await Deno.remove(realm);
  assert.equal(code, 0);
  assert.deepEqual(
    log.lines.filter((line) => /^(Evicted|Registry .* refuses)/.test(String(line.message))),
    [],
  );
});

Deno.test("main registers and discovers every service with Keycloak's tokens", async () => {
  // The realm file as it is now, imported into a Keycloak realm of its own.
  await using realm = await importKeycloakTestRealm();
  const registryPort = freePort();
  const child = spawnMain(["registry", "gateway", "stream", "indexer"], {
    REGISTRY_PORT: String(registryPort),
    REGISTRY_URLS: `http://127.0.0.1:${registryPort}`,
    OIDC_ISSUER: realm.issuer,
    GATEWAY_PORT: "0",
    GATEWAY_MANAGEMENT_PORT: "0",
    STREAM_PORT: "0",
    INDEXER_PORT: "0",
    STREAM_AUTO_START: "false",
  });
  const log = new LogLines(child.stdout.pipeThrough(new TextDecoderStream()).getReader());
  const stderr = new Response(child.stderr).text();
  const watchdog = setTimeout(() => child.kill("SIGKILL"), 90_000);
  const urls: Record<string, string> = {};
  try {
    await log.until((line) => {
      const match = /^(\w+) listening on (http:\/\/\S+)$/.exec(String(line.message));
      if (match) urls[match[1]!] = match[2]!;
      return Object.keys(urls).length === 4;
    });
    const tokenEndpoint = `${realm.issuer}/protocol/openid-connect/token`;
    const reader = {
      authorization: `Bearer ${await clientCredentialsToken(tokenEndpoint, "prometheus")}`,
    };
    await waitFor("every service registered", async () => {
      const response = await fetch(`${urls.registry}/api/v1/registry/services`, {
        headers: reader,
      });
      const { services } = await response.json();
      return services.map((entry: { service: string }) => entry.service).sort().join(",") ===
        "gateway,indexer,stream";
    }, 30_000);
    // Through the gateway, found through the registry, with a Keycloak user's token.
    const admin = {
      authorization: `Bearer ${await passwordGrantToken(tokenEndpoint, "app_admin")}`,
    };
    await waitFor("the stream through the gateway", async () => {
      const response = await fetch(`${urls.gateway}/api/v1/stream`, { headers: admin });
      await response.body?.cancel();
      return response.status === 200;
    }, 30_000);
  } finally {
    child.kill("SIGTERM");
  }
  await log.until((line) => line.message === "Shut down cleanly");
  await log.reader.cancel();
  const { code } = await child.status;
  clearTimeout(watchdog);
  await stderr;
  assert.equal(code, 0);
  assert.deepEqual(
    log.lines.filter((line) =>
      /refuses the credentials|Cannot get the token/.test(String(line.message))
    ),
    [],
  );
});
