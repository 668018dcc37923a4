/**
 * The real Keycloak of `deno task engines up keycloak` (127.0.0.1:9091), for
 * tests that need the repository's realm file as it is now: the file is
 * imported through Keycloak's admin REST API into a realm of its own, under a
 * unique name, so the test neither depends on nor changes the `twitterapi`
 * realm the engine imported at its first start. The admin is the engine's
 * development bootstrap admin (admin/admin, `KC_BOOTSTRAP_ADMIN_*`).
 */
import realmFile from "../auth/twitterapi-realm.json" with { type: "json" };

export const KEYCLOAK_URL = "http://127.0.0.1:9091";

export interface KeycloakTestRealm extends AsyncDisposable {
  readonly name: string;
  /** `http://127.0.0.1:9091/realms/<name>`. */
  readonly issuer: string;
  /** Deletes the realm; safe to call twice. */
  remove(): Promise<void>;
}

async function adminToken(): Promise<string> {
  const url = `${KEYCLOAK_URL}/realms/master/protocol/openid-connect/token`;
  let response: Response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "password",
        client_id: "admin-cli",
        username: Deno.env.get("KC_BOOTSTRAP_ADMIN_USERNAME") ?? "admin",
        password: Deno.env.get("KC_BOOTSTRAP_ADMIN_PASSWORD") ?? "admin",
      }),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (error) {
    throw new Error(
      `Keycloak is not reachable at ${KEYCLOAK_URL}: start it with ` +
        `\`deno task engines up keycloak\` (${error instanceof Error ? error.message : error})`,
    );
  }
  const body = await response.json();
  if (!response.ok) {
    throw new Error(`Cannot log in to Keycloak's admin API: ${JSON.stringify(body)}`);
  }
  return body.access_token;
}

/**
 * Imports the realm file under `twitterapi-<suffix>`. User ids are left out
 * (Keycloak's ids are unique across realms, and the `twitterapi` realm holds
 * the file's); everything else is the file as it is.
 */
export async function importKeycloakTestRealm(): Promise<KeycloakTestRealm> {
  const name = `twitterapi-test-${crypto.randomUUID().slice(0, 8)}`;
  const realm = structuredClone(realmFile) as Record<string, unknown> & {
    users: Record<string, unknown>[];
  };
  realm.realm = name;
  realm.displayName = name;
  realm.users = realm.users.map(({ id: _id, ...user }) => user);
  const token = await adminToken();
  const response = await fetch(`${KEYCLOAK_URL}/admin/realms`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(realm),
    signal: AbortSignal.timeout(60_000),
  });
  const text = await response.text();
  if (response.status !== 201) {
    throw new Error(`Keycloak refused the realm file as ${name}: ${response.status} ${text}`);
  }
  let removed: Promise<void> | undefined;
  const remove = () =>
    removed ??= (async () => {
      const answer = await fetch(`${KEYCLOAK_URL}/admin/realms/${name}`, {
        method: "DELETE",
        headers: { authorization: `Bearer ${await adminToken()}` },
      });
      await answer.body?.cancel();
    })();
  return {
    name,
    issuer: `${KEYCLOAK_URL}/realms/${name}`,
    remove,
    [Symbol.asyncDispose]: remove,
  };
}
