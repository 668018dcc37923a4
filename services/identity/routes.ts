/**
 * The declarations of the issuer's endpoints, for its `/openapi.json`: their
 * parameters (validated by these schemas), and every answer in the
 * protocol's own format: RFC 6749 error bodies from the token and userinfo
 * endpoints, HTML pages and redirects from the browser endpoints.
 */
import { bearerSecurity, createRoute, problemResponses, z } from "../../shared/http/openapi.ts";
import { OAuthErrorSchema, optionalParam, requiredParam } from "./oauth.ts";
import { SIGNING_ALGORITHMS } from "./realm.ts";

/** The client authentication of `client_secret_basic`, registered beside `bearerAuth`. */
export const CLIENT_BASIC_AUTH = "clientSecretBasic";

export const GRANT_TYPES = [
  "authorization_code",
  "client_credentials",
  "password",
  "refresh_token",
] as const;

const TAG = "openid-connect";

const NO_STORE_HEADERS = z.object({
  "cache-control": z.literal("no-store"),
  pragma: z.literal("no-cache"),
});

const LOCATION_HEADERS = z.object({
  location: z.string().openapi({ description: "Where the browser goes next" }),
});

const html = (description: string) => ({
  description,
  content: { "text/html": { schema: z.string() } },
});

const oauthError = (description: string) => ({
  description,
  headers: NO_STORE_HEADERS,
  content: { "application/json": { schema: OAuthErrorSchema } },
});

const OpenIdConfigurationSchema = z.object({
  issuer: z.url(),
  authorization_endpoint: z.url(),
  token_endpoint: z.url(),
  userinfo_endpoint: z.url(),
  end_session_endpoint: z.url(),
  jwks_uri: z.url(),
  grant_types_supported: z.array(z.enum(GRANT_TYPES)),
  response_types_supported: z.array(z.literal("code")),
  response_modes_supported: z.array(z.literal("query")),
  subject_types_supported: z.array(z.literal("public")),
  id_token_signing_alg_values_supported: z.array(z.enum(SIGNING_ALGORITHMS)),
  token_endpoint_auth_methods_supported: z.array(
    z.enum(["client_secret_basic", "client_secret_post"]),
  ),
  code_challenge_methods_supported: z.array(z.literal("S256")),
  scopes_supported: z.array(z.string()),
  claims_supported: z.array(z.string()),
  claims_parameter_supported: z.boolean(),
  request_parameter_supported: z.boolean(),
  authorization_response_iss_parameter_supported: z.boolean(),
}).openapi("OpenIdConfiguration", { description: "OpenID Connect Discovery 1.0 metadata" });

const JwksSchema = z.object({
  keys: z.array(
    z.object({
      kty: z.enum(["RSA", "EC"]),
      kid: z.string(),
      alg: z.enum(SIGNING_ALGORITHMS),
      use: z.literal("sig"),
    }).catchall(z.unknown()).openapi({ description: "A public JWK (RFC 7517)" }),
  ),
}).openapi("JsonWebKeySet");

const TokenResponseSchema = z.object({
  access_token: z.string(),
  token_type: z.literal("Bearer"),
  expires_in: z.int().min(0),
  scope: z.string().openapi({ example: "openid profile email" }),
  id_token: z.string().optional().openapi({ description: "With the scope `openid`" }),
  refresh_token: z.string().optional().openapi({
    description: "For a person's grant (password, authorization_code, refresh_token)",
  }),
  refresh_expires_in: z.int().min(0).optional(),
  session_state: z.string().optional(),
  "not-before-policy": z.literal(0),
}).openapi("TokenResponse", { description: "RFC 6749 section 5.1, in Keycloak's shape" });

const UserinfoSchema = z.object({
  sub: z.string(),
  name: z.string().optional(),
  preferred_username: z.string().optional(),
  given_name: z.string().optional(),
  family_name: z.string().optional(),
  email: z.string().optional(),
  email_verified: z.boolean().optional(),
}).openapi("Userinfo", { description: "The claims of the token's profile and email scopes" });

const described = <S extends z.ZodType>(schema: S, description: string, example?: string) =>
  schema.openapi(example === undefined ? { description } : { description, example });

const TokenForm = z.object({
  grant_type: described(requiredParam(), "The grant", "client_credentials").openapi({
    enum: [...GRANT_TYPES],
  }),
  client_id: described(
    optionalParam(),
    "The client (client_secret_post, or a public client); else in Basic authorization",
    "query-service",
  ),
  client_secret: described(optionalParam(), "The client's secret (client_secret_post)"),
  scope: described(optionalParam(), "Space-separated scopes", "openid"),
  username: described(optionalParam(), "For `password`: the user's name or e-mail"),
  password: described(optionalParam(), "For `password`: the user's password"),
  code: described(optionalParam(), "For `authorization_code`: the code from the redirect"),
  redirect_uri: described(
    optionalParam(),
    "For `authorization_code`: the redirect URI of the authorization request",
  ),
  code_verifier: described(
    optionalParam(),
    "For `authorization_code`: the PKCE verifier (RFC 7636) of the code challenge",
  ),
  refresh_token: described(optionalParam(), "For `refresh_token`: the refresh token"),
}).openapi("TokenRequest");

const AuthorizationParams = z.object({
  response_type: described(optionalParam(), "Only `code`", "code"),
  client_id: described(optionalParam(), "The client", "console"),
  redirect_uri: described(optionalParam(), "One of the client's registered redirect URIs"),
  scope: described(optionalParam(), "Space-separated scopes", "openid"),
  state: described(optionalParam(), "Returned to the client unchanged"),
  response_mode: described(optionalParam(), "Only `query`", "query"),
  code_challenge: described(
    optionalParam(),
    "PKCE (RFC 7636): the S256 challenge, 43 to 128 unreserved characters; required",
  ),
  code_challenge_method: described(optionalParam(), "Only `S256`; required", "S256"),
  nonce: described(optionalParam(), "Copied into the ID token"),
  login_hint: described(optionalParam(), "The user to sign in, prefilled in the form"),
});

const LoginForm = AuthorizationParams.extend({
  username: described(optionalParam(), "The user's name or e-mail"),
  password: described(optionalParam(), "The user's password"),
}).openapi("LoginForm");

const LogoutParams = z.object({
  id_token_hint: described(optionalParam(), "An ID token of the session to end"),
  client_id: described(optionalParam(), "The client, when there is no id_token_hint"),
  post_logout_redirect_uri: described(
    optionalParam(),
    "One of the client's registered post-logout redirect URIs",
  ),
  state: described(optionalParam(), "Returned with the redirect"),
});

const form = <S extends z.ZodType>(schema: S) => ({
  required: true,
  content: { "application/x-www-form-urlencoded": { schema } },
});

const AUTHORIZE_DESCRIPTION = "The authorization code flow with PKCE (S256 only). A request " +
  "that cannot go back to the client (unknown client, unregistered redirect URI) gets an " +
  "HTML error page; any other error goes to the redirect URI as `error` and " +
  "`error_description`, with `state` and `iss` (RFC 9207).";

const LOGOUT_DESCRIPTION = "OpenID Connect RP-Initiated Logout 1.0: ends the session of the " +
  "`id_token_hint`, then redirects to `post_logout_redirect_uri` (with `state`) when the " +
  "client registered it, else shows that the user is signed out.";

/** The issuer's routes under `base` (`/realms/<realm>`). */
export function identityRoutes(base: string) {
  const oidc = `${base}/protocol/openid-connect`;
  return {
    discovery: createRoute({
      method: "get",
      path: `${base}/.well-known/openid-configuration`,
      operationId: "openIdConfiguration",
      summary: "OpenID Connect discovery",
      tags: [TAG],
      responses: {
        200: {
          description: "The issuer's metadata",
          content: { "application/json": { schema: OpenIdConfigurationSchema } },
        },
      },
    }),
    certs: createRoute({
      method: "get",
      path: `${oidc}/certs`,
      operationId: "jwks",
      summary: "The issuer's signing keys (JWKS)",
      description: "Retired keys stay listed while tokens they signed may be valid.",
      tags: [TAG],
      responses: {
        200: {
          description: "The public keys",
          headers: z.object({ "cache-control": z.literal("no-cache") }),
          content: { "application/json": { schema: JwksSchema } },
        },
      },
    }),
    authorize: createRoute({
      method: "get",
      path: `${oidc}/auth`,
      operationId: "authorize",
      summary: "Authorization endpoint: the login form",
      description: AUTHORIZE_DESCRIPTION +
        " With a development `login_hint` (IDENTITY_AUTO_APPROVE_LOGIN_HINT) the user is " +
        "signed in at once.",
      tags: [TAG],
      request: { query: AuthorizationParams },
      responses: {
        200: html("The login form"),
        302: {
          description: "To the redirect URI with a code or an error",
          headers: LOCATION_HEADERS,
        },
        400: html("The request cannot go back to the client"),
      },
    }),
    login: createRoute({
      method: "post",
      path: `${oidc}/auth`,
      operationId: "login",
      summary: "Authorization endpoint: the login form's submission",
      description: AUTHORIZE_DESCRIPTION,
      tags: [TAG],
      request: { body: form(LoginForm) },
      responses: {
        302: { description: "To the redirect URI with an error", headers: LOCATION_HEADERS },
        303: {
          description: "Signed in: to the redirect URI with a code",
          headers: LOCATION_HEADERS,
        },
        400: html("The request cannot go back to the client"),
        401: html("The login form again: invalid username or password"),
        ...problemResponses(413),
      },
    }),
    token: createRoute({
      method: "post",
      path: `${oidc}/token`,
      operationId: "token",
      summary: "Token endpoint",
      description: "Grants `client_credentials`, `password`, `authorization_code` (with the " +
        "PKCE verifier) and `refresh_token`. A confidential client authenticates by HTTP Basic " +
        "or `client_secret`; a public client names itself by `client_id`.",
      tags: [TAG],
      security: [{ [CLIENT_BASIC_AUTH]: [] }, {}],
      request: { body: form(TokenForm) },
      responses: {
        200: {
          description: "The tokens",
          headers: NO_STORE_HEADERS,
          content: { "application/json": { schema: TokenResponseSchema } },
        },
        400: oauthError(
          "invalid_request, invalid_grant, invalid_scope, unauthorized_client or " +
            "unsupported_grant_type",
        ),
        401: oauthError("invalid_client; `WWW-Authenticate: Basic` after Basic authorization"),
        ...problemResponses(413),
      },
    }),
    userinfo: userinfoRoute(oidc, "get"),
    userinfoPost: userinfoRoute(oidc, "post"),
    logout: createRoute({
      method: "get",
      path: `${oidc}/logout`,
      operationId: "logout",
      summary: "End session",
      description: LOGOUT_DESCRIPTION,
      tags: [TAG],
      request: { query: LogoutParams },
      responses: logoutResponses(false),
    }),
    logoutForm: createRoute({
      method: "post",
      path: `${oidc}/logout`,
      operationId: "logoutForm",
      summary: "End session (form)",
      description: LOGOUT_DESCRIPTION,
      tags: [TAG],
      request: { body: form(LogoutParams.openapi("LogoutForm")) },
      responses: logoutResponses(true),
    }),
  };
}

function userinfoRoute<M extends "get" | "post">(oidc: string, method: M) {
  return createRoute({
    method,
    path: `${oidc}/userinfo`,
    operationId: method === "get" ? "userinfo" : "userinfoPost",
    summary: "The claims of an access token's user",
    tags: [TAG],
    security: bearerSecurity,
    responses: {
      200: {
        description: "The user's claims",
        headers: NO_STORE_HEADERS,
        content: { "application/json": { schema: UserinfoSchema } },
      },
      401: oauthError("invalid_request (no token) or invalid_token, with `WWW-Authenticate`"),
    },
  });
}

function logoutResponses(withBody: boolean) {
  return {
    200: html("Signed out"),
    302: { description: "To the post-logout redirect URI", headers: LOCATION_HEADERS },
    400: html("An invalid hint or redirect URI"),
    ...(withBody ? problemResponses(413) : {}),
  };
}
