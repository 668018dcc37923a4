/**
 * `deno task test`: brings every real engine up on loopback (installing and
 * downloading what is missing), runs every test against them, and stops the
 * engines it started. An engine that cannot start fails the run, naming the
 * engine and its log file.
 */
import { aptInstall, type Engine } from "./engines/engine.ts";
import { ENGINES, engineUp, write } from "./engines/engines.ts";
import { stop } from "./engines/engine.ts";
import { SERVICE_PERMISSIONS } from "./service_command.ts";
import { ensureSchemathesis } from "./tools/schemathesis.ts";

/** The tests that drive a browser, run apart with every permission. */
const BROWSER_TESTS = ["services/console/console_test.ts", "services/gateway/docs_browser_test.ts"];

/** Where `Deno.makeTempDir` creates folders. */
function tmpDir(): string {
  return Deno.env.get("TMPDIR") || "/tmp";
}

async function main(args: string[]): Promise<number> {
  // The compose file test validates compose.yaml with Debian's docker-compose.
  await aptInstall("tools", ["docker-compose"]);
  // The console tests drive Debian's chromium with playwright-core (never `playwright install`).
  await aptInstall("tools", ["chromium"]);
  let started: Engine[] = [];
  try {
    // services/openapi_fuzz_test.ts runs schemathesis from PyPI (pinned, in .data/tools).
    await ensureSchemathesis();
    started = await engineUp(ENGINES);
  } catch (error) {
    write(`${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
  try {
    const child = new Deno.Command(Deno.execPath(), {
      // Tests may write only in the temporary folder (a private Prometheus's data).
      args: [
        "test",
        ...SERVICE_PERMISSIONS,
        "--allow-run",
        `--allow-write=${tmpDir()}`,
        `--ignore=${BROWSER_TESTS.join(",")}`,
        ...args,
      ],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const code = (await child.status).code;
    if (args.length > 0) return code;
    // playwright-core reads system files and writes its profile: it needs every permission.
    const browser = new Deno.Command(Deno.execPath(), {
      args: ["test", "--allow-all", ...BROWSER_TESTS],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const browserCode = (await browser.status).code;
    return code !== 0 ? code : browserCode;
  } finally {
    for (const engine of started) {
      write(`${engine.name}: ${await stop(engine) ? "stopped" : "was not running"}\n`);
    }
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
