/** Test helpers of the identity service: the service on a fake clock, forms, PKCE pairs. */
import { base64url, decodeJwt, decodeProtectedHeader } from "jose";
import realmFile from "../../shared/auth/twitterapi-realm.json" with { type: "json" };
import { testContext } from "../../shared/testing/test_context.ts";
import { loadConfig } from "../config.ts";
import { createIdentityService, type IdentityService } from "./main.ts";

export const REALM = "twitterapi";
export const CONSOLE = "twitterapi-console";
export const REDIRECT_URI = "http://127.0.0.1:8400/callback";
export const LIFESPAN_MS = realmFile.accessTokenLifespan * 1000;

/** The realm file's own development password of a user. */
export function devPassword(username: string): string {
  const user = realmFile.users.find((candidate) => candidate.username === username);
  const password = user?.credentials?.[0]?.value;
  if (password === undefined) throw new Error(`The realm file has no password for ${username}`);
  return password;
}

/** The realm file's own development secret of a client. */
export function devSecret(clientId: string): string {
  const client = realmFile.clients.find((candidate) => candidate.clientId === clientId);
  if (client === undefined || !("secret" in client)) {
    throw new Error(`The realm file has no secret for ${clientId}`);
  }
  return client.secret;
}

/** The realm file's users that people log in as. */
export const PEOPLE = realmFile.users
  .filter((user) => !("serviceAccountClientId" in user))
  .map((user) => user.username);

/** The realm file's confidential clients with service accounts. */
export const SERVICE_CLIENTS = realmFile.clients
  .filter((client) => client.serviceAccountsEnabled)
  .map((client) => client.clientId);

/** A copy of the realm file, for tests that change it. */
export function realmCopy(): typeof realmFile {
  return structuredClone(realmFile);
}

export interface TestIdentity {
  readonly service: IdentityService;
  /** The fake clock, epoch milliseconds; tests move it. */
  readonly clock: { now: number };
}

export async function testIdentity(
  options: { env?: Record<string, string>; realm?: unknown } = {},
): Promise<TestIdentity> {
  const clock = { now: Date.now() };
  const service = await createIdentityService({
    config: loadConfig(options.env ?? {}),
    context: testContext("identity"),
    now: () => clock.now,
    ...(options.realm === undefined ? {} : { realm: options.realm }),
  });
  return { service, clock };
}

export function form(
  params: Record<string, string>,
  headers: Record<string, string> = {},
): RequestInit {
  return {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
    body: new URLSearchParams(params).toString(),
  };
}

export function basic(clientId: string, secret: string): Record<string, string> {
  return {
    authorization: `Basic ${btoa(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`)}`,
  };
}

export interface Pkce {
  readonly verifier: string;
  readonly challenge: string;
}

export async function pkce(): Promise<Pkce> {
  const verifier = base64url.encode(crypto.getRandomValues(new Uint8Array(32)));
  const hash = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return { verifier, challenge: base64url.encode(new Uint8Array(hash)) };
}

export interface DecodedToken {
  readonly header: ReturnType<typeof decodeProtectedHeader>;
  readonly claims: ReturnType<typeof decodeJwt>;
}

export function decode(token: string): DecodedToken {
  return { header: decodeProtectedHeader(token), claims: decodeJwt(token) };
}

/** `aud` as a sorted list, whether the token carries one audience or several. */
export function audiences(claims: ReturnType<typeof decodeJwt>): string[] {
  const aud = claims.aud;
  return (aud === undefined ? [] : Array.isArray(aud) ? [...aud] : [aud]).sort();
}

/** `realm_access.roles` as a sorted list (none when the claim is absent). */
export function realmRoles(claims: ReturnType<typeof decodeJwt>): string[] {
  const access = claims.realm_access as { roles?: string[] } | undefined;
  return [...access?.roles ?? []].sort();
}

/** An access token for a development user, by the password grant of the console client. */
export async function passwordGrantToken(tokenEndpoint: string, username: string): Promise<string> {
  const response = await fetch(
    tokenEndpoint,
    form({
      grant_type: "password",
      client_id: CONSOLE,
      username,
      password: devPassword(username),
    }),
  );
  const body = await response.json();
  if (response.status !== 200) {
    throw new Error(`Cannot get a token for ${username}: ${JSON.stringify(body)}`);
  }
  return body.access_token;
}
