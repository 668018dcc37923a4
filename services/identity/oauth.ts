/**
 * OAuth 2.0 protocol plumbing (RFC 6749): its error responses, form
 * parameters and client authentication.
 */
import { createHash, timingSafeEqual } from "node:crypto";
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

/**
 * Parameters of a form or query: a parameter without a value counts as
 * omitted, one given twice is refused (RFC 6749 section 3.1).
 */
export function singleParams(search: URLSearchParams): Map<string, string> {
  const params = new Map<string, string>();
  for (const [name, value] of search) {
    if (value === "") continue;
    if (params.has(name)) throw invalidRequest(`Parameter ${name} appears more than once`);
    params.set(name, value);
  }
  return params;
}

/** The parameters of an `application/x-www-form-urlencoded` body. */
export async function formParams(request: Request): Promise<Map<string, string>> {
  const type = request.headers.get("content-type") ?? "";
  if (!/^application\/x-www-form-urlencoded\s*(;|$)/i.test(type)) {
    throw invalidRequest("The request body must be application/x-www-form-urlencoded");
  }
  return singleParams(new URLSearchParams(await request.text()));
}

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
