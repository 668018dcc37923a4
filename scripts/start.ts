/**
 * `deno task start <service...>|all`: runs the named services in one process,
 * with the permissions and V8 flags of scripts/service_command.ts, reading
 * `.env` when there is one.
 */
import { runDeno, serviceRunArgs } from "./service_command.ts";

if (import.meta.main) Deno.exit(await runDeno(serviceRunArgs(Deno.args)));
