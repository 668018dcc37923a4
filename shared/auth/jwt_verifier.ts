/**
 * Access-token validation for the gateway and every service: the token's
 * signature against the issuer's published keys (discovered through
 * `/.well-known/openid-configuration`), its algorithm, issuer, audience and
 * lifetime. Works with the identity service and with Keycloak alike.
 */
import {
  createRemoteJWKSet,
  customFetch,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  type JWTPayload,
  jwtVerify,
  type JWTVerifyGetKey,
} from "jose";

export interface JwtVerifierOptions {
  /**
   * The issuer, e.g. `http://127.0.0.1:8180/realms/twitterapi`: tokens must
   * carry it as `iss`, and its discovery document names the key set. The
   * discovery document is read once, on the first verification, and cached;
   * a failed read is retried by the next verification.
   */
  readonly issuer: string;
  /** The token's `aud` must contain this audience, or one of these. */
  readonly audience: string | readonly string[];
  /**
   * Signature algorithms accepted. `none` and the HMAC algorithms are refused:
   * a resource server never shares a secret with the issuer.
   * @default ["RS256", "ES256"]
   */
  readonly algorithms?: readonly string[];
  /**
   * Leeway for `exp`, `nbf` and `iat` against this machine's clock, in seconds.
   * @default 30
   */
  readonly clockToleranceSec?: number;
  /**
   * Least time between two key-set fetches caused by an unknown `kid`,
   * counted from the last fetch (jose's `cooldownDuration`): a flood of
   * tokens with made-up key ids costs the issuer one request per cooldown.
   * @default 30_000
   */
  readonly jwksCooldownMs?: number;
  /**
   * Longest wait for the discovery document or the key set.
   * @default 5000
   */
  readonly fetchTimeoutMs?: number;
  /**
   * The clock for `exp`, `nbf` and `iat`, epoch milliseconds; tests move it.
   * @default Date.now
   */
  readonly now?: () => number;
  /**
   * How long a verified token is remembered, so that a client's next requests
   * skip the signature check (most of a request's cost at the gateway). Its
   * time claims still decide on every use: a remembered token is used only
   * while `exp`, `nbf` and `iat` would accept it, else verified again. A key
   * the issuer withdraws was already accepted until the key set is next read
   * (jose re-reads it after 10 minutes); remembering adds at most this long.
   * Failed verifications are never remembered. 0 remembers nothing.
   * @default 60_000
   */
  readonly verifiedCacheMs?: number;
  /**
   * Most tokens remembered at once; the oldest is forgotten first.
   * @default 10_000
   */
  readonly verifiedCacheSize?: number;
  /**
   * The fetch used for the discovery document and the key set; tests count requests with it.
   * @default globalThis.fetch
   */
  readonly fetch?: typeof fetch;
}

/** A verified access token, in the terms services authorize with. */
export interface AccessToken {
  /** `sub`: the user, or the client's service account. */
  readonly subject: string;
  /** `preferred_username`, when the token carries the profile scope. */
  readonly username?: string;
  /** `realm_access.roles`. */
  readonly roles: readonly string[];
  /** `scope`, split on spaces. */
  readonly scopes: readonly string[];
  /** `aud`, always as a list. */
  readonly audience: readonly string[];
  /** `azp` (Keycloak), or `client_id` (RFC 9068). */
  readonly clientId?: string;
  readonly expiresAt: Date;
  /** Every claim of the token, as signed. */
  readonly claims: Readonly<JWTPayload>;
}

export interface JwtVerifier {
  /** Resolves to the verified token; rejects with a {@linkcode TokenError}. */
  verify(token: string): Promise<AccessToken>;
}

/**
 * - `invalid-token`: the token is not acceptable (HTTP 401).
 * - `unavailable`: the issuer's keys cannot be read now (HTTP 503).
 */
export type TokenErrorCode = "invalid-token" | "unavailable";

/** Why a token was not verified; `description` is fit for `error_description` (RFC 6750). */
export class TokenError extends Error {
  readonly code: TokenErrorCode;
  readonly description: string;

  constructor(code: TokenErrorCode, description: string, options?: ErrorOptions) {
    super(description, options);
    this.name = "TokenError";
    this.code = code;
    this.description = description;
  }
}

const DEFAULT_ALGORITHMS = ["RS256", "ES256"] as const;

function invalid(description: string, cause?: unknown): TokenError {
  return new TokenError("invalid-token", description, cause === undefined ? undefined : { cause });
}

function unavailable(description: string, cause?: unknown): TokenError {
  return new TokenError("unavailable", description, cause === undefined ? undefined : { cause });
}

function reason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function isoSeconds(seconds: unknown): string {
  return typeof seconds === "number" && Number.isFinite(seconds)
    ? new Date(seconds * 1000).toISOString()
    : String(seconds);
}

/** The token's header and payload, unverified, only to describe a failure. */
function peek(token: string): { header: Record<string, unknown>; payload: JWTPayload } {
  let header: Record<string, unknown> = {};
  let payload: JWTPayload = {};
  try {
    header = decodeProtectedHeader(token);
    payload = decodeJwt(token);
  } catch {
    // A malformed token: jose's own error says what is wrong with it.
  }
  return { header, payload };
}

function list(value: unknown): string[] {
  if (typeof value === "string") return [value];
  return Array.isArray(value) ? value.filter((item) => typeof item === "string") : [];
}

/** Turns jose's failures into token errors with an OAuth description each. */
function describe(error: unknown, token: string, expected: Expected): TokenError {
  if (error instanceof TokenError) return error;
  const { header, payload } = peek(token);
  if (error instanceof errors.JWTExpired) {
    return invalid(`The token expired at ${isoSeconds(payload.exp)}`, error);
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    switch (error.claim) {
      case "iss":
        return invalid(
          `The token's issuer ${JSON.stringify(payload.iss)} is not ${expected.issuer}`,
          error,
        );
      case "aud":
        return invalid(
          `The token's audience ${JSON.stringify(payload.aud ?? [])} does not include ` +
            expected.audience.join(" or "),
          error,
        );
      case "nbf":
        return invalid(`The token is not valid before ${isoSeconds(payload.nbf)}`, error);
      case "exp":
        return error.reason === "missing"
          ? invalid("The token has no expiry (exp)", error)
          : invalid(`The token's expiry (exp) is invalid: ${error.message}`, error);
      default:
        return invalid(`The token's ${error.claim} claim is invalid: ${error.message}`, error);
    }
  }
  if (error instanceof errors.JOSEAlgNotAllowed) {
    const alg = header.alg;
    return alg === "none" ? invalid("The token is unsigned (alg none)", error) : invalid(
      `The token's algorithm ${JSON.stringify(alg)} is not one of ${
        expected.algorithms.join(", ")
      }`,
      error,
    );
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return invalid("The token's signature does not match its content", error);
  }
  if (error instanceof errors.JWKSNoMatchingKey) {
    return invalid(
      `No key of the issuer matches the token's key id ${JSON.stringify(header.kid ?? null)}`,
      error,
    );
  }
  if (error instanceof errors.JWKSMultipleMatchingKeys) {
    return invalid("Several keys of the issuer match the token's key id", error);
  }
  if (error instanceof errors.JWKSTimeout) {
    return unavailable(`The issuer's key set did not answer in time: ${expected.issuer}`, error);
  }
  if (error instanceof errors.JWKSInvalid) {
    return unavailable(`The issuer's key set is malformed: ${error.message}`, error);
  }
  if (error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid) {
    return invalid(`The token is malformed: ${error.message}`, error);
  }
  if (error instanceof errors.JOSENotSupported) {
    return invalid(`The token uses an unsupported feature: ${error.message}`, error);
  }
  if (error instanceof errors.JOSEError && error.code === "ERR_JOSE_GENERIC") {
    // jose's own failures to read the key set: a non-200 answer or a body that is not JSON.
    return unavailable(`Cannot read the issuer's key set: ${error.message}`, error);
  }
  if (error instanceof errors.JOSEError) {
    return invalid(`The token is invalid: ${error.message}`, error);
  }
  // Anything else comes from fetch: the key set is unreachable.
  return unavailable(`Cannot read the issuer's key set: ${reason(error)}`, error);
}

interface Expected {
  readonly issuer: string;
  readonly audience: readonly string[];
  readonly algorithms: readonly string[];
}

function checkAlgorithms(algorithms: readonly string[]): void {
  if (algorithms.length === 0) {
    throw new RangeError("Cannot verify tokens as 'algorithms' is empty");
  }
  for (const alg of algorithms) {
    if (alg.toLowerCase() === "none" || alg.toUpperCase().startsWith("HS")) {
      throw new RangeError(
        `Cannot verify tokens with ${alg}: only asymmetric signature algorithms are allowed`,
      );
    }
  }
}

function toAccessToken(payload: JWTPayload): AccessToken {
  if (typeof payload.sub !== "string" || payload.sub === "") {
    throw invalid("The token has no subject (sub)");
  }
  const realmAccess = payload.realm_access as { roles?: unknown } | undefined;
  const clientId = typeof payload.azp === "string"
    ? payload.azp
    : typeof payload.client_id === "string"
    ? payload.client_id
    : undefined;
  const username = payload.preferred_username;
  return {
    subject: payload.sub,
    ...(typeof username === "string" ? { username } : {}),
    roles: list(realmAccess?.roles),
    scopes: typeof payload.scope === "string"
      ? payload.scope.split(" ").filter((scope) => scope !== "")
      : [],
    audience: list(payload.aud),
    ...(clientId === undefined ? {} : { clientId }),
    expiresAt: new Date((payload.exp ?? 0) * 1000),
    claims: payload,
  };
}

function frozen(accessToken: AccessToken): AccessToken {
  for (const part of [accessToken.roles, accessToken.scopes, accessToken.audience]) {
    Object.freeze(part);
  }
  Object.freeze(accessToken.claims);
  return Object.freeze(accessToken);
}

/** Creates a verifier of the issuer's access tokens for one audience (or several). */
export function createJwtVerifier(options: JwtVerifierOptions): JwtVerifier {
  const {
    issuer,
    algorithms = DEFAULT_ALGORITHMS,
    clockToleranceSec = 30,
    jwksCooldownMs = 30_000,
    fetchTimeoutMs = 5000,
    fetch: fetchImpl = globalThis.fetch,
    now = Date.now,
    verifiedCacheMs = 60_000,
    verifiedCacheSize = 10_000,
  } = options;
  checkAlgorithms(algorithms);
  const expected: Expected = {
    issuer,
    audience: typeof options.audience === "string" ? [options.audience] : options.audience,
    algorithms,
  };
  const discoveryUrl = `${issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`;

  /** The key set once discovered; undefined again after a failed discovery, to retry. */
  let keySet: Promise<JWTVerifyGetKey> | undefined;

  async function discover(): Promise<JWTVerifyGetKey> {
    let document: { issuer?: unknown; jwks_uri?: unknown };
    try {
      const response = await fetchImpl(discoveryUrl, {
        headers: { accept: "application/json" },
        signal: AbortSignal.timeout(fetchTimeoutMs),
      });
      if (!response.ok) {
        await response.body?.cancel();
        throw new Error(`it answered HTTP ${response.status}`);
      }
      document = await response.json();
    } catch (error) {
      throw unavailable(
        `Cannot read the issuer's discovery document ${discoveryUrl}: ${reason(error)}`,
        error,
      );
    }
    if (document.issuer !== issuer) {
      throw unavailable(
        `The discovery document at ${discoveryUrl} names the issuer ` +
          `${JSON.stringify(document.issuer)}, not ${issuer}`,
      );
    }
    if (typeof document.jwks_uri !== "string" || !URL.canParse(document.jwks_uri)) {
      throw unavailable(`The discovery document at ${discoveryUrl} has no valid jwks_uri`);
    }
    return createRemoteJWKSet(new URL(document.jwks_uri), {
      cooldownDuration: jwksCooldownMs,
      timeoutDuration: fetchTimeoutMs,
      [customFetch]: fetchImpl,
    });
  }

  function jwks(): Promise<JWTVerifyGetKey> {
    keySet ??= discover().catch((error) => {
      keySet = undefined;
      throw error;
    });
    return keySet;
  }

  /**
   * Verified tokens, oldest first, with the clock readings (epoch ms) at
   * which a verification would accept them: from `nbf` and `iat` (minus the
   * tolerance) until `exp` (plus the tolerance) or the end of the cache time.
   */
  const verified = new Map<string, { accessToken: AccessToken; fromMs: number; untilMs: number }>();

  function remember(token: string, accessToken: AccessToken, currentMs: number): void {
    if (verifiedCacheMs <= 0 || verifiedCacheSize <= 0) return;
    const { exp, nbf, iat } = accessToken.claims;
    const toleranceMs = clockToleranceSec * 1000;
    verified.delete(token);
    if (verified.size >= verifiedCacheSize) verified.delete(verified.keys().next().value!);
    verified.set(token, {
      accessToken,
      fromMs: Math.max(
        typeof nbf === "number" ? nbf * 1000 - toleranceMs : -Infinity,
        typeof iat === "number" ? iat * 1000 - toleranceMs : -Infinity,
      ),
      // jose accepts while floor(now in seconds) < exp + tolerance.
      untilMs: Math.min(currentMs + verifiedCacheMs, ((exp ?? 0) + clockToleranceSec) * 1000),
    });
  }

  function remembered(token: string, currentMs: number): AccessToken | undefined {
    const entry = verified.get(token);
    if (entry === undefined) return undefined;
    if (currentMs >= entry.fromMs && currentMs < entry.untilMs) return entry.accessToken;
    verified.delete(token);
    return undefined;
  }

  return {
    async verify(token: string): Promise<AccessToken> {
      const currentMs = now();
      const known = remembered(token, currentMs);
      if (known !== undefined) return known;
      try {
        const { payload } = await jwtVerify(token, await jwks(), {
          currentDate: new Date(currentMs),
          issuer,
          audience: [...expected.audience],
          algorithms: [...algorithms],
          clockTolerance: clockToleranceSec,
          requiredClaims: ["exp"],
        });
        if (typeof payload.iat === "number" && payload.iat > currentMs / 1000 + clockToleranceSec) {
          throw invalid(`The token was issued in the future, at ${isoSeconds(payload.iat)}`);
        }
        // Remembered, the same object goes to every request with this token: none may change it.
        const accessToken = frozen(toAccessToken(payload));
        remember(token, accessToken, currentMs);
        return accessToken;
      } catch (error) {
        throw describe(error, token, expected);
      }
    },
  };
}
