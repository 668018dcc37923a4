/**
 * An OpenID Connect issuer on loopback for tests of the token kernel
 * (verifier, bearer middleware, client credentials) over real HTTP: the
 * discovery document, a key set with rotation, and a token endpoint with the
 * password grant (the realm file's people, through its console client) and
 * the client-credentials grant (its confidential clients), on a clock the
 * test moves. Users, secrets, audiences and realm roles come from
 * `shared/auth/twitterapi-realm.json`, read as Keycloak reads it for these
 * two grants (composite roles expanded, roles limited to the client's scope
 * mappings). The identity service, the real issuer of development, is
 * tested against the same file and against Keycloak in services/identity/.
 */
import { exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from "jose";
import realmFile from "../auth/twitterapi-realm.json" with { type: "json" };
import { CONSOLE, REALM } from "./realm.ts";

export type SigningAlgorithm = "RS256" | "ES256";

export interface TestOidcIssuer extends AsyncDisposable {
  /** `http://127.0.0.1:<port>/realms/twitterapi`. */
  readonly issuer: string;
  readonly tokenEndpoint: string;
  readonly jwksUri: string;
  /** Epoch milliseconds of `iat` and `exp`; tests move it. */
  readonly clock: { now: number };
  /** Lifetime of the tokens it issues (the realm's `accessTokenLifespan`). */
  readonly lifetimeMs: number;
  /** Calls the issuer in process, without a connection (same answers). */
  readonly fetch: typeof fetch;
  /** Signs `claims` with the active key of `alg`. */
  sign(claims: JWTPayload, alg: SigningAlgorithm): Promise<string>;
  /** New active keys; the previous ones stay published. */
  rotateKeys(): Promise<void>;
  shutdown(): Promise<void>;
}

interface SigningKey {
  readonly kid: string;
  readonly alg: SigningAlgorithm;
  readonly privateKey: Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];
  readonly jwk: JWK;
}

interface Account {
  readonly id: string;
  readonly username: string;
  readonly password: string | undefined;
  readonly roles: readonly string[];
}

interface Client {
  readonly secret: string | undefined;
  readonly audiences: readonly string[];
  /** Realm roles its tokens may carry; undefined: every role. */
  readonly roleScope: ReadonlySet<string> | undefined;
  readonly account: Account | undefined;
}

type RealmUser = (typeof realmFile.users)[number] & {
  serviceAccountClientId?: string;
  credentials?: { value: string }[];
};

function expandRoles(names: readonly string[]): string[] {
  const composites = new Map<string, string[]>(
    realmFile.roles.realm.map((role) => [
      role.name,
      "composites" in role ? role.composites.realm : [],
    ]),
  );
  const result = new Set<string>();
  const pending = [...names];
  while (pending.length > 0) {
    const name = pending.pop()!;
    if (result.has(name)) continue;
    result.add(name);
    pending.push(...composites.get(name) ?? []);
  }
  return [...result];
}

function readRealm(): { people: Map<string, Account>; clients: Map<string, Client> } {
  const people = new Map<string, Account>();
  const serviceAccounts = new Map<string, Account>();
  for (const user of realmFile.users as RealmUser[]) {
    const account = {
      id: user.id,
      username: user.username,
      password: user.credentials?.[0]?.value,
      roles: expandRoles(user.realmRoles),
    };
    if (user.serviceAccountClientId === undefined) people.set(user.username, account);
    else serviceAccounts.set(user.serviceAccountClientId, account);
  }
  const clients = new Map<string, Client>();
  for (const client of realmFile.clients) {
    const mappings = realmFile.scopeMappings.filter((mapping) => mapping.client === client.clientId)
      .flatMap((mapping) => mapping.roles);
    clients.set(client.clientId, {
      secret: "secret" in client ? client.secret : undefined,
      audiences: client.protocolMappers.map((mapper) => mapper.config["included.custom.audience"]),
      roleScope: client.fullScopeAllowed === false ? new Set(expandRoles(mappings)) : undefined,
      account: serviceAccounts.get(client.clientId),
    });
  }
  return { people, clients };
}

function oauthError(status: number, error: string, description: string): Response {
  return Response.json({ error, error_description: description }, {
    status,
    headers: { "cache-control": "no-store" },
  });
}

async function newKey(alg: SigningAlgorithm): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  const kid = crypto.randomUUID();
  return { kid, alg, privateKey, jwk: { ...await exportJWK(publicKey), kid, alg, use: "sig" } };
}

/** The client of a token request: HTTP Basic or the form's client_id and client_secret. */
function clientOf(
  request: Request,
  params: URLSearchParams,
): { id: string | null; secret: string | null } {
  const authorization = request.headers.get("authorization") ?? "";
  const basic = /^Basic\s+(\S+)$/i.exec(authorization);
  if (basic !== null) {
    const [id = "", secret = ""] = atob(basic[1]!).split(":").map(decodeURIComponent);
    return { id, secret };
  }
  return { id: params.get("client_id"), secret: params.get("client_secret") };
}

/** Starts the issuer on 127.0.0.1 and a free port. */
export async function startTestOidcIssuer(): Promise<TestOidcIssuer> {
  const { people, clients } = readRealm();
  const clock = { now: Date.now() };
  const lifetimeSec = realmFile.accessTokenLifespan;
  let active = { RS256: await newKey("RS256"), ES256: await newKey("ES256") };
  const published: SigningKey[] = [active.RS256, active.ES256];
  let issuer = "";

  async function sign(claims: JWTPayload, alg: SigningAlgorithm): Promise<string> {
    const key = active[alg];
    return await new SignJWT(claims)
      .setProtectedHeader({ alg, kid: key.kid, typ: "JWT" })
      .sign(key.privateKey);
  }

  async function issue(
    account: Account,
    clientId: string,
    client: Client,
    scope: string,
  ): Promise<Response> {
    const scopeRoles = client.roleScope;
    const roles = account.roles.filter((role) => scopeRoles === undefined || scopeRoles.has(role));
    const iat = Math.floor(clock.now / 1000);
    const token = await sign({
      iss: issuer,
      sub: account.id,
      aud: client.audiences.length === 1 ? client.audiences[0]! : [...client.audiences],
      azp: clientId,
      typ: "Bearer",
      iat,
      exp: iat + lifetimeSec,
      scope,
      preferred_username: account.username,
      ...(roles.length > 0 ? { realm_access: { roles } } : {}),
    }, "RS256");
    return Response.json({
      access_token: token,
      token_type: "Bearer",
      expires_in: lifetimeSec,
      scope,
    }, { headers: { "cache-control": "no-store" } });
  }

  async function token(request: Request): Promise<Response> {
    const params = new URLSearchParams(await request.text());
    const { id, secret } = clientOf(request, params);
    const client = id === null ? undefined : clients.get(id);
    if (id === null || client === undefined) {
      return oauthError(401, "invalid_client", "Unknown client");
    }
    if (client.secret !== undefined && client.secret !== secret) {
      return oauthError(401, "invalid_client", "Invalid client credentials");
    }
    switch (params.get("grant_type")) {
      case "password": {
        if (id !== CONSOLE) return oauthError(400, "unauthorized_client", "No password grant");
        const person = people.get(params.get("username")?.toLowerCase() ?? "");
        if (person === undefined || person.password !== params.get("password")) {
          return oauthError(401, "invalid_grant", "Invalid user credentials");
        }
        return await issue(person, id, client, "openid profile email");
      }
      case "client_credentials":
        if (client.account === undefined || client.secret === undefined) {
          return oauthError(400, "unauthorized_client", "The client has no service account");
        }
        return await issue(client.account, id, client, "profile email");
      default:
        return oauthError(400, "unsupported_grant_type", "Unsupported grant type");
    }
  }

  async function handle(request: Request): Promise<Response> {
    const path = new URL(request.url).pathname;
    const base = `/realms/${REALM}`;
    if (request.method === "GET" && path === `${base}/.well-known/openid-configuration`) {
      return Response.json({
        issuer,
        jwks_uri: `${issuer}/protocol/openid-connect/certs`,
        token_endpoint: `${issuer}/protocol/openid-connect/token`,
        grant_types_supported: ["password", "client_credentials"],
      });
    }
    if (request.method === "GET" && path === `${base}/protocol/openid-connect/certs`) {
      return Response.json({ keys: published.map((key) => key.jwk) });
    }
    if (request.method === "POST" && path === `${base}/protocol/openid-connect/token`) {
      return await token(request);
    }
    return new Response("not found", { status: 404 });
  }

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handle);
  issuer = `http://127.0.0.1:${server.addr.port}${`/realms/${REALM}`}`;
  let stopped: Promise<void> | undefined;
  const shutdown = () => stopped ??= server.shutdown();
  return {
    issuer,
    tokenEndpoint: `${issuer}/protocol/openid-connect/token`,
    jwksUri: `${issuer}/protocol/openid-connect/certs`,
    clock,
    lifetimeMs: lifetimeSec * 1000,
    fetch: (input, init) => handle(new Request(input, init)),
    sign,
    async rotateKeys() {
      active = { RS256: await newKey("RS256"), ES256: await newKey("ES256") };
      published.push(active.RS256, active.ES256);
    },
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}
