/**
 * The OpenID Connect endpoints in Keycloak's URL layout, so that a client
 * switches between this issuer and Keycloak by base URL only:
 *
 *   /realms/{realm}/.well-known/openid-configuration  discovery
 *   /realms/{realm}/protocol/openid-connect/certs     JWKS
 *   /realms/{realm}/protocol/openid-connect/auth      authorization: code with PKCE
 *   /realms/{realm}/protocol/openid-connect/token     client_credentials, password, code
 *   /realms/{realm}/protocol/openid-connect/userinfo  userinfo for a bearer token
 *   /realms/{realm}/protocol/openid-connect/logout    end session (RP-initiated logout)
 *
 * OAuth errors are RFC 6749 `{error, error_description}`; anything else
 * (an unknown realm or path) is problem+json like every service's.
 */
import type { Context, MiddlewareHandler } from "hono";
import { createLocalJWKSet, type JWTPayload, jwtVerify } from "jose";
import { mountRoute, type OpenAPIHono, type RouteConfig } from "../../shared/http/openapi.ts";
import { notFound } from "../../shared/http/problem.ts";
import { noRouteProblem } from "../../shared/http/service_app.ts";
import type { Logger } from "../../shared/log/log.ts";
import type { MetricsRegistry } from "../../shared/metrics/metrics.ts";
import {
  AuthorizationCodes,
  AuthorizationPageError,
  AuthorizationRedirectError,
  errorPage,
  loginPage,
  readAuthorizationRequest,
  redirectLocation,
  signedOutPage,
  verifierMatches,
} from "./authorization.ts";
import type { KeyRing } from "./key_ring.ts";
import {
  authenticateClient,
  invalidGrant,
  isFormBody,
  NO_STORE,
  notAForm,
  OAuthError,
  oauthErrorResponse,
  presentParams,
  refusedParams,
  requireParam,
  secretsEqual,
} from "./oauth.ts";
import {
  allowedOrigins,
  findPerson,
  type GrantedScopes,
  grantScopes,
  isAllowedOrigin,
  isRegisteredPostLogoutRedirect,
  type Realm,
  type RealmClient,
  type RealmUser,
  ScopeError,
  serviceAccount,
  SIGNING_ALGORITHMS,
} from "./realm.ts";
import { CLIENT_BASIC_AUTH, GRANT_TYPES, identityRoutes } from "./routes.ts";
import { type UserSession, UserSessions } from "./sessions.ts";
import { issueTokens, userClaims } from "./tokens.ts";

export interface IdentityRoutesOptions {
  readonly realm: Realm;
  readonly keys: KeyRing;
  readonly logger: Logger;
  readonly metrics: MetricsRegistry;
  /** Base URL of the issuer (`<publicUrl>/realms/<realm>`); undefined: the request's origin. */
  readonly publicUrl: string | undefined;
  /** Whether `auth` signs in the user named by `login_hint` without a password. */
  readonly autoApproveLoginHint: boolean;
  /**
   * The clock.
   * @default Date.now
   */
  readonly now?: () => number;
}

/** A password that matches nothing: compared against when a user is unknown, to take the same time. */
const NO_PASSWORD = crypto.randomUUID();

/** How a protocol endpoint answers a request it refuses. */
type Refusal = (c: Context, error: OAuthError) => Response;

/** The browser endpoints refuse with the HTML error page. */
const refuseWithPage: Refusal = (_c, error) =>
  errorPage(new AuthorizationPageError(error.error, error.description));

/**
 * Mounts a protocol endpoint whose parameters (its query, or its form body)
 * the route's schemas validate; what they refuse, and a body that is not a
 * form, is answered as the protocol answers (`refuse`), not as a problem.
 * The handler gets the parameters given, those without a value omitted.
 */
function mountProtocolRoute(
  app: OpenAPIHono,
  route: RouteConfig,
  refuse: Refusal,
  handler: (c: Context, params: ReadonlyMap<string, string>) => Response | Promise<Response>,
): void {
  const target = route.request?.body === undefined ? "query" : "form";
  const formOnly: MiddlewareHandler = async (c, next) => {
    if (!isFormBody(c.req.header("content-type"))) return refuse(c, notAForm());
    await next();
  };
  app.openapi(
    { ...route, middleware: target === "form" ? [formOnly] : [] },
    ((c: Context) => handler(c, presentParams(c.req.valid(target as never)))) as never,
    ((result: { success: boolean; error?: { issues: [] } }, c: Context) =>
      result.success ? undefined : refuse(c, refusedParams(result.error?.issues ?? []))) as never,
  );
}

export function addIdentityRoutes(app: OpenAPIHono, options: IdentityRoutesOptions): OpenAPIHono {
  const { realm, keys, logger, autoApproveLoginHint } = options;
  const now = options.now ?? Date.now;
  const codes = new AuthorizationCodes();
  const sessions = new UserSessions(
    realm.ssoSessionIdleTimeoutSeconds,
    realm.ssoSessionMaxLifespanSeconds,
  );
  const base = `/realms/${realm.name}`;
  const issued = options.metrics.counter(
    "identity_tokens_issued_total",
    "Access tokens issued, by grant type and client.",
  );
  const refused = options.metrics.counter(
    "identity_token_errors_total",
    "Token requests refused, by OAuth error code.",
  );
  const browserOrigins = new Set([...realm.clients.values()].flatMap(allowedOrigins));
  const scopesSupported = [
    ...new Set([
      "openid",
      ...[...realm.clients.values()].flatMap((client) => [
        ...client.defaultScopes,
        ...client.optionalScopes,
      ]),
    ]),
  ];

  const routes = identityRoutes(base);
  app.openAPIRegistry.registerComponent("securitySchemes", CLIENT_BASIC_AUTH, {
    type: "http",
    scheme: "basic",
    description: "client_secret_basic: the client id and secret, form-encoded",
  });

  function issuerOf(c: Context): string {
    return `${options.publicUrl ?? new URL(c.req.url).origin}${base}`;
  }

  /** An RFC 6749 error response, counted and logged. */
  const refuseOAuth: Refusal = (c, error) => {
    refused.inc({ error: error.error });
    logger.info("Refused {path}: {error} ({description})", {
      path: c.req.path,
      error: error.error,
      description: error.description,
    });
    return oauthErrorResponse(error);
  };

  /** Runs an OAuth endpoint: its OAuthErrors become RFC 6749 responses. */
  function oauth<A extends unknown[]>(handler: (c: Context, ...rest: A) => Promise<Response>) {
    return async function oauthEndpoint(c: Context, ...rest: A): Promise<Response> {
      try {
        return await handler(c, ...rest);
      } catch (error) {
        if (!(error instanceof OAuthError)) throw error;
        return refuseOAuth(c, error);
      }
    };
  }

  // Browsers may read the public documents from anywhere, and call the token
  // and userinfo endpoints from the clients' web origins.
  app.use(`${base}/*`, async function cors(c, next) {
    const origin = c.req.header("origin");
    const isPublic = c.req.path.endsWith("/openid-configuration") ||
      c.req.path.endsWith("/certs");
    let allowed: string | undefined;
    if (isPublic) allowed = "*";
    else if (origin !== undefined && isAllowedOrigin(browserOrigins, origin)) allowed = origin;
    if (c.req.method === "OPTIONS" && allowed !== undefined) {
      return new Response(null, {
        status: 204,
        headers: {
          "access-control-allow-origin": allowed,
          "access-control-allow-methods": "GET, POST, OPTIONS",
          // Keycloak's list: Swagger UI's token request sends X-Requested-With.
          "access-control-allow-headers": "Authorization, Content-Type, Accept, X-Requested-With",
          "access-control-max-age": "3600",
          vary: "Origin",
        },
      });
    }
    await next();
    if (allowed !== undefined) {
      c.res.headers.set("access-control-allow-origin", allowed);
      c.res.headers.append("vary", "Origin");
    }
  });

  mountRoute(app, routes.discovery, (c) => {
    const issuer = issuerOf(c);
    const endpoint = `${issuer}/protocol/openid-connect`;
    return c.json({
      issuer,
      authorization_endpoint: `${endpoint}/auth`,
      token_endpoint: `${endpoint}/token`,
      userinfo_endpoint: `${endpoint}/userinfo`,
      end_session_endpoint: `${endpoint}/logout`,
      jwks_uri: `${endpoint}/certs`,
      grant_types_supported: GRANT_TYPES,
      response_types_supported: ["code"],
      response_modes_supported: ["query"],
      subject_types_supported: ["public"],
      id_token_signing_alg_values_supported: SIGNING_ALGORITHMS,
      token_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post"],
      code_challenge_methods_supported: ["S256"],
      scopes_supported: scopesSupported,
      claims_supported: [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "azp",
        "scope",
        "realm_access",
        "preferred_username",
        "name",
        "given_name",
        "family_name",
        "email",
        "email_verified",
        "nonce",
      ],
      claims_parameter_supported: false,
      request_parameter_supported: false,
      authorization_response_iss_parameter_supported: true,
    });
  });

  mountRoute(app, routes.certs, (c) => {
    c.header("cache-control", "no-cache");
    return c.json(keys.jwks());
  });

  // Authorization endpoint: GET shows the login form (or, for a development
  // login_hint, signs in at once); POST is the form's submission.
  function authorize(
    c: Context,
    params: ReadonlyMap<string, string>,
    submitted: boolean,
  ): Response {
    const issuer = issuerOf(c);
    try {
      const request = readAuthorizationRequest(realm, params);
      let user: RealmUser | undefined;
      if (submitted) {
        const login = params.get("username") ?? "";
        user = findPerson(realm, login);
        const valid = secretsEqual(params.get("password") ?? "", user?.password ?? NO_PASSWORD) &&
          user?.password !== undefined && user.enabled;
        if (!valid) {
          logger.info("Login failed for {username} through {client}", {
            username: login,
            client: request.client.clientId,
          });
          return loginPage(realm, request, {
            username: login,
            error: "Invalid username or password.",
            status: 401,
          });
        }
      } else if (autoApproveLoginHint && request.loginHint !== undefined) {
        user = findPerson(realm, request.loginHint);
        if (user !== undefined && !user.enabled) user = undefined;
      }
      if (user === undefined) return loginPage(realm, request);
      const code = codes.issue({
        clientId: request.client.clientId,
        redirectUri: request.redirectUri,
        codeChallenge: request.codeChallenge,
        user,
        scopes: request.scopes,
        nonce: request.nonce,
        expiresAt: now() + realm.accessCodeLifespanSeconds * 1000,
      }, now());
      logger.info("Signed in {username} through {client}", {
        username: user.username,
        client: request.client.clientId,
      });
      const location = redirectLocation(request.redirectUri, request.state, issuer, { code });
      return new Response(null, {
        status: submitted ? 303 : 302,
        headers: { ...NO_STORE, location },
      });
    } catch (error) {
      if (error instanceof AuthorizationPageError) return errorPage(error);
      if (error instanceof AuthorizationRedirectError) {
        const location = redirectLocation(error.redirectUri, error.state, issuer, {
          error: error.error,
          error_description: error.description,
        });
        return new Response(null, { status: 302, headers: { ...NO_STORE, location } });
      }
      if (error instanceof OAuthError) {
        return errorPage(new AuthorizationPageError(error.error, error.description));
      }
      throw error;
    }
  }

  mountProtocolRoute(
    app,
    routes.authorize,
    refuseWithPage,
    (c, params) => authorize(c, params, false),
  );
  mountProtocolRoute(app, routes.login, refuseWithPage, (c, params) => authorize(c, params, true));

  function scopesFor(client: RealmClient, params: ReadonlyMap<string, string>): GrantedScopes {
    try {
      return grantScopes(client, params.get("scope"));
    } catch (error) {
      if (error instanceof ScopeError) throw new OAuthError(400, "invalid_scope", error.message);
      throw error;
    }
  }

  interface Grant {
    readonly user: RealmUser;
    readonly scopes: GrantedScopes;
    readonly nonce?: string | undefined;
    /** A person's grant starts (or, refreshed, continues) a session with a refresh token. */
    readonly session?: UserSession;
  }

  function refreshToken(client: RealmClient, params: ReadonlyMap<string, string>): Grant {
    const token = requireParam(params, "refresh_token");
    const session = sessions.refresh(token, now());
    if (session === undefined) throw invalidGrant("Invalid refresh token");
    if (session.clientId !== client.clientId) {
      throw invalidGrant("Invalid refresh token. Token client and authorized client don't match");
    }
    const user = realm.users.get(session.username);
    if (user === undefined || !user.enabled) {
      sessions.end(session.id);
      throw invalidGrant("Account disabled");
    }
    return { user, scopes: session.scopes, session };
  }

  function withSession(client: RealmClient, grant: Grant): Grant {
    const session = sessions.start({
      clientId: client.clientId,
      username: grant.user.username,
      scopes: grant.scopes,
    }, now());
    return { ...grant, session };
  }

  async function clientCredentials(client: RealmClient, params: ReadonlyMap<string, string>) {
    if (client.publicClient) {
      throw new OAuthError(
        400,
        "unauthorized_client",
        "Public client not allowed to retrieve service account",
      );
    }
    if (!client.serviceAccountsEnabled) {
      throw new OAuthError(
        400,
        "unauthorized_client",
        "Client not enabled to retrieve service account",
      );
    }
    const scopes = scopesFor(client, params);
    return { user: await serviceAccount(realm, client), scopes };
  }

  function password(client: RealmClient, params: ReadonlyMap<string, string>): Grant {
    if (!client.directAccessGrantsEnabled) {
      throw new OAuthError(
        400,
        "unauthorized_client",
        "Client not allowed for direct access grants",
      );
    }
    const username = requireParam(params, "username");
    const given = requireParam(params, "password");
    const scopes = scopesFor(client, params);
    const user = findPerson(realm, username);
    const matches = secretsEqual(given, user?.password ?? NO_PASSWORD);
    if (user === undefined || user.password === undefined || !matches) {
      throw invalidGrant("Invalid user credentials");
    }
    if (!user.enabled) throw invalidGrant("Account disabled");
    return { user, scopes };
  }

  async function authorizationCode(
    client: RealmClient,
    params: ReadonlyMap<string, string>,
  ): Promise<Grant> {
    if (!client.standardFlowEnabled) {
      throw new OAuthError(400, "unauthorized_client", "Client not allowed the code flow");
    }
    const code = requireParam(params, "code");
    const redirectUri = requireParam(params, "redirect_uri");
    const verifier = requireParam(params, "code_verifier");
    const pending = codes.redeem(code, now());
    if (pending === undefined) throw invalidGrant("Code not valid");
    if (pending.clientId !== client.clientId) {
      throw invalidGrant("Code was issued to another client");
    }
    if (pending.redirectUri !== redirectUri) throw invalidGrant("Incorrect redirect_uri");
    if (!(await verifierMatches(verifier, pending.codeChallenge))) {
      throw invalidGrant("PKCE verification failed: code_verifier does not match");
    }
    const user = realm.users.get(pending.user.username);
    if (user === undefined || !user.enabled) throw invalidGrant("Account disabled");
    return { user, scopes: pending.scopes, nonce: pending.nonce };
  }

  mountProtocolRoute(
    app,
    routes.token,
    refuseOAuth,
    oauth(async (c, params: ReadonlyMap<string, string>) => {
      const client = authenticateClient(realm, params, c.req.header("authorization"));
      const grantType = requireParam(params, "grant_type");
      let grant: Grant;
      switch (grantType) {
        case "client_credentials":
          grant = await clientCredentials(client, params);
          break;
        case "password":
          grant = withSession(client, password(client, params));
          break;
        case "authorization_code":
          grant = withSession(client, await authorizationCode(client, params));
          break;
        case "refresh_token":
          grant = refreshToken(client, params);
          break;
        default:
          throw new OAuthError(
            400,
            "unsupported_grant_type",
            `Unsupported grant_type: ${grantType}`,
          );
      }
      const response = await issueTokens(keys, {
        issuer: issuerOf(c),
        client,
        user: grant.user,
        scopes: grant.scopes,
        lifespanSeconds: realm.accessTokenLifespanSeconds,
        now: now(),
        nonce: grant.nonce,
        session: grant.session === undefined ? undefined : {
          id: grant.session.id,
          refreshToken: grant.session.refreshToken,
          refreshExpiresInSeconds: sessions.refreshExpiresIn(grant.session, now()),
        },
      });
      issued.inc({ grant_type: grantType, client: client.clientId });
      logger.debug("Issued a {grantType} token to {client} for {username}", {
        grantType,
        client: client.clientId,
        username: grant.user.username,
      });
      return new Response(JSON.stringify(response), {
        headers: { ...NO_STORE, "content-type": "application/json" },
      });
    }),
  );

  /** The user a valid access token of this issuer stands for; throws 401 invalid_token. */
  async function tokenUser(c: Context): Promise<{ user: RealmUser; payload: JWTPayload }> {
    const authorization = c.req.header("authorization");
    const token = /^bearer\s+(\S+)$/i.exec(authorization ?? "")?.[1];
    if (token === undefined) {
      throw new OAuthError(401, "invalid_request", "Token not provided", {
        "www-authenticate": `Bearer realm="${realm.name}"`,
      });
    }
    const invalid = (description: string) =>
      new OAuthError(401, "invalid_token", description, {
        "www-authenticate": `Bearer realm="${realm.name}", error="invalid_token", ` +
          `error_description="${description.replaceAll('"', "'")}"`,
      });
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, createLocalJWKSet(keys.jwks()), {
        issuer: issuerOf(c),
        algorithms: [...SIGNING_ALGORITHMS],
        currentDate: new Date(now()),
      }));
    } catch (error) {
      throw invalid(`Token verification failed: ${(error as Error).message}`);
    }
    if (payload.typ !== "Bearer") throw invalid("Not an access token");
    const user = [...realm.users.values()].find((candidate) => candidate.id === payload.sub) ??
      await accountOfClient(payload.azp);
    if (user === undefined || user.id !== payload.sub || !user.enabled) {
      throw invalid("User not found or disabled");
    }
    return { user, payload };
  }

  async function accountOfClient(clientId: unknown): Promise<RealmUser | undefined> {
    const client = typeof clientId === "string" ? realm.clients.get(clientId) : undefined;
    return client?.serviceAccountsEnabled ? await serviceAccount(realm, client) : undefined;
  }

  const userinfo = oauth(async (c) => {
    const { user, payload } = await tokenUser(c);
    const scopes = new Set(typeof payload.scope === "string" ? payload.scope.split(" ") : []);
    return new Response(JSON.stringify({ sub: user.id, ...userClaims(user, scopes) }), {
      headers: { ...NO_STORE, "content-type": "application/json" },
    });
  });
  mountRoute(app, routes.userinfo, userinfo);
  mountRoute(app, routes.userinfoPost, userinfo);

  /**
   * RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): ends the
   * session named by the ID token's `sid` (the hint's signature is checked,
   * its expiry is not: a logout comes after the token's life too), then sends
   * the browser to `post_logout_redirect_uri` with `state`, when the client
   * registered it, else shows that the user is signed out.
   */
  async function endSession(c: Context, params: ReadonlyMap<string, string>): Promise<Response> {
    const hint = params.get("id_token_hint");
    let payload: JWTPayload | undefined;
    if (hint !== undefined) {
      try {
        ({ payload } = await jwtVerify(hint, createLocalJWKSet(keys.jwks()), {
          issuer: issuerOf(c),
          algorithms: [...SIGNING_ALGORITHMS],
          currentDate: new Date(0),
        }));
      } catch (error) {
        return errorPage(
          new AuthorizationPageError(
            "invalid_request",
            `Invalid id_token_hint: ${(error as Error).message}`,
          ),
        );
      }
      if (payload.typ !== "ID") {
        return errorPage(new AuthorizationPageError("invalid_request", "Not an ID token"));
      }
    }
    const clientId = params.get("client_id") ??
      (typeof payload?.azp === "string" ? payload.azp : undefined);
    const client = clientId === undefined ? undefined : realm.clients.get(clientId);
    const redirect = params.get("post_logout_redirect_uri");
    if (redirect !== undefined) {
      if (client === undefined) {
        return errorPage(
          new AuthorizationPageError(
            "invalid_request",
            "post_logout_redirect_uri needs id_token_hint or client_id",
          ),
        );
      }
      if (!isRegisteredPostLogoutRedirect(client, redirect)) {
        return errorPage(
          new AuthorizationPageError("invalid_request", "Invalid redirect uri"),
        );
      }
    }
    const sid = typeof payload?.sid === "string" ? payload.sid : undefined;
    const ended = sid !== undefined && sessions.end(sid);
    logger.info("Logout through {client}: session {outcome}", {
      client: clientId ?? "(no client)",
      outcome: ended ? "ended" : "already gone",
    });
    if (redirect === undefined) return signedOutPage();
    const location = new URL(redirect);
    const state = params.get("state");
    if (state !== undefined) location.searchParams.set("state", state);
    return new Response(null, { status: 302, headers: { ...NO_STORE, location: location.href } });
  }

  mountProtocolRoute(app, routes.logout, refuseWithPage, endSession);
  mountProtocolRoute(app, routes.logoutForm, refuseWithPage, endSession);

  app.all("/realms/:realm/*", (c) => {
    if (c.req.param("realm") !== realm.name) {
      throw notFound(`No realm named ${c.req.param("realm")}; this issuer serves ${realm.name}`);
    }
    throw noRouteProblem(app, c.req.method, c.req.path);
  });

  return app;
}
