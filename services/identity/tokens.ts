/**
 * Tokens shaped like Keycloak's: the access token (`typ: "Bearer"`) with
 * `iss`, `sub`, `aud` from the client's audience mappers, `azp`, `scope`,
 * `realm_access.roles` and the profile and e-mail claims of the applied
 * scopes; an ID token (`typ: "ID"`) when `openid` was asked for.
 */
import { base64url } from "jose";
import type { KeyRing } from "./key_ring.ts";
import {
  allowedOrigins,
  type GrantedScopes,
  type RealmClient,
  type RealmUser,
  tokenRoles,
} from "./realm.ts";

export interface TokenRequest {
  readonly issuer: string;
  readonly client: RealmClient;
  readonly user: RealmUser;
  readonly scopes: GrantedScopes;
  readonly lifespanSeconds: number;
  /** Epoch milliseconds. */
  readonly now: number;
  /** From the authorization request, echoed in the ID token. */
  readonly nonce?: string | undefined;
  /** The browser session of a user's grant: `sid` in the tokens, and its refresh token. */
  readonly session?: {
    readonly id: string;
    readonly refreshToken: string;
    readonly refreshExpiresInSeconds: number;
  } | undefined;
}

/** The standard OAuth token response (RFC 6749 section 5.1). */
export interface TokenResponse {
  readonly access_token: string;
  readonly token_type: "Bearer";
  readonly expires_in: number;
  readonly scope: string;
  readonly id_token?: string;
  readonly refresh_token?: string;
  readonly refresh_expires_in?: number;
  readonly session_state?: string;
  readonly "not-before-policy": 0;
}

/** The claims of the profile and e-mail scopes, as in the token and in userinfo. */
export function userClaims(user: RealmUser, scopes: ReadonlySet<string>): Record<string, unknown> {
  const claims: Record<string, unknown> = {};
  if (scopes.has("profile")) {
    const name = [user.firstName, user.lastName].filter((part) => part !== undefined).join(" ");
    if (name !== "") claims.name = name;
    claims.preferred_username = user.username;
    if (user.firstName !== undefined) claims.given_name = user.firstName;
    if (user.lastName !== undefined) claims.family_name = user.lastName;
  }
  if (scopes.has("email")) {
    claims.email_verified = user.emailVerified;
    if (user.email !== undefined) claims.email = user.email;
  }
  return claims;
}

async function accessTokenHash(accessToken: string): Promise<string> {
  const hash = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(accessToken)),
  );
  return base64url.encode(hash.slice(0, 16));
}

/** Signs the tokens of one grant with the client's algorithm. */
export async function issueTokens(keys: KeyRing, request: TokenRequest): Promise<TokenResponse> {
  const { issuer, client, user, scopes } = request;
  const iat = Math.floor(request.now / 1000);
  const exp = iat + request.lifespanSeconds;
  const roles = tokenRoles(user, client);
  const origins = allowedOrigins(client);
  const audience = client.audiences.length === 1 ? client.audiences[0] : [...client.audiences];
  const session = request.session;
  const sid = session === undefined ? {} : { sid: session.id };
  const access = await keys.sign({
    exp,
    iat,
    jti: crypto.randomUUID(),
    iss: issuer,
    ...(client.audiences.length === 0 ? {} : { aud: audience }),
    sub: user.id,
    typ: "Bearer",
    azp: client.clientId,
    ...sid,
    ...(scopes.applied.has("acr") ? { acr: "1" } : {}),
    ...(scopes.applied.has("web-origins") && origins.length > 0
      ? { "allowed-origins": origins }
      : {}),
    ...(scopes.applied.has("roles") && roles.length > 0 ? { realm_access: { roles } } : {}),
    scope: scopes.claim,
    ...userClaims(user, scopes.applied),
  }, client.signatureAlgorithm);
  let idToken: string | undefined;
  if (scopes.applied.has("openid")) {
    idToken = await keys.sign({
      exp,
      iat,
      jti: crypto.randomUUID(),
      iss: issuer,
      aud: client.clientId,
      sub: user.id,
      typ: "ID",
      azp: client.clientId,
      ...sid,
      ...(request.nonce === undefined ? {} : { nonce: request.nonce }),
      at_hash: await accessTokenHash(access),
      ...(scopes.applied.has("acr") ? { acr: "1" } : {}),
      ...userClaims(user, scopes.applied),
    }, client.signatureAlgorithm);
  }
  return {
    access_token: access,
    token_type: "Bearer",
    expires_in: request.lifespanSeconds,
    scope: scopes.claim,
    ...(idToken === undefined ? {} : { id_token: idToken }),
    ...(session === undefined ? {} : {
      refresh_token: session.refreshToken,
      refresh_expires_in: session.refreshExpiresInSeconds,
      session_state: session.id,
    }),
    "not-before-policy": 0,
  };
}
