/**
 * The permission API, for administrators:
 * - `POST /api/v1/permissions` `{ userId, scope, target?, level }` grants
 *   (201 when the grant is new or its level changed, 200 when it already
 *   existed as given);
 * - `DELETE /api/v1/permissions` `{ userId, scope, target? }` revokes,
 *   whatever the level (204; 404 when there is no such grant);
 * - `GET /api/v1/permissions?userId=` lists a user's grants.
 * `userId` is the token subject (`sub`); `target` is a tweet id for scope
 * `tweet`, an author id for `author`, and absent for `all`. A change takes
 * effect at once on this instance (its cache entry for the user is dropped).
 */
import type { Hono } from "hono";
import { readJsonObject } from "../../shared/http/json_body.ts";
import { invalidParameters, notFound, type ParameterError } from "../../shared/http/problem.ts";
import {
  type Grant,
  type GrantKey,
  type Level,
  LEVELS,
  type PermissionStore,
  type Scope,
  SCOPES,
  type StoredGrant,
} from "./permissions.ts";
import { isEntityId } from "./search_params.ts";

export interface PermissionRoutesOptions {
  readonly store: PermissionStore;
  /** Called after every change of a user's grants. */
  readonly changed: (userId: string) => void;
}

const MAX_USER_ID_LENGTH = 255;
const ENTITY_ID_DETAIL = "a decimal integer from 0 to 9223372036854775807";

function checkUserId(value: unknown, parameter: string, errors: ParameterError[]): string {
  if (
    typeof value !== "string" || value === "" || value.length > MAX_USER_ID_LENGTH ||
    // deno-lint-ignore no-control-regex
    /[\u0000-\u001f\u007f]/.test(value)
  ) {
    errors.push({
      parameter,
      detail: `must be a user id (the token subject): 1 to ${MAX_USER_ID_LENGTH} characters`,
    });
  }
  return String(value);
}

/** The grant key of a body, collecting every problem in `errors`. */
function checkKey(body: Record<string, unknown>, errors: ParameterError[]): GrantKey {
  const userId = checkUserId(body.userId, "userId", errors);
  const scope = body.scope as Scope;
  if (!SCOPES.includes(scope)) {
    errors.push({ parameter: "scope", detail: `must be one of ${SCOPES.join(", ")}` });
    return { userId, scope, target: "" };
  }
  const target = body.target;
  if (scope === "all") {
    if (target !== undefined) {
      errors.push({ parameter: "target", detail: "must be absent for scope all" });
    }
    return { userId, scope, target: "" };
  }
  if (typeof target !== "string" || !isEntityId(target)) {
    errors.push({
      parameter: "target",
      detail: `must be ${
        scope === "tweet" ? "a tweet id" : "an author's user id"
      }: ${ENTITY_ID_DETAIL}`,
    });
  }
  return { userId, scope, target: String(target) };
}

function checkFields(
  body: Record<string, unknown>,
  allowed: readonly string[],
  errors: ParameterError[],
): void {
  for (const field of Object.keys(body)) {
    if (!allowed.includes(field)) {
      errors.push({
        parameter: field,
        detail: `is not a field of this request (${allowed.join(", ")})`,
      });
    }
  }
}

function grantJson(grant: Grant | StoredGrant) {
  return {
    userId: grant.userId,
    scope: grant.scope,
    ...(grant.scope === "all" ? {} : { target: grant.target }),
    level: grant.level,
    ...("grantedAt" in grant ? { grantedAt: grant.grantedAt.toISOString() } : {}),
  };
}

export function addPermissionRoutes(app: Hono, options: PermissionRoutesOptions): void {
  const { store, changed } = options;

  app.post("/api/v1/permissions", async (c) => {
    const body = await readJsonObject(c.req.raw);
    const errors: ParameterError[] = [];
    checkFields(body, ["userId", "scope", "target", "level"], errors);
    const key = checkKey(body, errors);
    const level = body.level as Level;
    if (!LEVELS.includes(level)) {
      errors.push({ parameter: "level", detail: `must be one of ${LEVELS.join(", ")}` });
    }
    if (errors.length > 0) throw invalidParameters(errors);
    const grant = { ...key, level };
    const isChange = await store.grant(grant);
    if (isChange) changed(key.userId);
    return c.json(grantJson(grant), isChange ? 201 : 200);
  });

  app.delete("/api/v1/permissions", async (c) => {
    const body = await readJsonObject(c.req.raw);
    const errors: ParameterError[] = [];
    checkFields(body, ["userId", "scope", "target"], errors);
    const key = checkKey(body, errors);
    if (errors.length > 0) throw invalidParameters(errors);
    const revoked = await store.revoke(key);
    if (!revoked) {
      throw notFound(
        `User ${key.userId} has no grant on ${
          key.scope === "all" ? "everything" : `${key.scope} ${key.target}`
        }`,
      );
    }
    changed(key.userId);
    return c.body(null, 204);
  });

  app.get("/api/v1/permissions", async (c) => {
    const errors: ParameterError[] = [];
    const userId = checkUserId(c.req.query("userId"), "userId", errors);
    if (errors.length > 0) throw invalidParameters(errors);
    const grants = await store.grantsOf(userId);
    return c.json({ userId, grants: grants.map(grantJson) });
  });
}
