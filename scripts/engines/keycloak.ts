/**
 * Keycloak from its distribution zip on Maven Central, in development mode on
 * loopback: the identity provider. Keycloak 26 needs Java 21 or newer, so it
 * runs on the Temurin JDK rather than the system's Java 17.
 *
 * Keycloak writes into its own folder (its build under `lib/quarkus`, its
 * dev-file database and the import folder under `data`), so every data folder
 * gets its own copy of the cached distribution: hard links for the jars,
 * which Keycloak only reads, and real copies of what it writes. The realm
 * file `shared/auth/twitterapi-realm.json` is imported at start-up. Keycloak
 * keeps a realm that exists already as it is, so when the file changed since
 * the last import (its SHA-256 is kept beside the imported copy) the next
 * start drops the development database (`data/h2`: the realms and the
 * bootstrap admin, nothing else) and imports the file afresh. A Keycloak that
 * is running keeps its realm until it is restarted (`deno task engines down
 * keycloak`, then `up`).
 *
 * The bootstrap admin defaults to admin/admin: development secrets, only for
 * this loopback engine; `KC_BOOTSTRAP_ADMIN_USERNAME` and
 * `KC_BOOTSTRAP_ADMIN_PASSWORD` override them (they count on the first start,
 * when the master realm is created).
 *
 * Health is the realm's OpenID discovery document naming the realm's issuer.
 */
import {
  CACHE_DIR,
  type Engine,
  EngineError,
  type EngineProcess,
  exists,
  mavenArtifact,
  ROOT,
  run,
} from "./engine.ts";
import { VERSIONS } from "./versions.ts";

const PORT = 9091;
const REALM = "twitterapi";
const ISSUER = `http://127.0.0.1:${PORT}/realms/${REALM}`;
const JAVA_HOME = "/usr/lib/jvm/temurin-25-jdk-amd64";
const REALM_FILE = `${ROOT}/shared/auth/${REALM}-realm.json`;
const TARGET = `${CACHE_DIR}/keycloak-${VERSIONS.keycloak}`;
const DIST = `${TARGET}/keycloak-${VERSIONS.keycloak}`;
/** Folders of the distribution Keycloak writes to: copied, never linked to the cache. */
const WRITABLE = ["lib/quarkus", "conf"];

async function copyDistribution(home: string): Promise<void> {
  const staging = `${home}.partial`;
  await Deno.remove(staging, { recursive: true }).catch(() => {});
  const copy = { engine: "keycloak", what: `copy the Keycloak distribution to ${home}` };
  await run("cp", ["-al", DIST, staging], copy);
  for (const folder of WRITABLE) {
    await Deno.remove(`${staging}/${folder}`, { recursive: true });
    await run("cp", ["-a", `${DIST}/${folder}`, `${staging}/${folder}`], copy);
  }
  await Deno.rename(staging, home);
}

export const keycloak: Engine = {
  name: "keycloak",
  port: PORT,
  // The first start builds Keycloak for development mode: about a minute on two
  // cores, more when other engines start at the same time.
  startTimeoutMs: 240_000,

  async provision(): Promise<void> {
    await mavenArtifact("keycloak", `org.keycloak:keycloak-quarkus-dist:${VERSIONS.keycloak}:zip`, {
      unpack: true,
      target: TARGET,
    });
    if (!(await exists(`${DIST}/bin/kc.sh`))) {
      // A broken unpack must not be taken for a cached one next time.
      await Deno.remove(TARGET, { recursive: true });
      throw new EngineError(
        "keycloak",
        `cannot unpack the Keycloak distribution: ${DIST}/bin/kc.sh is missing after Maven's unpack`,
      );
    }
  },

  async prepare(dataDir: string): Promise<EngineProcess> {
    await Deno.mkdir(dataDir, { recursive: true });
    const home = `${dataDir}/keycloak-${VERSIONS.keycloak}`;
    if (!(await exists(home))) await copyDistribution(home);
    await Deno.mkdir(`${home}/data/import`, { recursive: true });
    const realm = await Deno.readFile(REALM_FILE);
    const digest = Array.from(
      new Uint8Array(await crypto.subtle.digest("SHA-256", realm)),
      (byte) => byte.toString(16).padStart(2, "0"),
    ).join("");
    const stamp = `${home}/data/import/${REALM}-realm.sha256`;
    const imported = await Deno.readTextFile(stamp).catch(() => undefined);
    if (imported !== digest) {
      // Keycloak would skip the realm it has; without its database it imports the file again.
      await Deno.remove(`${home}/data/h2`, { recursive: true }).catch(() => {});
    }
    await Deno.writeFile(`${home}/data/import/${REALM}-realm.json`, realm);
    await Deno.writeTextFile(stamp, digest);
    return {
      command: `${home}/bin/kc.sh`,
      args: [
        "start-dev",
        "--http-host=127.0.0.1",
        `--http-port=${PORT}`,
        // Nothing is exposed on the management interface by default; should
        // health or metrics be enabled, it stays on loopback too.
        "--http-management-host=127.0.0.1",
        "--import-realm",
      ],
      env: {
        JAVA_HOME,
        KC_BOOTSTRAP_ADMIN_USERNAME: Deno.env.get("KC_BOOTSTRAP_ADMIN_USERNAME") ?? "admin",
        KC_BOOTSTRAP_ADMIN_PASSWORD: Deno.env.get("KC_BOOTSTRAP_ADMIN_PASSWORD") ?? "admin",
      },
      cwd: home,
    };
  },

  async health(): Promise<void> {
    const url = `${ISSUER}/.well-known/openid-configuration`;
    const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
    const body = await response.text();
    if (!response.ok) throw new Error(`${url} answered ${response.status}`);
    const issuer = (JSON.parse(body) as { issuer?: unknown }).issuer;
    if (issuer !== ISSUER) throw new Error(`${url} names the issuer ${String(issuer)}`);
  },
};
