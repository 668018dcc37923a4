/**
 * An in-process token issuer for tests of services that verify access
 * tokens: it signs real RS256 JWTs shaped like Keycloak's (and the identity
 * service's) and answers the discovery document and key set through its own
 * `fetch`, so a service's real `createJwtVerifier` checks them without a
 * server. Tests of the issuer itself use the identity service.
 */
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import type { TokenSource } from "../auth/client_credentials.ts";
import { createJwtVerifier, type JwtVerifier } from "../auth/jwt_verifier.ts";

export interface TestTokenOptions {
  /** `sub`. @default "test-user" */
  readonly subject?: string;
  /** `realm_access.roles`. @default ["app_user_role"] */
  readonly roles?: readonly string[];
  /** `aud`. */
  readonly audience: string | readonly string[];
  /** `preferred_username`; none by default. */
  readonly username?: string;
  /** Lifetime from now. @default 300 */
  readonly lifetimeSec?: number;
  /** `azp`. @default "twitterapi-console" */
  readonly clientId?: string;
}

export interface ServiceTokenOptions {
  /** Lifetime of each token. @default 300 */
  readonly lifetimeSec?: number;
  /** Realm roles. @default [`service:<service>`] */
  readonly roles?: readonly string[];
}

/** A token source that also counts the tokens it issued. */
export interface CountingTokenSource extends TokenSource {
  /** Tokens issued so far. */
  readonly issued: number;
}

export interface TestIssuer {
  readonly issuer: string;
  /** Answers the issuer's discovery document and key set; 404 for anything else. */
  readonly fetch: typeof fetch;
  /** A verifier of this issuer's tokens for one audience, as a service makes it. */
  verifier(audience: string): JwtVerifier;
  /** A signed access token. */
  token(options: TestTokenOptions): Promise<string>;
  /** `{ authorization: "Bearer <token>" }` for a request. */
  authorization(options: TestTokenOptions): Promise<{ authorization: string }>;
  /**
   * The client credentials of `<service>-service` as the realm file gives
   * them: audience `registry`, role `service:<service>`. Each token is reused
   * until half its lifetime has passed, as a client-credentials source does.
   */
  serviceTokens(service: string, options?: ServiceTokenOptions): CountingTokenSource;
}

const ISSUER = "http://issuer.test/realms/twitterapi";
const KID = "test-key";

export async function createTestIssuer(): Promise<TestIssuer> {
  const { privateKey, publicKey } = await generateKeyPair("RS256");
  const jwk = { ...await exportJWK(publicKey), kid: KID, alg: "RS256", use: "sig" };
  const jwksUri = `${ISSUER}/protocol/openid-connect/certs`;

  const issuerFetch: typeof fetch = (input) => {
    const url = input instanceof Request ? input.url : String(input);
    if (url === `${ISSUER}/.well-known/openid-configuration`) {
      return Promise.resolve(Response.json({ issuer: ISSUER, jwks_uri: jwksUri }));
    }
    if (url === jwksUri) return Promise.resolve(Response.json({ keys: [jwk] }));
    return Promise.resolve(new Response("not found", { status: 404 }));
  };

  async function token(options: TestTokenOptions): Promise<string> {
    const { subject = "test-user", roles = ["app_user_role"], lifetimeSec = 300 } = options;
    return await new SignJWT({
      realm_access: { roles: [...roles] },
      azp: options.clientId ?? "twitterapi-console",
      ...(options.username === undefined ? {} : { preferred_username: options.username }),
    })
      .setProtectedHeader({ alg: "RS256", kid: KID, typ: "JWT" })
      .setIssuer(ISSUER)
      .setSubject(subject)
      .setAudience(typeof options.audience === "string" ? options.audience : [...options.audience])
      .setIssuedAt()
      .setExpirationTime(`${lifetimeSec}s`)
      .sign(privateKey);
  }

  return {
    issuer: ISSUER,
    fetch: issuerFetch,
    verifier: (audience) => createJwtVerifier({ issuer: ISSUER, audience, fetch: issuerFetch }),
    token,
    authorization: async (options) => ({ authorization: `Bearer ${await token(options)}` }),
    serviceTokens(service, options = {}) {
      const { lifetimeSec = 300, roles = [`service:${service}`] } = options;
      let cached: { token: string; renewAt: number } | undefined;
      let issued = 0;
      return {
        get issued() {
          return issued;
        },
        async token() {
          if (cached !== undefined && Date.now() < cached.renewAt) return cached.token;
          const renewAt = Date.now() + lifetimeSec * 500;
          const fresh = await token({
            subject: `service-account-${service}-service`,
            clientId: `${service}-service`,
            audience: "registry",
            roles,
            lifetimeSec,
          });
          issued += 1;
          cached = { token: fresh, renewAt };
          return fresh;
        },
        invalidate() {
          cached = undefined;
        },
      };
    },
  };
}
