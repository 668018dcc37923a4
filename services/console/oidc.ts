/**
 * The console as an OpenID Connect relying party: the authorization code
 * flow with PKCE (S256) for a public client, token refresh and RP-initiated
 * logout. The issuer is chosen by its URL only: identity in development,
 * Keycloak for real; every endpoint comes from its discovery document.
 */
import { encodeBase64Url, jwtClaims } from "./encoding.ts";
import {
  type PendingSignIn,
  randomToken,
  type SessionTokens,
  type SignedInUser,
} from "./sessions.ts";

interface Discovery {
  readonly authorization_endpoint: string;
  readonly token_endpoint: string;
  readonly end_session_endpoint?: string;
}

export class SignInError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SignInError";
  }
}

export interface OidcClientOptions {
  readonly issuer: string;
  readonly clientId: string;
  readonly fetch?: typeof fetch;
  readonly now?: () => number;
}

export class OidcClient {
  readonly #issuer: string;
  readonly #clientId: string;
  readonly #fetch: typeof fetch;
  readonly #now: () => number;
  #discovery: Promise<Discovery> | undefined;

  constructor(options: OidcClientOptions) {
    this.#issuer = options.issuer.replace(/\/+$/, "");
    this.#clientId = options.clientId;
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.#now = options.now ?? Date.now;
  }

  #endpoints(): Promise<Discovery> {
    this.#discovery ??= (async () => {
      const url = `${this.#issuer}/.well-known/openid-configuration`;
      const response = await this.#fetch(url, { signal: AbortSignal.timeout(5000) });
      if (!response.ok) {
        await response.body?.cancel();
        throw new SignInError(`The issuer's discovery document ${url} answered ${response.status}`);
      }
      return await response.json() as Discovery;
    })();
    // A failed discovery is tried again on the next sign-in.
    this.#discovery.catch(() => this.#discovery = undefined);
    return this.#discovery;
  }

  /** A new sign-in and the issuer's URL to send the browser to. */
  async startSignIn(
    redirectUri: string,
    returnTo: string,
  ): Promise<{ pending: PendingSignIn; location: string }> {
    const { authorization_endpoint } = await this.#endpoints();
    const pending = {
      state: randomToken(),
      verifier: randomToken(48),
      nonce: randomToken(),
      returnTo,
    };
    const digest = await crypto.subtle.digest(
      "SHA-256",
      new TextEncoder().encode(pending.verifier),
    );
    const location = new URL(authorization_endpoint);
    location.search = new URLSearchParams({
      response_type: "code",
      client_id: this.#clientId,
      redirect_uri: redirectUri,
      scope: "openid profile email",
      state: pending.state,
      nonce: pending.nonce,
      code_challenge: encodeBase64Url(new Uint8Array(digest)),
      code_challenge_method: "S256",
    }).toString();
    return { pending, location: location.href };
  }

  async #token(
    params: Record<string, string>,
  ): Promise<{ tokens: SessionTokens; user: SignedInUser }> {
    const { token_endpoint } = await this.#endpoints();
    const response = await this.#fetch(token_endpoint, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ client_id: this.#clientId, ...params }),
      signal: AbortSignal.timeout(5000),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok || typeof body.access_token !== "string") {
      throw new SignInError(
        `The issuer refused the ${params.grant_type} grant: ${body.error ?? response.status}` +
          (body.error_description ? ` (${body.error_description})` : ""),
      );
    }
    // The tokens come straight from the issuer's token endpoint (OIDC Core 3.1.3.7).
    const claims = jwtClaims(body.access_token);
    const realmAccess = claims.realm_access as { roles?: unknown } | undefined;
    const roles = Array.isArray(realmAccess?.roles)
      ? realmAccess.roles.filter((role): role is string => typeof role === "string")
      : [];
    return {
      tokens: {
        accessToken: body.access_token,
        refreshToken: body.refresh_token,
        idToken: body.id_token,
        expiresAt: this.#now() + Number(body.expires_in ?? 60) * 1000,
      },
      user: {
        subject: String(claims.sub),
        username: String(claims.preferred_username ?? claims.sub),
        roles,
      },
    };
  }

  /** Redeems the code of a callback whose `state` matched the pending sign-in. */
  async finishSignIn(
    pending: PendingSignIn,
    code: string,
    redirectUri: string,
  ): Promise<{ tokens: SessionTokens; user: SignedInUser }> {
    const result = await this.#token({
      grant_type: "authorization_code",
      code,
      redirect_uri: redirectUri,
      code_verifier: pending.verifier,
    });
    if (result.tokens.idToken !== undefined) {
      const nonce = jwtClaims(result.tokens.idToken).nonce;
      if (nonce !== pending.nonce) throw new SignInError("The ID token's nonce does not match");
    }
    return result;
  }

  /** New tokens for a session's refresh token. */
  refresh(refreshToken: string): Promise<{ tokens: SessionTokens; user: SignedInUser }> {
    return this.#token({ grant_type: "refresh_token", refresh_token: refreshToken });
  }

  /** Where the browser ends its session at the issuer and comes back to `returnTo`. */
  async logoutLocation(idToken: string | undefined, returnTo: string): Promise<string> {
    const { end_session_endpoint } = await this.#endpoints();
    if (end_session_endpoint === undefined) return returnTo;
    const location = new URL(end_session_endpoint);
    location.search = new URLSearchParams({
      client_id: this.#clientId,
      post_logout_redirect_uri: returnTo,
      ...(idToken === undefined ? {} : { id_token_hint: idToken }),
    }).toString();
    return location.href;
  }
}
