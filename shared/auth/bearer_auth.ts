/**
 * The bearer-token edge (RFC 6750): verifies the `Authorization: Bearer`
 * token, checks the realm roles, and turns token errors into problem
 * responses with the `WWW-Authenticate` challenge a client can act on.
 */
import type { MiddlewareHandler } from "hono";
import { ProblemError, problemResponse } from "../http/problem.ts";
import { type AccessToken, type JwtVerifier, TokenError } from "./jwt_verifier.ts";

/** The context variables `bearerAuth` sets: `c.get("accessToken")`. */
export type BearerAuthVariables = {
  /** The verified token; undefined only behind an `optional` bearerAuth with no token sent. */
  accessToken: AccessToken;
};

export interface BearerAuthEnv {
  Variables: BearerAuthVariables;
}

export interface BearerAuthOptions {
  /** Verifies the tokens, usually `createJwtVerifier(...)`. */
  readonly verifier: JwtVerifier;
  /**
   * The protection space named in the challenge.
   * @default "twitterapi"
   */
  readonly realm?: string;
  /**
   * Realm roles of which the token must carry at least one; 403 otherwise.
   * @default [] (any valid token)
   */
  readonly anyRole?: readonly string[];
  /**
   * Lets requests without a bearer token through, with no `accessToken`
   * set (and no role check); a bearer token that is sent must still be valid.
   * @default false
   */
  readonly optional?: boolean;
}

/** A quoted-string of the challenge: RFC 6750 allows only printable ASCII except `"` and `\`. */
function quoted(value: string): string {
  return `"${value.replace(/[^\x20\x21\x23-\x5B\x5D-\x7E]/g, "'")}"`;
}

function challenge(realm: string, error?: { code: string; description: string }): string {
  const parts = [`realm=${quoted(realm)}`];
  if (error !== undefined) {
    parts.push(`error=${quoted(error.code)}`, `error_description=${quoted(error.description)}`);
  }
  return `Bearer ${parts.join(", ")}`;
}

function unauthorized(realm: string, description?: string): ProblemError {
  return new ProblemError({
    status: 401,
    code: "unauthorized",
    title: "Authentication required",
    detail: description ?? "The request needs an access token: Authorization: Bearer <token>",
    headers: {
      "www-authenticate": challenge(
        realm,
        description === undefined ? undefined : { code: "invalid_token", description },
      ),
    },
  });
}

function forbidden(realm: string, anyRole: readonly string[]): ProblemError {
  const description = `The token carries none of the roles ${anyRole.join(", ")}`;
  return new ProblemError({
    status: 403,
    code: "forbidden",
    title: "Permission denied",
    detail: description,
    extensions: { requiredRoles: anyRole },
    headers: {
      "www-authenticate": challenge(realm, { code: "insufficient_scope", description }),
    },
  });
}

/** 503; the description (it names internal addresses) stays out of the response. */
function unavailable(): ProblemError {
  return new ProblemError({
    status: 503,
    code: "unavailable",
    title: "Authentication unavailable",
    detail: "Cannot verify the access token now: the issuer's keys cannot be read; try again",
    headers: { "retry-after": "5" },
  });
}

/** The bearer token of the header; undefined for another scheme; "" for `Bearer` alone. */
function bearerToken(authorization: string): string | undefined {
  const match = /^Bearer(?:\s+(.*))?$/i.exec(authorization.trim());
  if (match === null) return undefined;
  return (match[1] ?? "").trim();
}

/** Hono middleware that admits requests with a valid access token (and one of the roles). */
export function bearerAuth(options: BearerAuthOptions): MiddlewareHandler<BearerAuthEnv> {
  const { verifier, realm = "twitterapi", anyRole = [], optional = false } = options;

  return async function bearerAuth(c, next) {
    const authorization = c.req.header("authorization");
    const token = authorization === undefined ? undefined : bearerToken(authorization);
    if (token === undefined) {
      // No bearer token at all (no header, or another scheme): the bare challenge.
      if (optional) return await next();
      return problemResponse(unauthorized(realm), c.req.path);
    }
    if (token === "" || /\s/.test(token)) {
      return problemResponse(
        unauthorized(realm, "The Authorization header has no single bearer token"),
        c.req.path,
      );
    }
    let accessToken: AccessToken;
    try {
      accessToken = await verifier.verify(token);
    } catch (error) {
      if (!(error instanceof TokenError)) throw error;
      const problem = error.code === "unavailable"
        ? unavailable()
        : unauthorized(realm, error.description);
      return problemResponse(problem, c.req.path);
    }
    if (anyRole.length > 0 && !anyRole.some((role) => accessToken.roles.includes(role))) {
      return problemResponse(forbidden(realm, anyRole), c.req.path);
    }
    c.set("accessToken", accessToken);
    await next();
  };
}
