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
import {
  bearerSecurity,
  createRoute,
  mountRoute,
  type OpenAPIHono,
  problemResponses,
  z,
} from "../../shared/http/openapi.ts";
import { notFound } from "../../shared/http/problem.ts";
import {
  type Grant,
  type GrantKey,
  LEVELS,
  type PermissionStore,
  type StoredGrant,
} from "./permissions.ts";
import { entityId } from "./search_params.ts";

export interface PermissionRoutesOptions {
  readonly store: PermissionStore;
  /** Called after every change of a user's grants. */
  readonly changed: (userId: string) => void;
}

const MAX_USER_ID_LENGTH = 255;
const USER_ID_DETAIL =
  `must be a user id (the token subject): 1 to ${MAX_USER_ID_LENGTH} characters`;

const UserId = z.string({ error: USER_ID_DETAIL }).min(1, { error: USER_ID_DETAIL })
  .max(MAX_USER_ID_LENGTH, { error: USER_ID_DETAIL })
  // deno-lint-ignore no-control-regex
  .regex(/^[^\u0000-\u001f\u007f]*$/, { error: USER_ID_DETAIL })
  .openapi({ description: "The user: the subject (`sub`) of their tokens", example: "erin" });

const Level = z.enum(LEVELS, { error: `must be one of ${LEVELS.join(", ")}` }).openapi({
  description: "ADMIN includes WRITE, which includes READ",
});

/**
 * A grant's key and level: `target` is a tweet id for scope `tweet`, an
 * author's user id for `author`, and absent for `all`.
 */
function keyVariants<S extends z.ZodRawShape>(extra: S) {
  return [
    z.object({
      userId: UserId,
      scope: z.literal("tweet"),
      target: entityId("a tweet id"),
      ...extra,
    })
      .strict(),
    z.object({
      userId: UserId,
      scope: z.literal("author"),
      target: entityId("an author's user id"),
      ...extra,
    }).strict(),
    z.object({ userId: UserId, scope: z.literal("all"), ...extra }).strict(),
  ] as const;
}

const SCOPE_DETAIL = { error: "must be one of tweet, author, all" };

const GrantRequest = z.discriminatedUnion("scope", keyVariants({ level: Level }), SCOPE_DETAIL)
  .openapi("GrantRequest", { description: "A grant to give or change" });

const RevokeRequest = z.discriminatedUnion("scope", keyVariants({}), SCOPE_DETAIL)
  .openapi("RevokeRequest", { description: "The grant to revoke, whatever its level" });

const GrantSchema = z.object({
  userId: UserId,
  scope: z.enum(["tweet", "author", "all"]),
  target: z.string().optional().openapi({
    description: "The tweet id (scope tweet) or the author's user id (scope author); " +
      "absent for scope all",
  }),
  level: Level,
  grantedAt: z.iso.datetime().optional().openapi({ description: "Present when listed" }),
}).openapi("Grant");

const GrantsSchema = z.object({ userId: UserId, grants: z.array(GrantSchema) })
  .openapi("Grants");

const ADMIN = "Needs the realm role app_admin_role or app_super_user_role.";
const json = <T>(schema: T) => ({ "application/json": { schema } });

const grantRoute = createRoute({
  method: "post",
  path: "/api/v1/permissions",
  operationId: "grantPermission",
  summary: "Grant a level on a tweet, an author's tweets or everything",
  description: `Takes effect at once. ${ADMIN}`,
  tags: ["permissions"],
  security: bearerSecurity,
  request: { body: { required: true, content: json(GrantRequest) } },
  responses: {
    200: { description: "The grant already existed as given", content: json(GrantSchema) },
    201: { description: "The grant is new or its level changed", content: json(GrantSchema) },
    ...problemResponses(400, 401, 403, 413, 415, 503),
  },
});

const revokeRoute = createRoute({
  method: "delete",
  path: "/api/v1/permissions",
  operationId: "revokePermission",
  summary: "Revoke a grant, whatever its level",
  description: `Takes effect at once. ${ADMIN}`,
  tags: ["permissions"],
  security: bearerSecurity,
  request: { body: { required: true, content: json(RevokeRequest) } },
  responses: {
    204: { description: "Revoked" },
    ...problemResponses(400, 401, 403, 404, 413, 415, 503),
  },
});

const listRoute = createRoute({
  method: "get",
  path: "/api/v1/permissions",
  operationId: "listPermissions",
  summary: "A user's grants",
  description: ADMIN,
  tags: ["permissions"],
  security: bearerSecurity,
  request: { query: z.object({ userId: UserId }) },
  responses: {
    200: { description: "The user's grants", content: json(GrantsSchema) },
    ...problemResponses(400, 401, 403, 503),
  },
});

function keyOf(body: z.infer<typeof RevokeRequest>): GrantKey {
  return body.scope === "all"
    ? { userId: body.userId, scope: "all", target: "" }
    : { userId: body.userId, scope: body.scope, target: body.target };
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

export function addPermissionRoutes(app: OpenAPIHono, options: PermissionRoutesOptions): void {
  const { store, changed } = options;

  app.openapi(grantRoute, async (c) => {
    const body = c.req.valid("json");
    const grant: Grant = { ...keyOf(body), level: body.level };
    const isChange = await store.grant(grant);
    if (isChange) changed(grant.userId);
    return c.json(grantJson(grant), isChange ? 201 : 200);
  });

  mountRoute(app, revokeRoute, async (c) => {
    const key = keyOf(c.req.valid("json"));
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

  app.openapi(listRoute, async (c) => {
    const { userId } = c.req.valid("query");
    const grants = await store.grantsOf(userId);
    return c.json({ userId, grants: grants.map(grantJson) }, 200);
  });
}
