/**
 * The repository's secrets: none in clear text, and every `{cipher}` value
 * readable under the development key the config service starts with.
 */
import assert from "node:assert/strict";
import { parse as parseYaml } from "yaml";
import { loadConfig } from "../config.ts";
import { CIPHER_PREFIX, parseKeyItems, SecretCipher } from "./cipher.ts";
import { EXTENSIONS, flatten } from "./repository.ts";

const REPOSITORY = new URL("./repository/", import.meta.url);

/** Keys whose values are secrets wherever they appear. */
const SECRET_KEY = /password|secret|database-url|redis-url|token|credential/i;
/** A URL with a password in it (`scheme://user:password@host`). */
const URL_WITH_PASSWORD = /^[a-z][a-z0-9+.-]*:\/\/[^/:@\s]+:[^/@\s]+@/i;

async function repositoryValues(): Promise<{ file: string; key: string; value: string }[]> {
  const values: { file: string; key: string; value: string }[] = [];
  for await (const entry of Deno.readDir(REPOSITORY)) {
    if (!EXTENSIONS.some((extension) => entry.name.endsWith(`.${extension}`))) continue;
    const text = await Deno.readTextFile(new URL(entry.name, REPOSITORY));
    const parsed = entry.name.endsWith(".json") ? JSON.parse(text) : parseYaml(text);
    for (const [key, value] of Object.entries(flatten(parsed ?? {}, entry.name))) {
      values.push({ file: entry.name, key, value: String(value) });
    }
  }
  return values;
}

Deno.test("the repository holds no secret in clear text", async () => {
  const values = await repositoryValues();
  assert.ok(values.length > 0, "the repository has values");
  const clear = values.filter(({ key, value }) =>
    !value.startsWith(CIPHER_PREFIX) && (SECRET_KEY.test(key) || URL_WITH_PASSWORD.test(value))
  );
  assert.deepEqual(clear, [], "secrets must be {cipher} values (POST /encrypt, see README)");
});

Deno.test("every {cipher} value of the repository decrypts under the development key", async () => {
  const config = loadConfig({});
  const keys = parseKeyItems(config.configServer.encryptKeys);
  const cipher = await SecretCipher.create({
    keys,
    activeKeyId: config.configServer.encryptActiveKey || keys[0]!.id,
  });
  const secrets = (await repositoryValues()).filter(({ value }) => value.startsWith(CIPHER_PREFIX));
  assert.ok(secrets.length > 0, "the repository has secrets");
  for (const { file, key, value } of secrets) {
    const plain = await cipher.decrypt(value);
    assert.ok(plain.length > 0, `${key} in ${file}`);
    if (key.endsWith("database-url")) assert.match(plain, /^postgres:\/\//, `${key} in ${file}`);
  }
});
