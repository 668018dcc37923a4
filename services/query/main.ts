/** The query service: the tweet read API over the search index (seed: elastic-query-service). */
import { retryUntilDone, sleep } from "../../shared/async/retry.ts";
import { bearerAuth } from "../../shared/auth/bearer_auth.ts";
import {
  ClientCredentialsTokenSource,
  type TokenSource,
} from "../../shared/auth/client_credentials.ts";
import type { AccessToken, JwtVerifier } from "../../shared/auth/jwt_verifier.ts";
import type { SqlDatabase } from "../../shared/database/database.ts";
import { migrate } from "../../shared/database/migrations.ts";
import type { ServiceDiscovery } from "../../shared/discovery/service_discovery.ts";
import { BalancedClient } from "../../shared/http/balanced_client.ts";
import { ProblemError } from "../../shared/http/problem.ts";
import { createServiceApp, HOT_PATH_LOG_SAMPLING } from "../../shared/http/service_app.ts";
import type { SearchIndex, Visibility } from "../../shared/search_index/search_index.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import type { AppConfig } from "../config.ts";
import type { RefreshableConfig } from "../../shared/config/refreshable_config.ts";
import { ConfigError } from "../../shared/config/setting.ts";
import { addQueryRoutes } from "./app.ts";
import { seedDevGrants } from "./dev_grants.ts";
import { addPermissionRoutes } from "./permission_routes.ts";
import { PERMISSION_MIGRATIONS, PermissionStore, VisibilityCache } from "./permissions.ts";
import { RemoteWordCounts } from "./word_counts.ts";

/** Holders of this realm role see every tweet, whatever their grants. */
export const SUPER_USER_ROLE = "app_super_user_role";
/** Holders of one of these realm roles grant and revoke permissions. */
export const PERMISSION_ADMIN_ROLES = ["app_admin_role", "app_super_user_role"];

export interface QueryDependencies {
  readonly config: AppConfig;
  readonly context: ServiceContext;
  readonly index: SearchIndex;
  /** Verifies access tokens for the audience `query`. */
  readonly verifier: JwtVerifier;
  /** The service's own database, holding its permissions. */
  readonly database: SqlDatabase;
  /** Where the word-count source (analytics or wordcount) is found. */
  readonly discovery: ServiceDiscovery;
  /** The schema of the permissions. @default "query" */
  readonly schema?: string;
  /**
   * The service's own token for the word-count source.
   * @default client credentials of `config.query.clientId` at `config.auth.oidcIssuer`
   */
  readonly tokens?: TokenSource;
  /** The live configuration: page sizes and the grant cache's TTL follow it. */
  readonly configuration?: RefreshableConfig<AppConfig>;
}

/** 400-free paging: the default page size must fit the largest; throws `ConfigError`. */
function checkPaging(config: AppConfig): void {
  const { defaultPageSize, maxPageSize } = config.query;
  if (defaultPageSize > maxPageSize) {
    throw new ConfigError([{
      env: "QUERY_DEFAULT_PAGE_SIZE",
      message: `must not exceed QUERY_MAX_PAGE_SIZE (${maxPageSize}), got ${defaultPageSize}`,
    }]);
  }
}

/**
 * How long a request that needs the permission database waits for it while
 * the service starts (the embedded PGlite takes seconds), before a 503:
 * within the gateway's 5 s per attempt, so a user quick after the start gets
 * an answer rather than a refusal.
 */
const STARTING_WAIT_MS = 3000;

function starting(): ProblemError {
  return new ProblemError({
    status: 503,
    code: "unavailable",
    title: "Service starting",
    detail: "The permission database is not ready yet; try again",
    headers: { "retry-after": "1" },
  });
}

export function createQueryService(deps: QueryDependencies): Service {
  const { config, context, index, verifier, database, discovery } = deps;
  const settings = config.query;
  const schema = deps.schema ?? "query";
  const store = new PermissionStore(database, schema);
  const cache = new VisibilityCache({
    load: (userId) => store.visibilityOf(userId),
    maxUsers: settings.grantCacheMaxUsers,
    ttlMs: settings.grantCacheTtlMs,
  });
  checkPaging(config);
  let paging = { defaultPageSize: settings.defaultPageSize, maxPageSize: settings.maxPageSize };
  deps.configuration?.subscribe({
    validate: checkPaging,
    apply(next) {
      paging = { defaultPageSize: next.query.defaultPageSize, maxPageSize: next.query.maxPageSize };
      cache.setTtlMs(next.query.grantCacheTtlMs);
    },
  });
  let migrated = false;
  const migration = Promise.withResolvers<void>();
  /** Resolves once the permission schema is migrated; 503 if it is not within the wait. */
  async function whenMigrated(): Promise<void> {
    if (migrated) return;
    const waiting = new AbortController();
    try {
      await Promise.race([migration.promise, sleep(STARTING_WAIT_MS, waiting.signal)]);
    } finally {
      waiting.abort();
    }
    if (!migrated) throw starting();
  }
  let stopWatching: (() => Promise<void>) | undefined;

  const tokens = deps.tokens ?? new ClientCredentialsTokenSource({
    issuer: config.auth.oidcIssuer,
    clientId: settings.clientId,
    clientSecret: settings.clientSecret,
    timeoutMs: settings.wordCountsTimeoutMs,
  });
  const wordCounts = new RemoteWordCounts({
    source: settings.wordCountsFrom,
    discovery,
    client: new BalancedClient({
      discovery,
      timeoutMs: settings.wordCountsTimeoutMs,
      retries: 1,
      logger: context.logger,
      tracer: context.tracer,
      metrics: context.metrics,
    }),
    tokens,
    timeoutMs: settings.wordCountsTimeoutMs,
    breaker: {
      errorThresholdPercentage: 50,
      volumeThreshold: 5,
      resetTimeoutMs: 10_000,
      rollingCountTimeoutMs: 10_000,
    },
    logger: context.logger,
  });

  const app = createServiceApp({
    context,
    description: "The tweet read API (CQRS query side): search and lookup by id in the v1 and " +
      "v2 representations, chosen by path or by media type on /api/tweets; a streaming " +
      "search; the permission API deciding who sees which tweets.",
    bodyLimitBytes: config.process.bodyLimitBytes,
    // Searches are the read path's traffic; through the gateway they follow its choice.
    successLogSampling: HOT_PATH_LOG_SAMPLING,
    readiness: [
      { name: "search-index", check: () => index.ping() },
      {
        name: "permissions",
        check: async () => {
          if (!migrated) throw new Error("the permission schema is not migrated yet");
          await database.ping();
        },
      },
    ],
  });
  // Any valid token for this audience: calls that bypass the gateway gain nothing.
  app.use("/api/*", bearerAuth({ verifier }));
  // `/*` also matches the collection itself, and keeps the middleware out of the described routes.
  app.use("/api/v1/permissions/*", bearerAuth({ verifier, anyRole: PERMISSION_ADMIN_ROLES }));
  app.use("/api/v1/permissions/*", async (_c, next) => {
    await whenMigrated();
    await next();
  });
  addPermissionRoutes(app, {
    store,
    changed: (userId) => cache.invalidate(userId),
  });
  addQueryRoutes(app, {
    index,
    visibility: (token: AccessToken): Promise<Visibility | undefined> => {
      if (token.roles.includes(SUPER_USER_ROLE)) return Promise.resolve(undefined);
      return whenMigrated().then(() => cache.visibilityOf(token.subject));
    },
    wordCounts,
    get defaultPageSize() {
      return paging.defaultPageSize;
    },
    get maxPageSize() {
      return paging.maxPageSize;
    },
    v1DeprecatedAt: settings.v1DeprecatedAt,
  });
  const stopping = new AbortController();
  return {
    name: context.name,
    app,
    async start() {
      await Promise.all([
        retryUntilDone(() => index.open(), {
          action: "open the search index",
          logger: context.logger,
          signal: stopping.signal,
        }),
        retryUntilDone(async () => {
          await migrate(database, { schema, migrations: PERMISSION_MIGRATIONS });
          // Other instances' changes; before seeding, so none is missed.
          stopWatching ??= await store.watch(
            (userId) => cache.invalidate(userId),
            () => cache.clear(),
          );
          if (settings.seedDevGrants) {
            for (const userId of await seedDevGrants(store)) cache.invalidate(userId);
          }
          migrated = true;
          migration.resolve();
        }, {
          action: "migrate the permission database",
          logger: context.logger,
          signal: stopping.signal,
        }),
      ]);
    },
    async stop() {
      stopping.abort();
      wordCounts.shutdown();
      await stopWatching?.();
    },
  };
}
