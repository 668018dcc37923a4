/**
 * schemathesis, the property-based API fuzzer of `deno task test`, pinned
 * and installed from PyPI into a virtual environment under .data/tools on
 * first use (python3 with its venv module is all it needs). A failed
 * install throws `EngineError` naming what failed, so the test run fails
 * loudly rather than skipping the fuzzing.
 *
 *   deno run --allow-all scripts/tools/schemathesis.ts   # installs, prints the executable
 */
import { EngineError, exists, ROOT, run } from "../engines/engine.ts";

export const SCHEMATHESIS_VERSION = "4.32.5";
const TOOL = "schemathesis";
const VENV = `${ROOT}/.data/tools/schemathesis-${SCHEMATHESIS_VERSION}`;

/** The installed `schemathesis` executable. */
export const SCHEMATHESIS = `${VENV}/bin/schemathesis`;

/**
 * Whether the pinned version answers `--version`. An executable that cannot
 * even start (its environment's interpreter is gone: the checkout was moved,
 * as a venv's scripts name its absolute path) counts as not installed.
 */
async function installed(): Promise<boolean> {
  if (!await exists(SCHEMATHESIS)) return false;
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(SCHEMATHESIS, {
      args: ["--version"],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
  } catch {
    return false;
  }
  return output.success && new TextDecoder().decode(output.stdout).includes(SCHEMATHESIS_VERSION);
}

/** Installs the pinned schemathesis when it is missing; resolves to its executable. */
export async function ensureSchemathesis(): Promise<string> {
  if (await installed()) return SCHEMATHESIS;
  // A half-made environment (an install cut short) is made again.
  await Deno.remove(VENV, { recursive: true }).catch(() => {});
  await Deno.mkdir(`${ROOT}/.data/tools`, { recursive: true });
  const python = Deno.env.get("PYTHON") ?? "python3";
  await run(python, ["-m", "venv", VENV], {
    engine: TOOL,
    what: `create a Python virtual environment in ${VENV} (needs python3 with venv)`,
  });
  await run(
    `${VENV}/bin/pip`,
    ["install", "--quiet", "--disable-pip-version-check", `schemathesis==${SCHEMATHESIS_VERSION}`],
    { engine: TOOL, what: `install schemathesis==${SCHEMATHESIS_VERSION} from PyPI` },
  );
  if (!await installed()) {
    throw new EngineError(TOOL, `${SCHEMATHESIS} does not report ${SCHEMATHESIS_VERSION}`);
  }
  return SCHEMATHESIS;
}

if (import.meta.main) {
  try {
    // deno-lint-ignore no-console
    console.log(await ensureSchemathesis());
  } catch (error) {
    // deno-lint-ignore no-console
    console.error(error instanceof Error ? error.message : String(error));
    Deno.exit(1);
  }
}
