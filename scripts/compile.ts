/**
 * `deno task compile [deno compile flags]`: builds dist/twitterapi, one
 * executable for every service, with the permissions and V8 flags the
 * services run with (scripts/service_command.ts) and the files they read.
 */
import { compileArgs, runDeno } from "./service_command.ts";

if (import.meta.main) Deno.exit(await runDeno(compileArgs(Deno.args)));
