/**
 * The authorization code flow with PKCE (RFC 6749 section 4.1, RFC 7636,
 * S256 only): validating the authorization request, the minimal login page,
 * and single-use codes bound to their client, redirect URI and code challenge.
 */
import { base64url } from "jose";
import {
  type GrantedScopes,
  grantScopes,
  isRegisteredRedirect,
  type Realm,
  type RealmClient,
  type RealmUser,
  ScopeError,
} from "./realm.ts";

/** A code challenge or verifier: 43 to 128 unreserved characters (RFC 7636). */
const PKCE_VALUE = /^[A-Za-z0-9\-._~]{43,128}$/;

export interface AuthorizationRequest {
  readonly client: RealmClient;
  readonly redirectUri: string;
  readonly state: string | undefined;
  readonly scopes: GrantedScopes;
  /** The raw `scope` parameter, carried through the login form. */
  readonly scope: string | undefined;
  readonly codeChallenge: string;
  readonly nonce: string | undefined;
  readonly loginHint: string | undefined;
}

/**
 * An authorization request that cannot be answered at the redirect URI (an
 * unknown client or an unregistered redirect URI): shown to the person.
 */
export class AuthorizationPageError extends Error {
  constructor(readonly error: string, readonly description: string) {
    super(`${error}: ${description}`);
    this.name = "AuthorizationPageError";
  }
}

/** An authorization request error reported to the client at its redirect URI. */
export class AuthorizationRedirectError extends Error {
  constructor(
    readonly redirectUri: string,
    readonly state: string | undefined,
    readonly error: string,
    readonly description: string,
  ) {
    super(`${error}: ${description}`);
    this.name = "AuthorizationRedirectError";
  }
}

/** Validates an authorization request; throws one of the two errors above. */
export function readAuthorizationRequest(
  realm: Realm,
  params: ReadonlyMap<string, string>,
): AuthorizationRequest {
  const clientId = params.get("client_id");
  if (clientId === undefined) {
    throw new AuthorizationPageError("invalid_request", "Missing parameter: client_id");
  }
  const client = realm.clients.get(clientId);
  if (client === undefined || !client.enabled) {
    throw new AuthorizationPageError("invalid_request", `Client not found: ${clientId}`);
  }
  const redirectUri = params.get("redirect_uri");
  if (redirectUri === undefined) {
    throw new AuthorizationPageError("invalid_request", "Missing parameter: redirect_uri");
  }
  if (!isRegisteredRedirect(client, redirectUri)) {
    throw new AuthorizationPageError("invalid_request", "Invalid parameter: redirect_uri");
  }
  const state = params.get("state");
  const fail = (error: string, description: string) =>
    new AuthorizationRedirectError(redirectUri, state, error, description);
  const responseType = params.get("response_type");
  if (responseType === undefined) throw fail("invalid_request", "Missing parameter: response_type");
  if (responseType !== "code") {
    throw fail("unsupported_response_type", `Unsupported response_type: ${responseType}`);
  }
  if (!client.standardFlowEnabled) {
    throw fail("unauthorized_client", "Client is not allowed to initiate browser login");
  }
  const responseMode = params.get("response_mode");
  if (responseMode !== undefined && responseMode !== "query") {
    throw fail("invalid_request", `Unsupported response_mode: ${responseMode}`);
  }
  const codeChallenge = params.get("code_challenge");
  const method = params.get("code_challenge_method");
  if (codeChallenge === undefined) {
    throw fail("invalid_request", "Missing parameter: code_challenge (PKCE is required)");
  }
  if (method !== "S256") {
    throw fail("invalid_request", "Invalid parameter: code_challenge_method must be S256");
  }
  if (!PKCE_VALUE.test(codeChallenge)) {
    throw fail("invalid_request", "Invalid parameter: code_challenge");
  }
  const scope = params.get("scope");
  let scopes: GrantedScopes;
  try {
    scopes = grantScopes(client, scope);
  } catch (error) {
    if (error instanceof ScopeError) throw fail("invalid_scope", error.message);
    throw error;
  }
  return {
    client,
    redirectUri,
    state,
    scopes,
    scope,
    codeChallenge,
    nonce: params.get("nonce"),
    loginHint: params.get("login_hint"),
  };
}

/** The redirect carrying the code, or an error, back to the client (RFC 9207 adds `iss`). */
export function redirectLocation(
  redirectUri: string,
  state: string | undefined,
  issuer: string,
  values: Readonly<Record<string, string>>,
): string {
  const url = new URL(redirectUri);
  for (const [name, value] of Object.entries(values)) url.searchParams.set(name, value);
  if (state !== undefined) url.searchParams.set("state", state);
  url.searchParams.set("iss", issuer);
  return url.toString();
}

/** What a code stands for until it is redeemed. */
export interface PendingCode {
  readonly clientId: string;
  readonly redirectUri: string;
  readonly codeChallenge: string;
  readonly user: RealmUser;
  readonly scopes: GrantedScopes;
  readonly nonce: string | undefined;
  /** Epoch milliseconds. */
  readonly expiresAt: number;
}

/** Most codes pending at once; beyond it the oldest is dropped. */
const MAX_PENDING_CODES = 10_000;

/** Codes in memory: random, short-lived, and gone on the first redemption attempt. */
export class AuthorizationCodes {
  readonly #codes = new Map<string, PendingCode>();

  issue(pending: PendingCode, now: number): string {
    for (const [code, entry] of this.#codes) {
      if (entry.expiresAt <= now) this.#codes.delete(code);
    }
    if (this.#codes.size >= MAX_PENDING_CODES) {
      this.#codes.delete(this.#codes.keys().next().value!);
    }
    const code = base64url.encode(crypto.getRandomValues(new Uint8Array(32)));
    this.#codes.set(code, pending);
    return code;
  }

  /** The pending code, once: a second attempt, or one after expiry, finds nothing. */
  redeem(code: string, now: number): PendingCode | undefined {
    const pending = this.#codes.get(code);
    this.#codes.delete(code);
    return pending !== undefined && pending.expiresAt > now ? pending : undefined;
  }
}

/** Whether `verifier` is the PKCE verifier of `challenge` (S256). */
export async function verifierMatches(verifier: string, challenge: string): Promise<boolean> {
  if (!PKCE_VALUE.test(verifier)) return false;
  const hash = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url.encode(new Uint8Array(hash)) === challenge;
}

function escapeHtml(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;").replaceAll("'", "&#39;");
}

const PAGE_HEADERS = {
  "content-type": "text/html; charset=utf-8",
  "cache-control": "no-store",
  "x-frame-options": "DENY",
  "content-security-policy":
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
  "referrer-policy": "no-referrer",
} as const;

const STYLE = "body{font-family:sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}" +
  "label,input,button{display:block;width:100%;box-sizing:border-box;margin:.3rem 0}" +
  "input,button{padding:.4rem}.error{color:#a00}";

function page(title: string, body: string, status: number): Response {
  return new Response(
    `<!doctype html>\n<html lang="en"><head><meta charset="utf-8">` +
      `<meta name="viewport" content="width=device-width, initial-scale=1">` +
      `<title>${escapeHtml(title)}</title><style>${STYLE}</style></head>` +
      `<body><h1>${escapeHtml(title)}</h1>${body}</body></html>\n`,
    { status, headers: PAGE_HEADERS },
  );
}

/**
 * The login form. It posts the authorization request back to the same
 * endpoint with the credentials; `error` is shown above it.
 */
export function loginPage(
  realm: Realm,
  request: AuthorizationRequest,
  options: { username?: string | undefined; error?: string; status?: number } = {},
): Response {
  const hidden: Record<string, string | undefined> = {
    response_type: "code",
    client_id: request.client.clientId,
    redirect_uri: request.redirectUri,
    scope: request.scope,
    state: request.state,
    code_challenge: request.codeChallenge,
    code_challenge_method: "S256",
    nonce: request.nonce,
  };
  const inputs = Object.entries(hidden)
    .filter((entry): entry is [string, string] => entry[1] !== undefined)
    .map(([name, value]) =>
      `<input type="hidden" name="${escapeHtml(name)}" value="${escapeHtml(value)}">`
    )
    .join("");
  const username = options.username ?? request.loginHint ?? "";
  return page(
    `Sign in to ${realm.name}`,
    `<p>${escapeHtml(request.client.clientId)} asks you to sign in.</p>` +
      (options.error === undefined
        ? ""
        : `<p class="error" role="alert">${escapeHtml(options.error)}</p>`) +
      `<form method="post" action="auth">${inputs}` +
      `<label>Username or e-mail<input name="username" autocomplete="username" required ` +
      `value="${escapeHtml(username)}"></label>` +
      `<label>Password<input type="password" name="password" ` +
      `autocomplete="current-password" required></label>` +
      `<button type="submit">Sign in</button></form>`,
    options.status ?? 200,
  );
}

/** The page for a request that cannot go back to the client. */
export function errorPage(error: AuthorizationPageError): Response {
  return page(
    "Cannot sign in",
    `<p class="error" role="alert">${escapeHtml(error.description)}</p>` +
      `<p>Error: <code>${escapeHtml(error.error)}</code></p>`,
    400,
  );
}

/** The page after a logout without a redirect back to the client. */
export function signedOutPage(): Response {
  return page("Signed out", "<p>You are signed out.</p>", 200);
}
