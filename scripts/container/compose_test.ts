/**
 * compose.yaml is valid for Debian's docker-compose (Compose v1, 1.29) and
 * describes the whole topology: every engine with a healthcheck, and the
 * services from one image built from scripts/container/Dockerfile.
 * `docker-compose config` validates and resolves the file; its YAML output
 * is read with the Python YAML module docker-compose itself runs on.
 */
import assert from "node:assert/strict";
import { VERSIONS } from "../engines/versions.ts";
import { DEV_CLIENT_SECRET, prometheusConfig, tokenUrl } from "../engines/prometheus_config.ts";
import { listSettings } from "../../shared/config/setting.ts";
import { settings } from "../../services/config.ts";
import { SERVICE_PERMISSIONS, SERVICE_V8_FLAGS } from "../service_command.ts";

const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
const COMPOSE_FILE = `${ROOT}/compose.yaml`;
const DOCKERFILE = "scripts/container/Dockerfile";
const INSTALL_HINT =
  "docker-compose is not installed: install it with `apt-get install docker-compose` " +
  "(Debian's Compose v1) to run this test";

const ENGINES = {
  kafka: { image: `apache/kafka:${VERSIONS.kafka}`, port: 9094 },
  elasticsearch: { image: `elasticsearch:${VERSIONS.elasticsearch}`, port: 9200 },
  redis: { image: "redis:7.0.15", port: 6379 },
  postgres: { image: "postgres:15", port: 5432 },
  zipkin: { image: `openzipkin/zipkin:${VERSIONS.zipkin}`, port: 9411 },
  keycloak: { image: `keycloak/keycloak:${VERSIONS.keycloak}`, port: 9091 },
  // The 2.x image of the release Debian 12 packages (VERSIONS.prometheus).
  prometheus: { image: "prom/prometheus:v2.42.0", port: 9090 },
} as const;

/** Engines the services wait for: all but Prometheus, which watches them instead. */
const SERVICE_ENGINES = Object.keys(ENGINES).filter((engine) => engine !== "prometheus");

const SERVICES = {
  registry: 8761,
  identity: 8090,
  config: 8888,
  gateway: 9092,
  stream: 8181,
  indexer: 8182,
  wordcount: 8187,
  query: 8183,
  analytics: 8188,
  console: 8184,
} as const;

const SETTING_NAMES = new Set(listSettings(settings).map((setting) => setting.env));

const SETTINGS = {
  HTTP_HOST: "0.0.0.0",
  EVENT_LOG: "kafka",
  KAFKA_BROKERS: "kafka:9092",
  SEARCH_INDEX: "elasticsearch",
  ELASTICSEARCH_URL: "http://elasticsearch:9200",
  LOG_SHIPPING: "elasticsearch",
  LOG_FORMAT: "json",
  REDIS_URL: "redis://redis:6379",
  RATE_LIMIT_STORE: "redis",
  OIDC_ISSUER: "http://keycloak:9091/realms/twitterapi",
  REGISTRY_URLS: "http://registry:8761",
};

interface Port {
  hostIp: string | undefined;
  published: number;
  target: number;
}

interface ComposeService {
  image?: string;
  build?: { context?: string; dockerfile?: string };
  command?: string[];
  hostname?: string;
  environment?: Record<string, string>;
  ports?: (string | { host_ip?: string; published: number | string; target: number | string })[];
  healthcheck?: { test?: string[] | string; disable?: boolean };
  depends_on?: Record<string, { condition?: string }>;
  volumes?: (string | { source?: string; target?: string; read_only?: boolean })[];
}

interface ComposeConfig {
  services: Record<string, ComposeService>;
}

async function output(
  command: string,
  args: string[],
  options: { env?: Record<string, string>; stdin?: string; missing: string },
): Promise<{ success: boolean; stdout: string; stderr: string }> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(command, {
      args,
      cwd: ROOT,
      // A clean environment: the development secrets' defaults, not the caller's overrides.
      clearEnv: true,
      env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", LANG: "C.UTF-8", ...options.env },
      stdin: options.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new Error(options.missing);
    throw error;
  }
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const result = await child.output();
  const decoder = new TextDecoder();
  return {
    success: result.success,
    stdout: decoder.decode(result.stdout),
    stderr: decoder.decode(result.stderr),
  };
}

/** Runs docker-compose on compose.yaml, from the repository (where it reads `.env`). */
function dockerCompose(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ success: boolean; stdout: string; stderr: string }> {
  return output("docker-compose", ["--file", COMPOSE_FILE, ...args], {
    env,
    missing: INSTALL_HINT,
  });
}

/**
 * A development secret as compose.yaml resolves it without overrides in the
 * environment: the repository's `.env` (which docker-compose reads too) or the default.
 */
async function secret(name: string, fallback: string): Promise<string> {
  const dotenv = await Deno.readTextFile(`${ROOT}/.env`).catch(() => "");
  const line = dotenv.match(new RegExp(`^\\s*(?:export\\s+)?${name}=(.*)$`, "m"));
  return line?.[1]?.trim().replace(/^(["'])(.*)\1$/, "$2") ?? fallback;
}

let defaultConfig: Promise<ComposeConfig> | undefined;

/** The resolved file; without overrides it is read once for every test. */
function resolvedConfig(env?: Record<string, string>): Promise<ComposeConfig> {
  if (env !== undefined) return readConfig(env);
  defaultConfig ??= readConfig({});
  return defaultConfig;
}

async function readConfig(env: Record<string, string>): Promise<ComposeConfig> {
  const config = await dockerCompose(["config"], env);
  assert.ok(config.success, `docker-compose config failed:\n${config.stderr}`);
  const json = await output(
    "python3",
    ["-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
    { stdin: config.stdout, missing: `python3 is missing; ${INSTALL_HINT}` },
  );
  assert.ok(json.success, `cannot read docker-compose's YAML output:\n${json.stderr}`);
  return JSON.parse(json.stdout) as ComposeConfig;
}

function ports(service: ComposeService): Port[] {
  return (service.ports ?? []).map((port) => {
    if (typeof port !== "string") {
      return {
        hostIp: port.host_ip,
        published: Number(port.published),
        target: Number(port.target),
      };
    }
    // Compose v1 writes "[host_ip:]published:target[/protocol]".
    const parts = port.replace(/\/tcp$/, "").split(":");
    const target = Number(parts.pop());
    const published = Number(parts.pop());
    return { hostIp: parts.pop(), published, target };
  });
}

function service(config: ComposeConfig, name: string): ComposeService {
  const found = config.services[name];
  assert.ok(found !== undefined, `compose.yaml has no service ${name}`);
  return found;
}

Deno.test("compose.yaml is valid for docker-compose", async () => {
  const result = await dockerCompose(["config", "--quiet"]);
  assert.ok(result.success, `docker-compose config --quiet failed:\n${result.stderr}`);
});

Deno.test("compose.yaml runs every engine and every service, and nothing else", async () => {
  const config = await resolvedConfig();
  assert.deepEqual(
    Object.keys(config.services).sort(),
    [...Object.keys(ENGINES), ...Object.keys(SERVICES)].sort(),
  );
});

Deno.test("every engine runs its pinned image, is health-checked and is published on loopback", async () => {
  const config = await resolvedConfig();
  for (const [name, expected] of Object.entries(ENGINES)) {
    const engine = service(config, name);
    assert.equal(engine.image, expected.image, `${name}: image`);
    assert.equal(engine.build, undefined, `${name}: an engine is an image, not a build`);
    assert.ok(engine.healthcheck?.test !== undefined, `${name}: healthcheck`);
    assert.notEqual(engine.healthcheck.disable, true, `${name}: healthcheck disabled`);
    assert.deepEqual(ports(engine), [
      { hostIp: "127.0.0.1", published: expected.port, target: expected.port },
    ], `${name}: ports`);
  }
});

Deno.test("Keycloak imports the repository's realm file", async () => {
  const keycloak = service(await resolvedConfig(), "keycloak");
  assert.ok(keycloak.command?.includes("--import-realm"), "keycloak: --import-realm");
  assert.ok(keycloak.command?.includes("--http-port=9091"), "keycloak: --http-port=9091");
  const mounts = (keycloak.volumes ?? []).map((volume) =>
    typeof volume === "string" ? volume.split(":").slice(0, 2) : [volume.source, volume.target]
  );
  assert.deepEqual(mounts, [[
    `${ROOT}/shared/auth/twitterapi-realm.json`,
    "/opt/keycloak/data/import/twitterapi-realm.json",
  ]]);
  const realm = JSON.parse(
    await Deno.readTextFile(`${ROOT}/shared/auth/twitterapi-realm.json`),
  ) as { realm?: unknown; enabled?: unknown };
  assert.equal(realm.realm, "twitterapi");
  assert.equal(realm.enabled, true);
});

Deno.test("Prometheus reads the registry's targets with the configuration the engine gets", async () => {
  const prometheus = service(await resolvedConfig(), "prometheus");
  const mounts = (prometheus.volumes ?? []).map((volume) =>
    typeof volume === "string" ? volume.split(":").slice(0, 2) : [volume.source, volume.target]
  );
  assert.deepEqual(mounts, [[
    `${ROOT}/scripts/container/prometheus.yml`,
    "/etc/prometheus/prometheus.yml",
  ]]);
  assert.ok(prometheus.command?.includes("--config.file=/etc/prometheus/prometheus.yml"));
  assert.equal(prometheus.depends_on?.registry?.condition, "service_healthy");
  const expected = prometheusConfig({
    registryUrls: [SETTINGS.REGISTRY_URLS],
    oauth2: {
      clientId: "prometheus",
      clientSecret: DEV_CLIENT_SECRET,
      tokenUrl: tokenUrl(SETTINGS.OIDC_ISSUER),
    },
  });
  assert.equal(
    await Deno.readTextFile(`${ROOT}/scripts/container/prometheus.yml`),
    expected,
    "scripts/container/prometheus.yml is out of date: write it again with `deno run " +
      "scripts/engines/prometheus_config.ts http://registry:8761 " +
      "http://keycloak:9091/realms/twitterapi > scripts/container/prometheus.yml`",
  );
});

Deno.test("the services share one build, publish their ports and register by name", async () => {
  const config = await resolvedConfig();
  const builds = new Set<string>();
  const images = new Set<string | undefined>();
  for (const [name, port] of Object.entries(SERVICES)) {
    const entry = service(config, name);
    assert.equal(entry.build?.context?.replace(/\/$/, ""), ROOT, `${name}: build context`);
    assert.equal(entry.build?.dockerfile, DOCKERFILE, `${name}: Dockerfile`);
    builds.add(JSON.stringify(entry.build));
    images.add(entry.image);
    assert.deepEqual(entry.command, [name], `${name}: the command names the service`);
    assert.deepEqual(ports(entry), [{ hostIp: undefined, published: port, target: port }]);
    assert.ok(entry.healthcheck?.test !== undefined, `${name}: healthcheck`);
    assert.equal(entry.hostname, name, `${name}: hostname, the host it registers under`);
  }
  assert.equal(builds.size, 1, "one build for every service");
  assert.equal(images.size, 1, "one image name for every service");
  assert.ok(!images.has(undefined), "the shared image is named");
});

Deno.test("the services get every engine's address and wait for healthy engines", async () => {
  const config = await resolvedConfig();
  for (const name of Object.keys(SERVICES)) {
    const entry = service(config, name);
    for (const [variable, value] of Object.entries(SETTINGS)) {
      assert.equal(entry.environment?.[variable], value, `${name}: ${variable}`);
    }
    for (const variable of Object.keys(entry.environment ?? {})) {
      assert.ok(SETTING_NAMES.has(variable), `${name}: ${variable} is not a setting`);
    }
    assert.deepEqual(
      Object.keys(entry.depends_on ?? {}).sort(),
      SERVICE_ENGINES.sort(),
      `${name}: depends_on`,
    );
    for (const [engine, dependency] of Object.entries(entry.depends_on ?? {})) {
      assert.equal(dependency.condition, "service_healthy", `${name} on ${engine}`);
    }
  }
});

Deno.test("the development secrets default to admin/admin and postgres/postgres", async () => {
  const config = await resolvedConfig();
  const keycloak = service(config, "keycloak").environment;
  assert.equal(
    keycloak?.KC_BOOTSTRAP_ADMIN_USERNAME,
    await secret("KC_BOOTSTRAP_ADMIN_USERNAME", "admin"),
  );
  assert.equal(
    keycloak?.KC_BOOTSTRAP_ADMIN_PASSWORD,
    await secret("KC_BOOTSTRAP_ADMIN_PASSWORD", "admin"),
  );
  assert.equal(
    service(config, "postgres").environment?.POSTGRES_PASSWORD,
    await secret("POSTGRES_PASSWORD", "postgres"),
  );
});

Deno.test("the development secrets can be overridden from the environment", async () => {
  const config = await resolvedConfig({
    POSTGRES_PASSWORD: "from-env",
    KC_BOOTSTRAP_ADMIN_USERNAME: "root-from-env",
    KC_BOOTSTRAP_ADMIN_PASSWORD: "secret-from-env",
  });
  assert.equal(service(config, "postgres").environment?.POSTGRES_PASSWORD, "from-env");
  assert.equal(
    service(config, "query").environment?.QUERY_DATABASE_URL,
    "postgres://postgres:from-env@postgres:5432/postgres",
  );
  assert.equal(
    service(config, "analytics").environment?.ANALYTICS_DATABASE_URL,
    "postgres://postgres:from-env@postgres:5432/postgres",
  );
  const keycloak = service(config, "keycloak").environment;
  assert.equal(keycloak?.KC_BOOTSTRAP_ADMIN_USERNAME, "root-from-env");
  assert.equal(keycloak?.KC_BOOTSTRAP_ADMIN_PASSWORD, "secret-from-env");
});

Deno.test("the service image runs main.ts on Deno 2.9.6 with the services' permissions and V8 flags", async () => {
  const dockerfile = await Deno.readTextFile(`${ROOT}/${DOCKERFILE}`);
  assert.match(dockerfile, /^FROM denoland\/deno:2\.9\.6$/m);
  assert.match(dockerfile, /^RUN deno install\b/m);
  const entrypoint = dockerfile.match(/^ENTRYPOINT (\[.*\])$/m)?.[1];
  assert.ok(entrypoint !== undefined, "Dockerfile: ENTRYPOINT in exec form");
  // The permissions and V8 flags of every other way the services run.
  assert.deepEqual(JSON.parse(entrypoint), [
    "deno",
    "run",
    ...SERVICE_PERMISSIONS,
    ...SERVICE_V8_FLAGS,
    "services/main.ts",
  ]);
});
