import assert from "node:assert/strict";
import realmFile from "../shared/auth/twitterapi-realm.json" with { type: "json" };
import { loadConfig, REGISTERING_SERVICES, serviceCredentials } from "./config.ts";

Deno.test("every registering service's default credentials are its own client in the realm file", () => {
  const config = loadConfig({});
  for (const service of REGISTERING_SERVICES) {
    const { clientId, clientSecret } = serviceCredentials(config, service);
    const client = realmFile.clients.find((candidate) => candidate.clientId === clientId);
    assert.ok(client !== undefined && "secret" in client, service);
    assert.equal(clientSecret, client.secret, service);
    assert.match(clientSecret, /^dev-only-/);
    const account = realmFile.users.find((user) =>
      "serviceAccountClientId" in user && user.serviceAccountClientId === clientId
    );
    assert.deepEqual(account?.realmRoles, [`service:${service}`], service);
  }
  const overridden = loadConfig({ STREAM_CLIENT_ID: "stream-2", STREAM_CLIENT_SECRET: "s3cret" });
  assert.deepEqual(serviceCredentials(overridden, "stream"), {
    clientId: "stream-2",
    clientSecret: "s3cret",
  });
});
