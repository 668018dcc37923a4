/**
 * OpenAPI 3.1 descriptions generated from the zod schemas that validate each
 * request, so that a description cannot drift from the code: every route is
 * declared once with `createRoute` and mounted with `app.openapi(route,
 * handler)`. A request the schemas refuse becomes a 400 problem naming each
 * invalid parameter (RFC 9457), never Hono's plain-text 400.
 */
import {
  createRoute,
  type Hook,
  OpenAPIHono,
  type RouteConfig,
  type RouteHandler,
  z,
} from "@hono/zod-openapi";
import type { BlankEnv, Env } from "hono/types";
import { invalidParameters, type ParameterError, PROBLEM_CONTENT_TYPE } from "./problem.ts";

export { createRoute, OpenAPIHono, type RouteConfig, z };

/** Where a schema applied: the request part zod-openapi validated. */
type ValidationTarget = "query" | "param" | "header" | "cookie" | "json" | "form";

interface Issue {
  readonly path: readonly PropertyKey[];
  readonly message: string;
  /** The members a strict object does not know (code `unrecognized_keys`). */
  readonly keys?: readonly string[];
}

/**
 * The parameter an issue names: the query, path, header or cookie parameter
 * itself, or the body member as a dotted path (`body` for the body as a whole).
 */
function parameterName(target: ValidationTarget, path: readonly PropertyKey[]): string {
  const names = path.map(String);
  if (target === "json" || target === "form") {
    return names.length === 0 ? "body" : `body.${names.join(".")}`;
  }
  return names.join(".") || target;
}

/** The problem's `errors` for the issues zod found in one part of the request. */
export function parameterErrors(
  target: ValidationTarget,
  issues: readonly Issue[],
): ParameterError[] {
  return issues.flatMap((issue) =>
    // Each unknown member is named, not the object that holds them.
    issue.keys === undefined
      ? [{ parameter: parameterName(target, issue.path), detail: issue.message }]
      : issue.keys.map((key) => ({
        parameter: parameterName(target, [...issue.path, key]),
        detail: "is not a member of this request",
      }))
  );
}

/** Turns a failed validation into the 400 problem naming each invalid parameter. */
// deno-lint-ignore no-explicit-any
export const validationHook: Hook<any, any, any, any> = (result) => {
  if (!result.success) {
    throw invalidParameters(
      parameterErrors(result.target as ValidationTarget, result.error.issues),
    );
  }
};

/** A Hono app whose `openapi` routes validate with the schemas they describe. */
export function createOpenApiApp<E extends Env = BlankEnv>(): OpenAPIHono<E> {
  return new OpenAPIHono<E>({ defaultHook: validationHook });
}

/**
 * Mounts a described route whose handler may answer with any `Response`
 * (`c.body`, a stream, a proxied response) while its input stays typed by
 * the route's schemas. `app.openapi` only accepts responses typed by the
 * route; the schemathesis run checks what this one answers against them.
 */
export function mountRoute<E extends Env, R extends RouteConfig>(
  app: OpenAPIHono<E>,
  route: R,
  handler: (c: Parameters<RouteHandler<R, E>>[0]) => Response | Promise<Response>,
): void {
  app.openapi(route, handler as never);
}

/** RFC 9457 problem details, the body of every 4xx and 5xx. */
export const ProblemSchema = z.object({
  type: z.string().openapi({ example: "urn:twitterapi:problem:invalid-parameter" }),
  title: z.string(),
  status: z.int().min(400).max(599),
  detail: z.string().optional(),
  instance: z.string().optional(),
  errors: z.array(z.object({ parameter: z.string(), detail: z.string() })).optional()
    .openapi({ description: "Each invalid parameter, for `invalid-parameter` problems." }),
}).catchall(z.unknown()).openapi("Problem");

const PROBLEM_DESCRIPTIONS: Readonly<Record<number, string>> = {
  400: "Invalid request: the problem names each invalid parameter",
  401: "Missing, invalid or expired bearer token",
  403: "The token does not allow this",
  404: "No such resource",
  406: "No representation matches Accept",
  409: "Conflicts with the resource's current state",
  413: "Request body too large",
  415: "Unsupported request media type",
  422: "Well-formed but refused",
  429: "Rate limit reached",
  500: "Internal error, logged with the trace id",
  502: "The upstream failed",
  503: "Not ready or a dependency is unavailable",
  504: "The upstream did not answer in time",
};

interface ProblemResponse {
  readonly description: string;
  readonly content: { readonly [PROBLEM_CONTENT_TYPE]: { readonly schema: typeof ProblemSchema } };
}

/** Problem responses for the given statuses, for a route's `responses`. */
export function problemResponses<S extends number>(
  ...statuses: readonly S[]
): Record<S, ProblemResponse> {
  const responses = {} as Record<S, ProblemResponse>;
  for (const status of statuses) {
    responses[status] = {
      description: PROBLEM_DESCRIPTIONS[status] ?? "Problem",
      content: { [PROBLEM_CONTENT_TYPE]: { schema: ProblemSchema } },
    };
  }
  return responses;
}

export interface ServerSentEventOptions {
  /** The event names the stream sends. */
  readonly events: readonly [string, ...string[]];
  /** The JSON each event's `data` holds; any JSON when absent. */
  readonly data?: z.ZodType;
  /** What each event's `id` is, when the stream sets one. */
  readonly id?: string;
  readonly description?: string;
}

/**
 * The `schema` of a `text/event-stream`: OpenAPI 3.1 describes such a stream
 * by one of its events as parsed (`event`, `data`, `id`, `retry`), not by its
 * text; comments and `retry`-only blocks are no events. `data` is JSON, its
 * schema given as `contentSchema` (JSON Schema 2020-12).
 */
export function serverSentEventSchema(options: ServerSentEventOptions) {
  const { events, data, id, description } = options;
  const contentSchema = data === undefined ? undefined : (() => {
    const { $schema: _, ...schema } = z.toJSONSchema(data, {
      target: "draft-2020-12",
      io: "output",
    });
    return schema;
  })();
  return z.object({
    event: z.enum(events),
    data: z.string().openapi({
      description: "JSON",
      contentMediaType: "application/json",
      ...(contentSchema === undefined ? {} : { contentSchema }),
    } as never),
    ...(id === undefined ? {} : { id: z.string().openapi({ description: id }) }),
    retry: z.int().min(0).optional().openapi({ description: "Milliseconds before reconnecting" }),
  }).openapi({ ...(description === undefined ? {} : { description }) });
}

/** The security scheme of routes behind `bearerAuth`: a JWT from the issuer. */
export const BEARER_AUTH = "bearerAuth";

/** A route's `security` when it needs a bearer token. */
export const bearerSecurity: { [BEARER_AUTH]: string[] }[] = [{ [BEARER_AUTH]: [] }];

/** What `/openapi.json` says about the service itself. */
export interface OpenApiInfo {
  readonly title: string;
  readonly version: string;
  readonly description?: string;
}

/** An OpenAPI document as JSON. */
export type OpenApiDocument = Record<string, unknown>;

/**
 * Serves the app's description at `/openapi.json`, generated on each request
 * from the routes mounted so far (services add theirs after this call).
 * `publish` turns it into what is served (the gateway merges its upstreams'
 * into it); its result must stay OpenAPI 3.1.
 */
export function serveOpenApiDescription(
  app: OpenAPIHono,
  info: OpenApiInfo,
  publish?: (own: () => OpenApiDocument) => Promise<OpenApiDocument>,
): void {
  app.openAPIRegistry.registerComponent("securitySchemes", BEARER_AUTH, {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
    description: "An access token from the issuer (identity in development, Keycloak for real)",
  });
  app.openapi(
    createRoute({
      method: "get",
      path: "/openapi.json",
      summary: "This service's OpenAPI 3.1 description",
      tags: ["operations"],
      responses: {
        200: {
          description: "The OpenAPI 3.1 description",
          content: { "application/json": { schema: z.object({}).catchall(z.unknown()) } },
        },
      },
    }),
    async (c) => {
      const own = () =>
        app.getOpenAPI31Document({
          openapi: "3.1.0",
          info: { ...info },
        }) as unknown as OpenApiDocument;
      return c.json((publish === undefined ? own() : await publish(own)) as never, 200);
    },
  );
}
