/** The query service: the tweet read API over the search index (seed: elastic-query-service). */
import { retryUntilDone } from "../../shared/async/retry.ts";
import { bearerAuth } from "../../shared/auth/bearer_auth.ts";
import type { JwtVerifier } from "../../shared/auth/jwt_verifier.ts";
import { createServiceApp } from "../../shared/http/service_app.ts";
import type { SearchIndex } from "../../shared/search_index/search_index.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import type { AppConfig } from "../config.ts";
import { addQueryRoutes } from "./app.ts";

export interface QueryDependencies {
  readonly config: AppConfig;
  readonly context: ServiceContext;
  readonly index: SearchIndex;
  /** Verifies access tokens for the audience `query`. */
  readonly verifier: JwtVerifier;
}

export function createQueryService(deps: QueryDependencies): Service {
  const { config, context, index, verifier } = deps;
  const app = createServiceApp({
    context,
    bodyLimitBytes: config.process.bodyLimitBytes,
    readiness: [{ name: "search-index", check: () => index.ping() }],
  });
  // Any valid token for this audience: calls that bypass the gateway gain nothing.
  app.use("/api/*", bearerAuth({ verifier }));
  addQueryRoutes(app, {
    index,
    defaultPageSize: config.query.defaultPageSize,
    maxPageSize: config.query.maxPageSize,
    v1DeprecatedAt: config.query.v1DeprecatedAt,
  });
  const stopping = new AbortController();
  return {
    name: context.name,
    app,
    async start() {
      await retryUntilDone(() => index.open(), {
        action: "open the search index",
        logger: context.logger,
        signal: stopping.signal,
      });
    },
    stop() {
      stopping.abort();
      return Promise.resolve();
    },
  };
}
