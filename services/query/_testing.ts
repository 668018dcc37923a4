/** Test helpers of the query service: a started service on PGlite, and its tokens. */
import type { TokenSource } from "../../shared/auth/client_credentials.ts";
import { memoryPglite } from "../../shared/database/database_contract.ts";
import type { SqlDatabase } from "../../shared/database/database.ts";
import { PgliteDatabase } from "../../shared/database/pglite_database.ts";
import {
  type ServiceDiscovery,
  StaticDiscovery,
} from "../../shared/discovery/service_discovery.ts";
import type { SearchIndex } from "../../shared/search_index/search_index.ts";
import type { Service } from "../../shared/service/service.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import type { TestIssuer } from "../../shared/testing/test_issuer.ts";
import { loadConfig } from "../config.ts";
import { createQueryService, SUPER_USER_ROLE } from "./main.ts";

/** A token source that always gives the same token, counting the calls. */
export function fixedTokens(token = "query-service-token"): TokenSource & { calls: number } {
  return {
    calls: 0,
    token() {
      this.calls++;
      return Promise.resolve(token);
    },
    invalidate() {},
  };
}

export interface TestQueryService extends AsyncDisposable {
  readonly service: Service;
  readonly database: SqlDatabase;
}

/** The query service on `index` and a fresh PGlite, started (migrated) unless `start` is false. */
export async function startQueryService(options: {
  issuer: TestIssuer;
  index: SearchIndex;
  env?: Record<string, string>;
  discovery?: ServiceDiscovery;
  tokens?: TokenSource;
  database?: SqlDatabase;
  schema?: string;
  start?: boolean;
}): Promise<TestQueryService> {
  const database = options.database ?? new PgliteDatabase(await memoryPglite());
  const service = createQueryService({
    config: loadConfig({
      QUERY_V1_DEPRECATED_AT: "2026-11-24T00:00:00Z",
      QUERY_SEED_DEV_GRANTS: "false",
      ...options.env,
    }),
    context: testContext("query"),
    index: options.index,
    verifier: options.issuer.verifier("query"),
    database,
    discovery: options.discovery ?? new StaticDiscovery([]),
    tokens: options.tokens ?? fixedTokens(),
    ...(options.schema === undefined ? {} : { schema: options.schema }),
  });
  if (options.start !== false) await service.start();
  return {
    service,
    database,
    async [Symbol.asyncDispose]() {
      await service.stop();
      if (options.database === undefined) await database.close();
    },
  };
}

/** Headers of a super user's query token: every tweet is visible to it. */
export function superUser(issuer: TestIssuer): Promise<{ authorization: string }> {
  return issuer.authorization({
    audience: "query",
    subject: "super-user",
    roles: [SUPER_USER_ROLE],
  });
}
