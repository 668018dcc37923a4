import assert from "node:assert/strict";
import { prometheusConfig, TARGETS_PATH, tokenUrl } from "./prometheus_config.ts";

const PROMTOOL = "/usr/bin/promtool";

/** `promtool check config` on the text: Prometheus's own validation of the file. */
async function promtoolCheck(config: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "prometheus-config-" });
  try {
    await Deno.writeTextFile(`${dir}/prometheus.yml`, config);
    const output = await new Deno.Command(PROMTOOL, {
      args: ["check", "config", `${dir}/prometheus.yml`],
      stdout: "piped",
      stderr: "piped",
    }).output().catch((error) => {
      if (error instanceof Deno.errors.NotFound) {
        assert.fail(`${PROMTOOL} is missing: run \`deno task engines up prometheus\``);
      }
      throw error;
    });
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    assert.ok(output.success, `promtool refused the configuration:\n${text}\n${config}`);
    return text;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("prometheusConfig() reads every registry's targets with an OAuth 2 token, and promtool accepts it", async () => {
  const config = prometheusConfig({
    registryUrls: ["http://127.0.0.1:8761", "http://10.0.0.2:8761/"],
    oauth2: {
      clientId: "prometheus",
      clientSecret: 'a "quoted" secret',
      tokenUrl: tokenUrl("http://127.0.0.1:8090/realms/twitterapi"),
    },
    scrapeIntervalSeconds: 1,
    refreshIntervalSeconds: 2,
  });
  assert.match(config, new RegExp(`url: "http://127.0.0.1:8761${TARGETS_PATH}"`));
  assert.match(config, new RegExp(`url: "http://10.0.0.2:8761${TARGETS_PATH}"`));
  assert.match(config, /scrape_interval: "1s"/);
  assert.match(config, /refresh_interval: "2s"/);
  assert.match(
    config,
    /token_url: "http:\/\/127.0.0.1:8090\/realms\/twitterapi\/protocol\/openid-connect\/token"/,
  );
  assert.match(await promtoolCheck(config), /SUCCESS/);
});

Deno.test("prometheusConfig() without credentials reads the registry anonymously", async () => {
  const config = prometheusConfig({ registryUrls: ["http://127.0.0.1:8761"] });
  assert.doesNotMatch(config, /oauth2/);
  assert.match(config, /scrape_interval: "5s"/);
  assert.match(await promtoolCheck(config), /SUCCESS/);
});

Deno.test("prometheusConfig() refuses no registry and bad intervals", () => {
  assert.throws(() => prometheusConfig({ registryUrls: [] }), /without a registry URL/);
  assert.throws(
    () => prometheusConfig({ registryUrls: ["http://r"], scrapeIntervalSeconds: 0 }),
    /'scrapeIntervalSeconds' must be a positive integer/,
  );
});
