/** Redis for tests: the engine `deno task engines up redis` starts, or REDIS_URL. */
import { Redis } from "ioredis";
import { redactedUrl } from "./redact.ts";

export const REDIS_URL = Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379";

/** A connected client, or an error that says how to start Redis. */
export async function connectRedis(url = REDIS_URL): Promise<Redis> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 2000,
    maxRetriesPerRequest: 1,
    // Tests want a failure, not reconnection attempts in the background.
    retryStrategy: () => null,
  });
  // Failures reach the caller through rejected commands; without a listener
  // ioredis would also print every connection error.
  client.on("error", () => {});
  try {
    await client.connect();
    await client.ping();
    return client;
  } catch (cause) {
    client.disconnect();
    throw new Error(
      `Redis is not reachable at ${redactedUrl(url)}: start it with \`deno task engines up redis\``,
      { cause },
    );
  }
}
