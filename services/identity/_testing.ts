/** Test helpers of the identity service: the service on a fake clock, forms, PKCE pairs. */
import { base64url, decodeJwt, decodeProtectedHeader } from "jose";
import realmFile from "../../shared/auth/twitterapi-realm.json" with { type: "json" };
import { testContext } from "../../shared/testing/test_context.ts";
import { loadConfig } from "../config.ts";
import { createIdentityService, type IdentityService } from "./main.ts";

export {
  basic,
  clientCredentialsToken,
  CONSOLE,
  devPassword,
  devSecret,
  form,
  passwordGrantToken,
  PEOPLE,
  REALM,
  SERVICE_CLIENTS,
} from "../../shared/testing/realm.ts";
export const REDIRECT_URI = "http://127.0.0.1:8400/callback";
export const LIFESPAN_MS = realmFile.accessTokenLifespan * 1000;

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
    // Keys in memory, unless a test names a key file: the tests' rotations
    // and fake clocks never reach the development key file.
    config: loadConfig({ IDENTITY_SIGNING_KEYS_FILE: "", ...options.env }),
    context: testContext("identity"),
    now: () => clock.now,
    ...(options.realm === undefined ? {} : { realm: options.realm }),
  });
  return { service, clock };
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
