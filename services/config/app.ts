/**
 * The config server's HTTP API, in Spring Cloud Config's shape:
 *
 * - `GET /{application}/{profile}[/{label}]`: the application's property
 *   sources, most specific first, `{cipher}` values decrypted; `ETag` is the
 *   version (`If-None-Match` answers 304). With `Accept: text/event-stream`
 *   the same path is a watch: an event `version` at once and after every
 *   change of that application's files.
 * - `POST /encrypt`, `POST /decrypt`: text in, text out, for admins.
 *
 * Every route needs an access token for the audience `config`. A service's
 * own client (realm role `service:<name>`) reads its own application and the
 * shared `application`; `app_admin_role` reads any and encrypts.
 */
import type { Context, MiddlewareHandler } from "hono";
import { bearerAuth, type BearerAuthEnv } from "../../shared/auth/bearer_auth.ts";
import type { AccessToken, JwtVerifier } from "../../shared/auth/jwt_verifier.ts";
import {
  bearerSecurity,
  createRoute,
  mountRoute,
  type OpenAPIHono,
  problemResponses,
  serverSentEventSchema,
  z,
} from "../../shared/http/openapi.ts";
import { notFound, ProblemError } from "../../shared/http/problem.ts";
import type { Logger } from "../../shared/log/log.ts";
import { CIPHER_PREFIX, CipherError, type SecretCipher } from "./cipher.ts";
import {
  NAME_PATTERN,
  PROFILES_PATTERN,
  type PropertySource,
  type PropertyValue,
  readPropertySources,
  RepositoryError,
  versionOf,
} from "./repository.ts";

export const ADMIN_ROLE = "app_admin_role";
/** The application whose files every application reads. */
export const SHARED_APPLICATION = "application";

/** The services whose own client the token is: its realm roles `service:<name>`, as the registry checks. */
function servicesOf(token: AccessToken): string[] {
  return token.roles.flatMap((role) =>
    role.startsWith("service:") ? [role.slice("service:".length)] : []
  );
}

/** Whether the token may read `application`: an admin any; a service its own and the shared one. */
export function mayRead(token: AccessToken, application: string): boolean {
  if (token.roles.includes(ADMIN_ROLE)) return true;
  const services = servicesOf(token);
  if (application === SHARED_APPLICATION) return services.length > 0;
  return services.includes(application);
}

export interface ConfigRoutesOptions {
  /** The repository folder. */
  readonly folder: string;
  readonly cipher: SecretCipher;
  readonly verifier: JwtVerifier;
  readonly logger: Logger;
  /** Subscribes to changes of the folder; returns the unsubscribe. */
  readonly onRepositoryChange: (listener: () => void) => () => void;
  /** Ends watch streams when the service stops. */
  readonly closing: AbortSignal;
  /** @default 15_000 */
  readonly pingMs?: number;
}

/** The merged document of one application and its version. */
export interface Environment {
  readonly name: string;
  readonly profiles: readonly string[];
  readonly label: string | null;
  readonly version: string;
  readonly state: null;
  readonly propertySources: readonly PropertySource[];
}

function forbidden(token: AccessToken, application: string): ProblemError {
  const who = token.clientId ?? token.username ?? token.subject;
  return new ProblemError({
    status: 403,
    code: "forbidden",
    title: "Permission denied",
    detail: `The client ${who} may not read the configuration of ${application}: a service ` +
      `reads its own (role service:${application}), admins (${ADMIN_ROLE}) read any`,
    extensions: { requiredRoles: [`service:${application}`, ADMIN_ROLE] },
  });
}

/** The only label of a folder repository. */
const LABEL = "main";

const EnvironmentParams = z.object({
  application: z.string().regex(NAME_PATTERN, {
    error: "must be a name: lower-case letters, digits, '_' and '-' (no '--')",
  }).openapi({ description: "The application (service) name", example: "gateway" }),
  profile: z.string().regex(PROFILES_PATTERN, {
    error: "must be comma-separated names: lower-case letters, digits, '_' and '-' (no '--')",
  }).openapi({
    description: "Comma-separated profiles, the last the most specific",
    example: "default",
  }),
});

const LabelParams = EnvironmentParams.extend({
  label: z.string().openapi({
    description: `The repository label: '${LABEL}' only (the repository is a folder); ` +
      "any other is 404",
    example: LABEL,
  }),
});

const EnvironmentHeaders = z.object({
  "if-none-match": z.string().optional().openapi({
    description: "An `ETag` from an earlier answer: 304 while the configuration is unchanged",
    example: `"3f2a9c"`,
  }),
});

const PropertySourceSchema = z.object({
  name: z.string().openapi({ example: "file:gateway-dev.yml" }),
  source: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).openapi({
    description: "Flattened properties (`a.b`, `list[0]`), `{cipher}` values decrypted",
  }),
}).openapi("PropertySource");

const EnvironmentSchema = z.object({
  name: z.string(),
  profiles: z.array(z.string()),
  label: z.string().nullable(),
  version: z.string(),
  state: z.null(),
  propertySources: z.array(PropertySourceSchema),
}).openapi("Environment", {
  description: "Spring Cloud Config's environment: the sources, most specific first",
});

const ETAG_HEADER = z.string().openapi({
  description: "The configuration's version, quoted",
  example: `"3f2a9c"`,
});

const ENVIRONMENT_DESCRIPTION = "The application's property sources, most specific first " +
  "(Spring Cloud Config's shape). A service's own client (role `service:<application>`) reads " +
  "its own application and the shared `application`; `" + ADMIN_ROLE + "` reads any. With " +
  "`Accept: text/event-stream` the same path is a watch: an event `version` " +
  '(`{"version": "..."}`) at once and after every change of the application\'s files.';

function environmentResponses(withLabel: boolean) {
  return {
    200: {
      description: "The configuration, or with `Accept: text/event-stream` its watch",
      headers: z.object({ etag: ETAG_HEADER }),
      content: {
        "application/json": { schema: EnvironmentSchema },
        "text/event-stream": {
          schema: serverSentEventSchema({
            events: ["version"],
            data: z.object({ version: z.string() }),
          }),
        },
      },
    },
    304: {
      description: "Unchanged since the `If-None-Match` version",
      headers: z.object({ etag: ETAG_HEADER }),
    },
    ...problemResponses(400, 401, 403, ...(withLabel ? [404 as const] : []), 500, 503),
  };
}

function environmentRoute<P extends string>(path: P, middleware: MiddlewareHandler) {
  const withLabel = path.endsWith("{label}");
  return createRoute({
    method: "get",
    path,
    operationId: withLabel ? "environmentAtLabel" : "environment",
    summary: withLabel
      ? "An application's configuration at a label"
      : "An application's configuration",
    description: ENVIRONMENT_DESCRIPTION,
    tags: ["config"],
    security: bearerSecurity,
    middleware,
    request: { params: withLabel ? LabelParams : EnvironmentParams, headers: EnvironmentHeaders },
    responses: environmentResponses(withLabel),
  });
}

const TEXT_BODY = {
  required: true,
  content: { "text/plain": { schema: z.string().min(1) } },
} as const;

/**
 * What `decrypt` can read, as the body's pattern: `{key:<id>}` (after an
 * optional `{cipher}`) and the base64 of at least a format byte, fingerprint,
 * IV and tag (33 bytes). Whether the key and the bytes are right is the
 * cipher's to answer (400 `cipher-malformed`, 422).
 */
const DECRYPT_BODY = {
  required: true,
  content: {
    "text/plain": {
      schema: z.string().regex(
        /^\s*(\{cipher\})?\{key:[^}]*\}\s*([A-Za-z0-9+/]{4}){11,}([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\s*$/,
      ),
    },
  },
} as const;

const textResponse = (description: string) => ({
  description,
  content: { "text/plain": { schema: z.string() } },
});

const adminProblems = {
  ...problemResponses(400, 401, 403, 413, 415),
  403: { ...problemResponses(403)[403], description: `The token lacks ${ADMIN_ROLE}` },
};

export function addConfigRoutes(app: OpenAPIHono, options: ConfigRoutesOptions): OpenAPIHono {
  const { folder, cipher, logger, closing, pingMs = 15_000 } = options;
  const authenticated = bearerAuth({ verifier: options.verifier }) as unknown as MiddlewareHandler;
  const admin = bearerAuth({
    verifier: options.verifier,
    anyRole: [ADMIN_ROLE],
  }) as unknown as MiddlewareHandler;

  /** The raw (still encrypted) sources and their version. */
  async function load(application: string, profiles: readonly string[]) {
    try {
      const sources = await readPropertySources(folder, application, profiles);
      return { sources, version: await versionOf(sources) };
    } catch (error) {
      if (!(error instanceof RepositoryError)) throw error;
      logger.error("Cannot serve the configuration of {application}: {message}", {
        application,
        message: error.message,
      });
      throw new ProblemError({
        status: 500,
        code: "invalid-repository",
        title: "Invalid configuration repository",
        detail: error.message,
      });
    }
  }

  /** Decrypts every `{cipher}` value; a failure names its file and key, never a value. */
  async function decrypted(application: string, sources: readonly PropertySource[]) {
    const out: PropertySource[] = [];
    for (const { name, source } of sources) {
      const values: Record<string, PropertyValue> = {};
      for (const [key, value] of Object.entries(source)) {
        if (typeof value !== "string" || !value.startsWith(CIPHER_PREFIX)) {
          values[key] = value;
          continue;
        }
        try {
          values[key] = await cipher.decrypt(value);
        } catch (error) {
          if (!(error instanceof CipherError)) throw error;
          logger.error("Cannot decrypt {key} of {file} for {application}: {reason}", {
            key,
            file: name,
            application,
            reason: error.message,
          });
          throw new ProblemError({
            status: 500,
            code: "undecryptable-secret",
            title: "A secret of this configuration cannot be decrypted",
            detail: `The secret '${key}' of ${name} cannot be decrypted (${error.code}): ` +
              `${error.message}. Nothing of ${application}'s configuration is served until ` +
              "it is fixed; clients keep their last good copy",
            extensions: { file: name, key, reason: error.code },
          });
        }
      }
      out.push({ name, source: values });
    }
    return out;
  }

  function watch(application: string, profiles: readonly string[], first: string): Response {
    const encoder = new TextEncoder();
    let finish = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        let open = true;
        let sent = first;
        const send = (text: string) => {
          if (open) controller.enqueue(encoder.encode(text));
        };
        const event = (version: string) =>
          `event: version\ndata: ${JSON.stringify({ version })}\n\n`;
        const unsubscribe = options.onRepositoryChange(() => {
          load(application, profiles).then(({ version }) => {
            if (version === sent) return;
            sent = version;
            send(event(version));
          }, () => {
            // Logged by load; the watcher keeps its last version.
          });
        });
        const ping = setInterval(() => send(": ping\n\n"), pingMs);
        finish = () => {
          if (!open) return;
          open = false;
          unsubscribe();
          clearInterval(ping);
          closing.removeEventListener("abort", finish);
          try {
            controller.close();
          } catch {
            // Already closed by a cancelled response.
          }
        };
        closing.addEventListener("abort", finish, { once: true });
        send(`retry: 500\n\n${event(first)}`);
        if (closing.aborted) finish();
      },
      cancel() {
        finish();
      },
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
      },
    });
  }

  async function environment(
    c: Context<BearerAuthEnv>,
    { application, profile, label }: { application: string; profile: string; label?: string },
  ) {
    if (label !== undefined && label !== LABEL) {
      throw notFound(
        `No label '${label}': this repository is a folder, whose only label is '${LABEL}'`,
      );
    }
    const profiles = profile.split(",");
    const token = c.get("accessToken");
    if (!mayRead(token, application)) throw forbidden(token, application);
    const { sources, version } = await load(application, profiles);
    const etag = `"${version}"`;
    if (c.req.header("accept")?.includes("text/event-stream")) {
      if (closing.aborted) {
        throw new ProblemError({
          status: 503,
          code: "shutting-down",
          title: "Shutting down",
          detail: "The config service is stopping; watch another instance",
        });
      }
      return watch(application, profiles, version);
    }
    const match = c.req.header("if-none-match");
    if (match !== undefined && match.split(",").map((tag) => tag.trim()).includes(etag)) {
      return c.body(null, 304, { etag });
    }
    const body: Environment = {
      name: application,
      profiles,
      label: label ?? null,
      version,
      state: null,
      propertySources: await decrypted(application, sources),
    };
    return c.json(body, 200, { etag, "cache-control": "no-cache" });
  }

  async function readText(c: Context): Promise<string> {
    const type = c.req.header("content-type") ?? "text/plain";
    if (!/^text\/plain\b/i.test(type)) {
      throw new ProblemError({
        status: 415,
        code: "unsupported-media-type",
        title: "Unsupported media type",
        detail: `The body must be text/plain, got ${type}`,
      });
    }
    const text = await c.req.text();
    if (text === "") {
      throw new ProblemError({
        status: 400,
        code: "invalid-body",
        title: "Invalid request body",
        detail: "The body must be the text to encrypt or decrypt",
      });
    }
    return text;
  }

  mountRoute(
    app,
    createRoute({
      method: "post",
      path: "/encrypt",
      operationId: "encrypt",
      summary: "Encrypt a secret for the repository",
      description: `For \`${ADMIN_ROLE}\`: the text, encrypted with the active key as ` +
        "`{key:<key id>}<base64>`; put it in a file as `{cipher}<that>`.",
      tags: ["cipher"],
      security: bearerSecurity,
      middleware: admin,
      request: { body: TEXT_BODY },
      responses: { 200: textResponse("The encrypted text"), ...adminProblems },
    }),
    async (c) => c.text(await cipher.encrypt(await readText(c))),
  );

  mountRoute(
    app,
    createRoute({
      method: "post",
      path: "/decrypt",
      operationId: "decrypt",
      summary: "Decrypt a secret of the repository",
      description: `For \`${ADMIN_ROLE}\`: the plain text of a value \`encrypt\` returned ` +
        "(with or without `{cipher}`). A malformed value is 400 `cipher-malformed`; one under " +
        "an unknown key id, another key, or altered is 422 `cipher-unknown-key`, " +
        "`cipher-wrong-key`, `cipher-tampered`.",
      tags: ["cipher"],
      security: bearerSecurity,
      middleware: admin,
      request: { body: DECRYPT_BODY },
      responses: {
        200: textResponse("The decrypted text"),
        ...adminProblems,
        ...problemResponses(422),
      },
    }),
    async (c) => {
      const text = await readText(c);
      try {
        return c.text(await cipher.decrypt(text));
      } catch (error) {
        if (!(error instanceof CipherError)) throw error;
        throw new ProblemError({
          status: error.code === "malformed" ? 400 : 422,
          code: `cipher-${error.code}`,
          title: "Cannot decrypt",
          detail: error.message,
        });
      }
    },
  );

  mountRoute(
    app,
    environmentRoute("/{application}/{profile}", authenticated),
    (c) => environment(c as never, c.req.valid("param")),
  );
  mountRoute(
    app,
    environmentRoute("/{application}/{profile}/{label}", authenticated),
    (c) => environment(c as never, c.req.valid("param")),
  );
  return app;
}
