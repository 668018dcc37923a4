/**
 * Prints an access token for a development user, and nothing else, on stdout:
 *
 *   deno task token <user> [--issuer=<url>] [--client=<clientId>]
 *
 * It uses the password grant with the public client `twitterapi-console` and
 * the user's development password from shared/auth/twitterapi-realm.json (or
 * IDENTITY_REALM_FILE), replaced by IDENTITY_DEV_PASSWORDS when that names the
 * user. The issuer defaults to the identity service on this machine
 * (IDENTITY_PUBLIC_URL or http://127.0.0.1:<IDENTITY_PORT>); the real Keycloak
 * is `--issuer=http://127.0.0.1:9091/realms/twitterapi`. Errors go to stderr
 * with exit code 1.
 */
import builtInRealm from "../shared/auth/twitterapi-realm.json" with { type: "json" };
import { ConfigError, loadSettings } from "../shared/config/setting.ts";
import { settings } from "../services/config.ts";
import { findPerson, namedValues, parseRealm, RealmError } from "../services/identity/realm.ts";

const USAGE = "Usage: deno task token <user> [--issuer=<url>] [--client=<clientId>]\n";
const DEFAULT_CLIENT = "twitterapi-console";

export class TokenError extends Error {
  readonly code = "token";
  constructor(message: string) {
    super(message);
    this.name = "TokenError";
  }
}

export interface TokenOptions {
  readonly username: string;
  readonly issuer: string;
  readonly clientId: string;
  readonly password: string;
}

/** Gets an access token with the password grant from `<issuer>/protocol/openid-connect/token`. */
export async function fetchToken(options: TokenOptions): Promise<string> {
  const url = `${options.issuer.replace(/\/+$/, "")}/protocol/openid-connect/token`;
  let response: Response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "password",
        client_id: options.clientId,
        username: options.username,
        password: options.password,
      }),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (error) {
    throw new TokenError(
      `Cannot reach the issuer at ${url}: ${error instanceof Error ? error.message : error}`,
    );
  }
  const text = await response.text();
  let body: { access_token?: unknown; error?: unknown; error_description?: unknown } = {};
  try {
    body = JSON.parse(text);
  } catch {
    // Reported below with the status.
  }
  if (!response.ok || typeof body.access_token !== "string") {
    const reason = typeof body.error === "string"
      ? `${body.error}: ${body.error_description ?? ""}`
      : `HTTP ${response.status} ${text.slice(0, 200)}`;
    throw new TokenError(`Cannot get a token for ${options.username} from ${url}: ${reason}`);
  }
  return body.access_token;
}

/** Reads the arguments and the identity settings into token options. */
export async function tokenOptions(
  args: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): Promise<TokenOptions> {
  const positional = args.filter((arg) => !arg.startsWith("--"));
  const flags = new Map<string, string>();
  for (const arg of args.filter((arg) => arg.startsWith("--"))) {
    const match = /^--(issuer|client)=(.+)$/.exec(arg);
    if (match === null) throw new TokenError(`Unknown option ${arg.split("=")[0]}\n${USAGE}`);
    flags.set(match[1]!, match[2]!);
  }
  if (positional.length !== 1) throw new TokenError(USAGE.trimEnd());
  const username = positional[0]!;
  const identity = loadSettings(settings.identity, env);
  const realmExport = identity.realmFile === ""
    ? builtInRealm
    : JSON.parse(await Deno.readTextFile(identity.realmFile));
  const passwords = namedValues(identity.devPasswords, "IDENTITY_DEV_PASSWORDS");
  const realm = parseRealm(realmExport);
  const user = findPerson(realm, username);
  const password = passwords.get(username) ?? user?.password;
  if (password === undefined) {
    const people = [...realm.users.values()]
      .filter((candidate) => candidate.serviceAccountClientId === undefined)
      .map((candidate) => candidate.username);
    throw new TokenError(
      `${username} is not a development user of realm ${realm.name} (users: ${
        people.join(", ")
      }); IDENTITY_DEV_PASSWORDS=${username}:<password> names another's password`,
    );
  }
  const base = identity.publicUrl === "" ? `http://127.0.0.1:${identity.port}` : identity.publicUrl;
  return {
    username,
    issuer: flags.get("issuer") ?? `${base}/realms/${realm.name}`,
    clientId: flags.get("client") ?? DEFAULT_CLIENT,
    password,
  };
}

function writeError(text: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(text.endsWith("\n") ? text : `${text}\n`));
}

if (import.meta.main) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    writeError(USAGE);
    Deno.exit(0);
  }
  try {
    const token = await fetchToken(await tokenOptions(Deno.args, Deno.env.toObject()));
    Deno.stdout.writeSync(new TextEncoder().encode(`${token}\n`));
  } catch (error) {
    const known = error instanceof TokenError || error instanceof ConfigError ||
      error instanceof RealmError || error instanceof RangeError || error instanceof SyntaxError;
    writeError(known ? error.message : `Cannot get a token: ${error}`);
    Deno.exit(1);
  }
}
