/**
 * The realm: users, roles and clients read from a Keycloak realm export (the
 * same file the real Keycloak imports), reduced to what the identity service
 * needs, with Keycloak's rules for what goes into a token: composite roles
 * expanded, roles limited to the client's role scope, audiences from
 * `oidc-audience-mapper` protocol mappers, the signature algorithm from the
 * client's `access.token.signed.response.alg` attribute.
 */

export const SIGNING_ALGORITHMS = ["RS256", "ES256"] as const;
export type SigningAlgorithm = typeof SIGNING_ALGORITHMS[number];

/** Client scopes Keycloak applies without naming them in the `scope` claim. */
const SCOPES_NOT_IN_TOKEN = new Set(["basic", "roles", "web-origins", "acr"]);

export interface RealmUser {
  readonly id: string;
  readonly username: string;
  readonly enabled: boolean;
  readonly firstName: string | undefined;
  readonly lastName: string | undefined;
  readonly email: string | undefined;
  readonly emailVerified: boolean;
  /** The password credential; undefined: the user cannot log in with a password. */
  readonly password: string | undefined;
  /** Effective realm roles: the assigned ones with their composites expanded. */
  readonly roles: readonly string[];
  /** Set for a client's service account user. */
  readonly serviceAccountClientId: string | undefined;
}

export interface RealmClient {
  readonly clientId: string;
  readonly enabled: boolean;
  readonly publicClient: boolean;
  /** Undefined for public clients. */
  readonly secret: string | undefined;
  readonly standardFlowEnabled: boolean;
  readonly directAccessGrantsEnabled: boolean;
  readonly serviceAccountsEnabled: boolean;
  /** Exact URIs, or prefixes ending in `*` as Keycloak allows. */
  readonly redirectUris: readonly string[];
  /** Where logout may send the browser back to (`+`: the redirect URIs). */
  readonly postLogoutRedirectUris: readonly string[];
  /** Origins allowed to call the token and userinfo endpoints from a browser. */
  readonly webOrigins: readonly string[];
  readonly signatureAlgorithm: SigningAlgorithm;
  /** What `aud` carries in this client's access tokens. */
  readonly audiences: readonly string[];
  /** Realm roles this client's tokens may carry (undefined: all). */
  readonly roleScope: ReadonlySet<string> | undefined;
  readonly defaultScopes: readonly string[];
  readonly optionalScopes: readonly string[];
}

export interface Realm {
  readonly name: string;
  readonly accessTokenLifespanSeconds: number;
  readonly accessCodeLifespanSeconds: number;
  /** A browser session (and its refresh token) ends after this long without a refresh. */
  readonly ssoSessionIdleTimeoutSeconds: number;
  /** A browser session ends after this long whatever its use. */
  readonly ssoSessionMaxLifespanSeconds: number;
  readonly loginWithEmailAllowed: boolean;
  readonly roles: readonly string[];
  readonly clients: ReadonlyMap<string, RealmClient>;
  /** Users by lower-case username (Keycloak's usernames are case-insensitive). */
  readonly users: ReadonlyMap<string, RealmUser>;
}

/** Development credentials replaced from configuration: name to value. */
export interface CredentialOverrides {
  /** User passwords by username. */
  readonly passwords?: ReadonlyMap<string, string>;
  /** Client secrets by client id. */
  readonly clientSecrets?: ReadonlyMap<string, string>;
}

export class RealmError extends Error {
  readonly code = "invalid-realm";
  constructor(message: string) {
    super(`Cannot load the realm: ${message}`);
    this.name = "RealmError";
  }
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function objects(value: unknown, where: string): Json[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every(isObject)) {
    throw new RealmError(`${where} must be an array of objects`);
  }
  return value;
}

function strings(value: unknown, where: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((item) => typeof item === "string")) {
    throw new RealmError(`${where} must be an array of strings`);
  }
  return value;
}

function optionalString(value: unknown, where: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string") throw new RealmError(`${where} must be a string`);
  return value;
}

function requiredString(value: unknown, where: string): string {
  const text = optionalString(value, where);
  if (text === undefined || text === "") throw new RealmError(`${where} is missing`);
  return text;
}

function flag(value: unknown, fallback: boolean, where: string): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") throw new RealmError(`${where} must be true or false`);
  return value;
}

function seconds(value: unknown, fallback: number, where: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
    throw new RealmError(`${where} must be a positive number of seconds`);
  }
  return value;
}

function signingAlgorithm(value: unknown, fallback: SigningAlgorithm, where: string) {
  if (value === undefined || value === "") return fallback;
  const found = SIGNING_ALGORITHMS.find((alg) => alg === value);
  if (found === undefined) {
    throw new RealmError(
      `${where} must be one of ${SIGNING_ALGORITHMS.join(", ")}, got ${String(value)}`,
    );
  }
  return found;
}

/** The realm roles and, per role, the roles it includes (composites, transitively). */
function readRoles(rep: Json): Map<string, Set<string>> {
  const roles = isObject(rep.roles) ? rep.roles : {};
  const direct = new Map<string, string[]>();
  for (const [i, role] of objects(roles.realm, "roles.realm").entries()) {
    const name = requiredString(role.name, `roles.realm[${i}].name`);
    const composites = isObject(role.composites) ? role.composites.realm : undefined;
    direct.set(name, strings(composites, `role ${name} composites.realm`));
  }
  const expanded = new Map<string, Set<string>>();
  for (const name of direct.keys()) {
    const seen = new Set<string>();
    const pending = [name];
    while (pending.length > 0) {
      const next = pending.pop()!;
      if (seen.has(next)) continue;
      if (!direct.has(next)) {
        throw new RealmError(`role ${name} includes the unknown role ${next}`);
      }
      seen.add(next);
      pending.push(...direct.get(next)!);
    }
    expanded.set(name, seen);
  }
  return expanded;
}

function expand(roles: readonly string[], known: Map<string, Set<string>>, where: string) {
  const result = new Set<string>();
  for (const role of roles) {
    const included = known.get(role);
    if (included === undefined) throw new RealmError(`${where} names the unknown role ${role}`);
    for (const name of included) result.add(name);
  }
  return result;
}

function readClient(
  rep: Json,
  index: number,
  roles: Map<string, Set<string>>,
  scopeMappings: Map<string, string[]>,
  secrets: ReadonlyMap<string, string>,
): RealmClient {
  const clientId = requiredString(rep.clientId, `clients[${index}].clientId`);
  const where = `client ${clientId}`;
  const attributes = isObject(rep.attributes) ? rep.attributes : {};
  const publicClient = flag(rep.publicClient, false, `${where} publicClient`);
  const secret = secrets.get(clientId) ?? optionalString(rep.secret, `${where} secret`);
  if (!publicClient && (secret === undefined || secret === "")) {
    throw new RealmError(`${where} is confidential but has no secret`);
  }
  const audiences: string[] = [];
  for (const mapper of objects(rep.protocolMappers, `${where} protocolMappers`)) {
    if (mapper.protocolMapper !== "oidc-audience-mapper") continue;
    const config = isObject(mapper.config) ? mapper.config : {};
    if (config["access.token.claim"] === "false") continue;
    const audience = optionalString(config["included.custom.audience"], `${where} audience`) ||
      optionalString(config["included.client.audience"], `${where} audience`);
    if (audience === undefined || audience === "") {
      throw new RealmError(`${where} has an audience mapper without an audience`);
    }
    if (!audiences.includes(audience)) audiences.push(audience);
  }
  const fullScopeAllowed = flag(rep.fullScopeAllowed, true, `${where} fullScopeAllowed`);
  return {
    clientId,
    enabled: flag(rep.enabled, true, `${where} enabled`),
    publicClient,
    secret: publicClient ? undefined : secret,
    standardFlowEnabled: flag(rep.standardFlowEnabled, true, `${where} standardFlowEnabled`),
    directAccessGrantsEnabled: flag(
      rep.directAccessGrantsEnabled,
      false,
      `${where} directAccessGrantsEnabled`,
    ),
    serviceAccountsEnabled: flag(
      rep.serviceAccountsEnabled,
      false,
      `${where} serviceAccountsEnabled`,
    ),
    redirectUris: strings(rep.redirectUris, `${where} redirectUris`),
    postLogoutRedirectUris: (optionalString(
      attributes["post.logout.redirect.uris"],
      `${where} attribute post.logout.redirect.uris`,
    ) ?? "").split("##").filter((item) => item !== ""),
    webOrigins: strings(rep.webOrigins, `${where} webOrigins`),
    signatureAlgorithm: signingAlgorithm(
      attributes["access.token.signed.response.alg"],
      "RS256",
      `${where} attribute access.token.signed.response.alg`,
    ),
    audiences,
    roleScope: fullScopeAllowed
      ? undefined
      : expand(scopeMappings.get(clientId) ?? [], roles, `the scope mappings of ${where}`),
    defaultScopes: strings(rep.defaultClientScopes, `${where} defaultClientScopes`),
    optionalScopes: strings(rep.optionalClientScopes, `${where} optionalClientScopes`),
  };
}

function readUser(
  rep: Json,
  index: number,
  roles: Map<string, Set<string>>,
  passwords: ReadonlyMap<string, string>,
): RealmUser {
  const username = requiredString(rep.username, `users[${index}].username`).toLowerCase();
  const where = `user ${username}`;
  const credential = objects(rep.credentials, `${where} credentials`)
    .find((item) => item.type === "password");
  return {
    id: requiredString(rep.id, `${where} id (needed for a stable sub)`),
    username,
    enabled: flag(rep.enabled, true, `${where} enabled`),
    firstName: optionalString(rep.firstName, `${where} firstName`),
    lastName: optionalString(rep.lastName, `${where} lastName`),
    email: optionalString(rep.email, `${where} email`)?.toLowerCase(),
    emailVerified: flag(rep.emailVerified, false, `${where} emailVerified`),
    password: passwords.get(username) ??
      optionalString(credential?.value, `${where} password credential`),
    roles: [...expand(strings(rep.realmRoles, `${where} realmRoles`), roles, where)],
    serviceAccountClientId: optionalString(
      rep.serviceAccountClientId,
      `${where} serviceAccountClientId`,
    ),
  };
}

function unknownNames(kind: string, names: Iterable<string>, known: ReadonlyMap<string, unknown>) {
  const unknown = [...names].filter((name) => !known.has(name));
  if (unknown.length > 0) {
    throw new RealmError(
      `the overrides name ${kind} the realm does not have: ${unknown.join(", ")}`,
    );
  }
}

/** Reads a Keycloak realm export; throws `RealmError` naming what is wrong. */
export function parseRealm(rep: unknown, overrides: CredentialOverrides = {}): Realm {
  if (!isObject(rep)) throw new RealmError("the realm file must hold a JSON object");
  const passwords = new Map(
    [...overrides.passwords ?? []].map(([name, value]) => [name.toLowerCase(), value]),
  );
  const clientSecrets = overrides.clientSecrets ?? new Map<string, string>();
  const roles = readRoles(rep);
  const scopeMappings = new Map<string, string[]>();
  for (const mapping of objects(rep.scopeMappings, "scopeMappings")) {
    const client = optionalString(mapping.client, "scopeMappings client");
    if (client === undefined) continue;
    scopeMappings.set(client, [
      ...scopeMappings.get(client) ?? [],
      ...strings(mapping.roles, "scopeMappings roles"),
    ]);
  }
  const clients = new Map<string, RealmClient>();
  for (const [i, item] of objects(rep.clients, "clients").entries()) {
    const client = readClient(item, i, roles, scopeMappings, clientSecrets);
    clients.set(client.clientId, client);
  }
  const users = new Map<string, RealmUser>();
  for (const [i, item] of objects(rep.users, "users").entries()) {
    const user = readUser(item, i, roles, passwords);
    if (users.has(user.username)) throw new RealmError(`user ${user.username} appears twice`);
    users.set(user.username, user);
  }
  unknownNames("users", passwords.keys(), users);
  unknownNames("clients", clientSecrets.keys(), clients);
  return {
    name: requiredString(rep.realm, "realm"),
    accessTokenLifespanSeconds: seconds(rep.accessTokenLifespan, 300, "accessTokenLifespan"),
    accessCodeLifespanSeconds: seconds(rep.accessCodeLifespan, 60, "accessCodeLifespan"),
    ssoSessionIdleTimeoutSeconds: seconds(rep.ssoSessionIdleTimeout, 1800, "ssoSessionIdleTimeout"),
    ssoSessionMaxLifespanSeconds: seconds(
      rep.ssoSessionMaxLifespan,
      36000,
      "ssoSessionMaxLifespan",
    ),
    loginWithEmailAllowed: flag(rep.loginWithEmailAllowed, true, "loginWithEmailAllowed"),
    roles: [...roles.keys()],
    clients,
    users,
  };
}

/**
 * Reads `name:value` items (the form of IDENTITY_DEV_PASSWORDS and
 * IDENTITY_CLIENT_SECRETS) into a map; the value may itself contain ':'.
 */
export function namedValues(items: readonly string[], setting: string): Map<string, string> {
  const result = new Map<string, string>();
  for (const item of items) {
    const colon = item.indexOf(":");
    if (colon <= 0 || colon === item.length - 1) {
      const what = colon < 0
        ? "an item without ':'"
        : colon === 0
        ? "an item without a name"
        : `the item for ${item.slice(0, colon)} without a value`;
      throw new RangeError(`${setting} must list name:value items, got ${what}`);
    }
    result.set(item.slice(0, colon), item.slice(colon + 1));
  }
  return result;
}

/** A realm user that people log in as (not a service account), by username or e-mail. */
export function findPerson(realm: Realm, login: string): RealmUser | undefined {
  const key = login.toLowerCase();
  const byName = realm.users.get(key);
  if (byName !== undefined) return byName.serviceAccountClientId === undefined ? byName : undefined;
  if (!realm.loginWithEmailAllowed || !key.includes("@")) return undefined;
  for (const user of realm.users.values()) {
    if (user.email === key && user.serviceAccountClientId === undefined) return user;
  }
  return undefined;
}

/**
 * The service account of a client: the realm file's user when it has one,
 * otherwise one with an id derived from the client id, so `sub` stays stable.
 */
export async function serviceAccount(realm: Realm, client: RealmClient): Promise<RealmUser> {
  for (const user of realm.users.values()) {
    if (user.serviceAccountClientId === client.clientId) return user;
  }
  const digest = new Uint8Array(
    await crypto.subtle.digest(
      "SHA-256",
      new TextEncoder().encode(`${realm.name}/${client.clientId}`),
    ),
  );
  const hex = [...digest.slice(0, 16)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
  return {
    id: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${
      hex.slice(20, 32)
    }`,
    username: `service-account-${client.clientId}`,
    enabled: true,
    firstName: undefined,
    lastName: undefined,
    email: undefined,
    emailVerified: false,
    password: undefined,
    roles: [],
    serviceAccountClientId: client.clientId,
  };
}

/** The realm roles a token for `user` through `client` carries. */
export function tokenRoles(user: RealmUser, client: RealmClient): string[] {
  const scope = client.roleScope;
  return scope === undefined ? [...user.roles] : user.roles.filter((role) => scope.has(role));
}

export class ScopeError extends Error {
  readonly code = "invalid-scope";
  constructor(readonly scopes: readonly string[]) {
    super(`Invalid scopes: ${scopes.join(" ")}`);
    this.name = "ScopeError";
  }
}

export interface GrantedScopes {
  /** Every client scope applied, including those not named in the token. */
  readonly applied: ReadonlySet<string>;
  /** The `scope` claim and response field. */
  readonly claim: string;
}

/**
 * The scopes of a token: `openid` when asked for, the client's default scopes,
 * and the optional ones asked for. Throws `ScopeError` for any other scope.
 */
export function grantScopes(client: RealmClient, requested: string | undefined): GrantedScopes {
  const asked = (requested ?? "").split(" ").filter((scope) => scope !== "");
  const invalid = asked.filter((scope) =>
    scope !== "openid" && !client.defaultScopes.includes(scope) &&
    !client.optionalScopes.includes(scope)
  );
  if (invalid.length > 0) throw new ScopeError(invalid);
  const applied = new Set([
    ...asked.includes("openid") ? ["openid"] : [],
    ...client.defaultScopes,
    ...asked,
  ]);
  return {
    applied,
    claim: [...applied].filter((scope) => !SCOPES_NOT_IN_TOKEN.has(scope)).join(" "),
  };
}

/** Whether `uri` is one of the client's redirect URIs (a trailing `*` matches any suffix). */
export function isRegisteredRedirect(client: RealmClient, uri: string): boolean {
  return client.redirectUris.some((registered) =>
    registered.endsWith("*") ? uri.startsWith(registered.slice(0, -1)) : uri === registered
  );
}

/**
 * Whether `uri` may receive the browser after logout: the client's
 * `post.logout.redirect.uris` attribute (`##`-separated; `+` stands for its
 * redirect URIs), as Keycloak reads it.
 */
export function isRegisteredPostLogoutRedirect(client: RealmClient, uri: string): boolean {
  const patterns = client.postLogoutRedirectUris.flatMap((item) =>
    item === "+" ? client.redirectUris : [item]
  );
  return patterns.some((registered) =>
    registered.endsWith("*") ? uri.startsWith(registered.slice(0, -1)) : uri === registered
  );
}

/** A development redirect URI for any port of a host (`http://127.0.0.1:*`). */
const ANY_PORT = /^(https?:\/\/[^/:?#]+):\*$/;

/**
 * Origins a browser may call from for this client; `+` stands for the
 * redirect URIs' origins, and a redirect URI for any port of a host
 * (`http://127.0.0.1:*`) for that host's origins on any port.
 */
export function allowedOrigins(client: RealmClient): string[] {
  const origins = new Set<string>();
  for (const origin of client.webOrigins) {
    if (origin !== "+") {
      origins.add(origin);
      continue;
    }
    for (const uri of client.redirectUris) {
      if (ANY_PORT.test(uri)) {
        origins.add(uri);
        continue;
      }
      try {
        origins.add(new URL(uri.replace(/\*$/, "")).origin);
      } catch {
        // A redirect URI that is not absolute names no origin.
      }
    }
  }
  return [...origins];
}

/** Whether `origin` is one of `allowed` (see `allowedOrigins`: `<scheme>://<host>:*` for any port). */
export function isAllowedOrigin(allowed: ReadonlySet<string>, origin: string): boolean {
  if (allowed.has(origin)) return true;
  const port = /^(https?:\/\/[^/:?#]+):[0-9]{1,5}$/.exec(origin);
  return port !== null && allowed.has(`${port[1]}:*`);
}
