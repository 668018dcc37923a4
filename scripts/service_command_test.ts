import assert from "node:assert/strict";
import {
  compileArgs,
  envFileFlags,
  SERVICE_PERMISSIONS,
  SERVICE_V8_FLAGS,
  serviceRunArgs,
  SERVICES_MAIN,
} from "./service_command.ts";

Deno.test("envFileFlags() passes --env-file only for a file that exists", async () => {
  const folder = await Deno.makeTempDir();
  try {
    const file = `${folder}/.env`;
    assert.deepEqual(envFileFlags(file), []);
    await Deno.writeTextFile(file, "LOG_LEVEL=debug\n");
    assert.deepEqual(envFileFlags(file), [`--env-file=${file}`]);
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("serviceRunArgs() runs services/main.ts with the permissions and V8 flags", () => {
  const args = serviceRunArgs(["query", "stream"], { envFile: false });
  assert.deepEqual(args, [
    "run",
    ...SERVICE_PERMISSIONS,
    ...SERVICE_V8_FLAGS,
    SERVICES_MAIN,
    "query",
    "stream",
  ]);
});

Deno.test("compileArgs() builds the binary with the same permissions and V8 flags as a run", () => {
  const args = compileArgs(["--target", "x86_64-unknown-linux-gnu"]);
  assert.equal(args[0], "compile");
  for (const flag of [...SERVICE_PERMISSIONS, ...SERVICE_V8_FLAGS]) {
    assert.ok(args.includes(flag), `${flag} in ${args.join(" ")}`);
  }
  assert.deepEqual(args.slice(-3), ["--target", "x86_64-unknown-linux-gnu", SERVICES_MAIN]);
  assert.ok(!args.some((arg) => arg.startsWith("--env-file")), "no .env baked into the binary");
});
