/**
 * Redis from Debian's `redis-server`, on loopback without persistence: the
 * rate-limit store's real engine. Health is a real PING answered PONG.
 */
import { Redis } from "ioredis";
import { aptInstall, type Engine, type EngineProcess } from "./engine.ts";

const PORT = 6379;

export const redis: Engine = {
  name: "redis",
  port: PORT,
  startTimeoutMs: 20_000,

  async provision(): Promise<void> {
    await aptInstall("redis", ["redis-server"]);
  },

  async prepare(dataDir: string): Promise<EngineProcess> {
    await Deno.mkdir(dataDir, { recursive: true });
    return {
      command: "/usr/bin/redis-server",
      args: [
        "--port",
        String(PORT),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        dataDir,
        "--daemonize",
        "no",
        // Redis rewrites its command line (and the environment behind it) to
        // "redis-server 127.0.0.1:6379" by default; keeping the original one,
        // which names the data folder, lets `runningPid` recognise the process.
        "--set-proc-title",
        "no",
      ],
    };
  },

  async health(): Promise<void> {
    const client = new Redis({
      host: "127.0.0.1",
      port: PORT,
      lazyConnect: true,
      connectTimeout: 2000,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      retryStrategy: () => null,
    });
    // A refused connection is reported by connect(); keep the event quiet.
    client.on("error", () => {});
    try {
      await client.connect();
      const answer = await client.ping();
      if (answer !== "PONG") throw new Error(`PING answered ${answer}`);
    } finally {
      client.disconnect();
    }
  },
};
