import assert from "node:assert/strict";
import realmFile from "../shared/auth/twitterapi-realm.json" with { type: "json" };
import { ConfigError } from "../shared/config/setting.ts";
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

Deno.test("KAFKA_COMPRESSION is none by default and refuses what kafkajs cannot compress with", () => {
  assert.equal(loadConfig({}).eventLog.kafkaCompression, "none");
  for (const compression of ["none", "lz4", "zstd", "snappy", "gzip"]) {
    assert.equal(
      loadConfig({ KAFKA_COMPRESSION: compression }).eventLog.kafkaCompression,
      compression,
    );
  }
  assert.equal(
    loadConfig({ KAFKA_CLIENT: "kafkajs", KAFKA_COMPRESSION: "gzip" }).eventLog.kafkaCompression,
    "gzip",
  );
  for (const compression of ["lz4", "zstd", "snappy"]) {
    assert.throws(
      () => loadConfig({ KAFKA_CLIENT: "kafkajs", KAFKA_COMPRESSION: compression }),
      (error: unknown) =>
        error instanceof ConfigError && error.issues[0]?.env === "KAFKA_COMPRESSION" &&
        error.message.includes(`got '${compression}'`),
    );
  }
  assert.throws(() => loadConfig({ KAFKA_COMPRESSION: "brotli" }), ConfigError);
});
