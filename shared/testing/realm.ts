/**
 * The development credentials and clients of the realm file
 * (`shared/auth/twitterapi-realm.json`), and the OAuth form helpers tests use
 * to call a token endpoint: the identity service's, Keycloak's or the test
 * issuer's.
 */
import realmFile from "../auth/twitterapi-realm.json" with { type: "json" };

export const REALM = "twitterapi";
export const CONSOLE = "twitterapi-console";

/** The realm file's own development password of a user. */
export function devPassword(username: string): string {
  const user = realmFile.users.find((candidate) => candidate.username === username);
  const password = user?.credentials?.[0]?.value;
  if (password === undefined) throw new Error(`The realm file has no password for ${username}`);
  return password;
}

/** The realm file's own development secret of a client. */
export function devSecret(clientId: string): string {
  const client = realmFile.clients.find((candidate) => candidate.clientId === clientId);
  if (client === undefined || !("secret" in client)) {
    throw new Error(`The realm file has no secret for ${clientId}`);
  }
  return client.secret;
}

/** The realm file's users that people log in as. */
export const PEOPLE = realmFile.users
  .filter((user) => !("serviceAccountClientId" in user))
  .map((user) => user.username);

/** The realm file's confidential clients with service accounts. */
export const SERVICE_CLIENTS = realmFile.clients
  .filter((client) => client.serviceAccountsEnabled)
  .map((client) => client.clientId);

export function form(
  params: Record<string, string>,
  headers: Record<string, string> = {},
): RequestInit {
  return {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
    body: new URLSearchParams(params).toString(),
  };
}

export function basic(clientId: string, secret: string): Record<string, string> {
  return {
    authorization: `Basic ${btoa(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`)}`,
  };
}

/** An access token for a development user, by the password grant of the console client. */
export async function passwordGrantToken(tokenEndpoint: string, username: string): Promise<string> {
  const response = await fetch(
    tokenEndpoint,
    form({
      grant_type: "password",
      client_id: CONSOLE,
      username,
      password: devPassword(username),
    }),
  );
  const body = await response.json();
  if (response.status !== 200) {
    throw new Error(`Cannot get a token for ${username}: ${JSON.stringify(body)}`);
  }
  return body.access_token;
}

/** A client-credentials token of a realm client (its development secret), from the token endpoint. */
export async function clientCredentialsToken(
  tokenEndpoint: string,
  clientId: string,
): Promise<string> {
  const response = await fetch(
    tokenEndpoint,
    form({ grant_type: "client_credentials" }, basic(clientId, devSecret(clientId))),
  );
  const body = await response.json();
  if (response.status !== 200) {
    throw new Error(`Cannot get a token for client ${clientId}: ${JSON.stringify(body)}`);
  }
  return body.access_token;
}
