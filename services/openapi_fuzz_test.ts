/**
 * Property-based fuzzing of every service's description: `main.ts all` on
 * free ports (embedded engines, identity as issuer), and schemathesis (the
 * pinned version, installed by scripts/tools/schemathesis.ts) against each
 * service's `/openapi.json`, the gateway's merged one and its management
 * app's, with valid tokens. A response that is a 5xx, or whose status,
 * media type, headers or body the description does not allow, fails the
 * test with schemathesis's own report. The seed is fixed and printed, so a
 * failure can be replayed; the whole file runs in about three minutes.
 */
import assert from "node:assert/strict";
import { ensureSchemathesis } from "../scripts/tools/schemathesis.ts";
import { clientCredentialsToken, passwordGrantToken } from "../shared/testing/realm.ts";
import { type MainProcess, startMain } from "./_testing.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? "20261202");
/** Seconds for the whole file's fuzzing, shared by the targets. */
const BUDGET_SECONDS = 170;
const CHECKS = [
  "not_a_server_error",
  "status_code_conformance",
  "content_type_conformance",
  "response_headers_conformance",
  "response_schema_conformance",
  "unsupported_method",
  "allow_header_conformance",
];

interface Target {
  readonly name: string;
  readonly base: string;
  /** The bearer token of the run; none for public descriptions. */
  readonly token?: string;
}

async function fuzz(executable: string, target: Target, seconds: number, cwd: string) {
  const args = [
    "run",
    `${target.base}/openapi.json`,
    "--url",
    target.base,
    "--checks",
    CHECKS.join(","),
    "--seed",
    String(SEED),
    "--max-time",
    String(seconds),
    "--max-examples",
    "25",
    "--workers",
    "1",
    "--request-timeout",
    "10",
    "--no-color",
    ...(target.token === undefined ? [] : ["--header", `Authorization: Bearer ${target.token}`]),
  ];
  const output = await new Deno.Command(executable, {
    args,
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  const text = decoder.decode(output.stdout) + decoder.decode(output.stderr);
  return { success: output.success, text };
}

Deno.test({
  name: "schemathesis finds no 5xx and no response outside each service's description",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const executable = await ensureSchemathesis();
    // schemathesis keeps found crashes in `.schemathesis/` of its working directory and replays
    // them first on the next run: a directory of this run's own keeps runs alike for the seed,
    // and the checkout clean.
    const cwd = await Deno.makeTempDir({ prefix: "schemathesis-" });
    let main: MainProcess | undefined;
    try {
      main = await startMain(["all"], { STREAM_RATE_PER_SECOND: "20" });
      const { urls, managementUrls } = main;
      const tokenEndpoint = `${urls.identity}/realms/twitterapi/protocol/openid-connect/token`;
      const superUser = await passwordGrantToken(tokenEndpoint, "app_super_user");
      const admin = await passwordGrantToken(tokenEndpoint, "app_admin");
      const service = await clientCredentialsToken(tokenEndpoint, "gateway-service");
      // The registry comes last: what fuzzing registers or removes there must not move the
      // instances the other runs reach.
      const targets: Target[] = [
        { name: "gateway", base: urls.gateway!, token: superUser },
        { name: "gateway management", base: managementUrls.gateway! },
        { name: "query", base: urls.query!, token: superUser },
        { name: "wordcount", base: urls.wordcount!, token: superUser },
        { name: "analytics", base: urls.analytics!, token: superUser },
        { name: "stream", base: urls.stream!, token: admin },
        { name: "indexer", base: urls.indexer! },
        { name: "config", base: urls.config!, token: admin },
        { name: "identity", base: urls.identity! },
        { name: "console", base: urls.console! },
        { name: "registry", base: urls.registry!, token: service },
      ];
      const seconds = Math.floor(BUDGET_SECONDS / targets.length);
      // deno-lint-ignore no-console
      console.log(`schemathesis seed ${SEED} (FUZZ_SEED replays another), ${seconds} s each`);
      const failures: string[] = [];
      for (const target of targets) {
        const result = await fuzz(executable, target, seconds, cwd);
        // deno-lint-ignore no-console
        console.log(`${target.name}: ${result.success ? "passed" : "FAILED"}`);
        if (!result.success) failures.push(`=== ${target.name} (${target.base})\n${result.text}`);
        // The later targets would only report connection errors.
        const exited = main.exited();
        if (exited !== undefined) {
          failures.push(`=== main.ts, after fuzzing ${target.name}\n${exited}`);
          break;
        }
      }
      assert.equal(failures.length, 0, failures.join("\n"));
    } finally {
      await main?.stop();
      await Deno.remove(cwd, { recursive: true });
    }
  },
});
