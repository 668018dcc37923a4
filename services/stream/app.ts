import type { Hono } from "hono";
import { invalidBody, ProblemError } from "../../shared/http/problem.ts";
import { StreamCompletedError, type TweetEmitter } from "./emitter.ts";
import { readJsonObject } from "../../shared/http/json_body.ts";

export interface StreamRoutesOptions {
  readonly emitter: TweetEmitter;
  readonly maxRatePerSecond: number;
}

/** The stream control API: `/api/v1/stream`. */
export function addStreamRoutes(app: Hono, options: StreamRoutesOptions): Hono {
  const { emitter, maxRatePerSecond } = options;

  app.get("/api/v1/stream", (c) => c.json(emitter.status()));

  app.post("/api/v1/stream/pause", (c) => c.json(emitter.pause()));

  app.post("/api/v1/stream/resume", (c) => {
    try {
      return c.json(emitter.resume());
    } catch (error) {
      if (!(error instanceof StreamCompletedError)) throw error;
      throw new ProblemError({
        status: 409,
        code: error.code,
        title: "Stream completed",
        detail: error.message,
      });
    }
  });

  app.put("/api/v1/stream/rate", async (c) => {
    const body = await readJsonObject(c.req.raw);
    const rate = body.perSecond;
    if (
      typeof rate !== "number" || !Number.isInteger(rate) || rate < 1 || rate > maxRatePerSecond
    ) {
      throw invalidBody(
        `perSecond must be an integer from 1 to ${maxRatePerSecond}, got ${JSON.stringify(rate)}`,
      );
    }
    return c.json(emitter.setRate(rate));
  });

  return app;
}
