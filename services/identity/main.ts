/**
 * The identity service: an OpenID Connect issuer for development, in
 * Keycloak's URL layout and with Keycloak's token shape, serving the realm
 * file the real Keycloak imports (seed: Keycloak's `microservices-realm`).
 * Signing keys are kept in IDENTITY_SIGNING_KEYS_FILE between starts (or
 * live in memory only, with it empty), and rotated on a timer.
 */
import builtInRealm from "../../shared/auth/twitterapi-realm.json" with { type: "json" };
import { createServiceApp } from "../../shared/http/service_app.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import type { AppConfig } from "../config.ts";
import { addIdentityRoutes } from "./app.ts";
import { KeyRing } from "./key_ring.ts";
import { namedValues, parseRealm, type Realm } from "./realm.ts";

export interface IdentityDependencies {
  readonly config: AppConfig;
  readonly context: ServiceContext;
  /**
   * The realm export; by default IDENTITY_REALM_FILE, or the built-in
   * `shared/auth/twitterapi-realm.json`.
   */
  readonly realm?: unknown;
  /**
   * The clock, for tokens, codes and key retention.
   * @default Date.now
   */
  readonly now?: () => number;
}

export interface IdentityService extends Service {
  readonly realm: Realm;
  readonly keys: KeyRing;
  /** Activates new signing keys now; the retired ones stay published for the token lifespan. */
  rotateKeys(): Promise<string[]>;
}

/** Reads the realm: the given export, IDENTITY_REALM_FILE, or the built-in file. */
async function realmExport(deps: IdentityDependencies): Promise<unknown> {
  if (deps.realm !== undefined) return deps.realm;
  const file = deps.config.identity.realmFile;
  if (file === "") return builtInRealm;
  return JSON.parse(await Deno.readTextFile(file));
}

export async function createIdentityService(deps: IdentityDependencies): Promise<IdentityService> {
  const { config, context } = deps;
  const settings = config.identity;
  const realm = parseRealm(await realmExport(deps), {
    passwords: namedValues(settings.devPasswords, "IDENTITY_DEV_PASSWORDS"),
    clientSecrets: namedValues(settings.clientSecrets, "IDENTITY_CLIENT_SECRETS"),
  });
  const now = deps.now ?? Date.now;
  const keysFile = settings.signingKeysFile;
  const keys = await KeyRing.create({
    retentionMs: realm.accessTokenLifespanSeconds * 1000,
    now,
    ...(keysFile === "" ? {} : {
      file: {
        path: keysFile,
        onWriteError: (error) =>
          context.logger.warn(
            "Cannot keep the signing keys in {file} (IDENTITY_SIGNING_KEYS_FILE); they live in " +
              "this process only: {error}",
            { file: keysFile, error: error.message },
          ),
      },
    }),
  });
  const app = createServiceApp({
    context,
    bodyLimitBytes: config.process.bodyLimitBytes,
    // Every verifier fetches these (and again on every unknown key): machine traffic.
    quietRoutes: [
      `/realms/${realm.name}/.well-known/openid-configuration`,
      `/realms/${realm.name}/protocol/openid-connect/certs`,
    ],
  });
  addIdentityRoutes(app, {
    realm,
    keys,
    logger: context.logger,
    metrics: context.metrics,
    publicUrl: settings.publicUrl === "" ? undefined : settings.publicUrl,
    autoApproveLoginHint: settings.autoApproveLoginHint,
    now,
  });
  context.logger.info(
    "Realm {realm}: {users} users, {clients} clients; signing keys {kids} ({kept})",
    {
      realm: realm.name,
      users: realm.users.size,
      clients: realm.clients.size,
      kids: keys.jwks().keys.map((key) => `${key.alg}:${key.kid}`).join(", "),
      kept: keysFile === ""
        ? "in memory, IDENTITY_SIGNING_KEYS_FILE is empty"
        : `kept in ${keysFile}`,
    },
  );

  async function rotateKeys(): Promise<string[]> {
    const kids = await keys.rotate();
    context.logger.info("Rotated the signing keys; now signing with {kids}", {
      kids: kids.join(", "),
    });
    return kids;
  }

  let timer: ReturnType<typeof setInterval> | undefined;
  /** The rotation in progress, if any: never two at once, and stop() waits for it. */
  let rotating: Promise<void> | undefined;
  function rotateOnTimer(): void {
    rotating ??= rotateKeys()
      .then(() => {}, (error) => context.logger.error("Cannot rotate the signing keys", { error }))
      .finally(() => rotating = undefined);
  }

  return {
    name: context.name,
    app,
    realm,
    keys,
    rotateKeys,
    start() {
      if (settings.keyRotationMs > 0 && timer === undefined) {
        timer = setInterval(rotateOnTimer, settings.keyRotationMs);
      }
      return Promise.resolve();
    },
    async stop() {
      clearInterval(timer);
      timer = undefined;
      await rotating;
    },
  };
}
