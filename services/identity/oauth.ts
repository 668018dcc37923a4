/**
 * OAuth 2.0 protocol plumbing (RFC 6749): its error responses, form
 * parameters and client authentication.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { z } from "../../shared/http/openapi.ts";
import type { Realm, RealmClient } from "./realm.ts";

/** An RFC 6749 error: `{error, error_description}` with its status. */
export class OAuthError extends Error {
  constructor(
    readonly status: 400 | 401 | 403,
    readonly error: string,
    readonly description: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(`${error}: ${description}`);
    this.name = "OAuthError";
  }
}

export const NO_STORE = { "cache-control": "no-store", pragma: "no-cache" } as const;

export function oauthErrorResponse(error: OAuthError): Response {
  return new Response(
    JSON.stringify({ error: error.error, error_description: error.description }),
    {
      status: error.status,
      headers: { ...NO_STORE, ...error.headers, "content-type": "application/json" },
    },
  );
}

export function invalidRequest(description: string): OAuthError {
  return new OAuthError(400, "invalid_request", description);
}

export function invalidGrant(description: string): OAuthError {
  return new OAuthError(400, "invalid_grant", description);
}

const MISSING = "missing";
const REPEATED = "repeated";

/** An optional parameter of a form or query: each appears at most once (RFC 6749 section 3.1). */
export function optionalParam(): z.ZodOptional<z.ZodString> {
  return z.string({ error: REPEATED }).optional();
}

/** A required parameter; one without a value counts as omitted. */
export function requiredParam(): z.ZodString {
  return z.string({ error: (issue) => issue.input === undefined ? MISSING : REPEATED })
    .min(1, { error: MISSING });
}

/** The `invalid_request` for the parameters the schemas of `optionalParam`/`requiredParam` refused. */
export function refusedParams(
  issues: readonly { path: readonly PropertyKey[]; message: string }[],
) {
  return invalidRequest(
    issues.map(({ path, message }) => {
      const name = path.map(String).join(".");
      return message === MISSING
        ? `Missing parameter: ${name}`
        : `Parameter ${name} appears more than once`;
    }).join("; "),
  );
}

/** The parameters given: one without a value counts as omitted (RFC 6749 section 3.1). */
export function presentParams(
  values: Readonly<Record<string, string | undefined>>,
): Map<string, string> {
  const params = new Map<string, string>();
  for (const [name, value] of Object.entries(values)) {
    if (value !== undefined && value !== "") params.set(name, value);
  }
  return params;
}

/** Whether a request's body is a form, the only body OAuth endpoints take. */
export function isFormBody(contentType: string | undefined): boolean {
  return /^application\/x-www-form-urlencoded\s*(;|$)/i.test(contentType ?? "");
}

/** The refusal of a body that is not `application/x-www-form-urlencoded`. */
export function notAForm(): OAuthError {
  return invalidRequest("The request body must be application/x-www-form-urlencoded");
}

/** An RFC 6749 error body. */
export const OAuthErrorSchema = z.object({
  error: z.string().openapi({ example: "invalid_request" }),
  error_description: z.string().openapi({ example: "Missing parameter: grant_type" }),
}).openapi("OAuthError", { description: "An OAuth 2.0 error (RFC 6749 section 5.2)" });

export function requireParam(params: ReadonlyMap<string, string>, name: string): string {
  const value = params.get(name);
  if (value === undefined) throw invalidRequest(`Missing parameter: ${name}`);
  return value;
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

/** Compares secrets in time that does not depend on where they differ. */
export function secretsEqual(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

function decodeFormComponent(text: string): string {
  return decodeURIComponent(text.replaceAll("+", " "));
}

/**
 * The client of a token request, authenticated by HTTP Basic
 * (`client_secret_basic`) or by form parameters (`client_secret_post`); a
 * public client only names itself. Throws 401 `invalid_client`.
 */
export function authenticateClient(
  realm: Realm,
  params: ReadonlyMap<string, string>,
  authorization: string | undefined,
): RealmClient {
  let clientId = params.get("client_id");
  let secret = params.get("client_secret");
  let challenge: Record<string, string> = {};
  if (authorization !== undefined && /^basic\s/i.test(authorization)) {
    challenge = { "www-authenticate": `Basic realm="${realm.name}"` };
    let decoded: string;
    try {
      decoded = atob(authorization.slice(6).trim());
    } catch {
      throw new OAuthError(401, "invalid_client", "Malformed Basic authorization", challenge);
    }
    const colon = decoded.indexOf(":");
    if (colon < 0) {
      throw new OAuthError(401, "invalid_client", "Malformed Basic authorization", challenge);
    }
    let basicId: string;
    try {
      basicId = decodeFormComponent(decoded.slice(0, colon));
      secret = decodeFormComponent(decoded.slice(colon + 1));
    } catch {
      throw new OAuthError(401, "invalid_client", "Malformed Basic authorization", challenge);
    }
    if (params.has("client_secret")) {
      throw invalidRequest(
        "Authenticate the client by one method only, not Basic and client_secret",
      );
    }
    if (clientId !== undefined && clientId !== basicId) {
      throw invalidRequest("client_id differs from the client of the Basic authorization");
    }
    clientId = basicId;
  }
  if (clientId === undefined) {
    throw new OAuthError(401, "invalid_client", "Missing parameter: client_id", challenge);
  }
  const client = realm.clients.get(clientId);
  const authenticated = client !== undefined && client.enabled &&
    (client.publicClient ||
      (secret !== undefined && client.secret !== undefined && secretsEqual(secret, client.secret)));
  if (!authenticated) {
    throw new OAuthError(
      401,
      "invalid_client",
      "Invalid client or Invalid client credentials",
      challenge,
    );
  }
  return client;
}
