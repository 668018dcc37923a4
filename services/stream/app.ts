import type { Hono } from "hono";
import { invalidBody, ProblemError, unsupportedMediaType } from "../../shared/http/problem.ts";
import { StreamCompletedError, type TweetEmitter } from "./emitter.ts";

export interface StreamRoutesOptions {
  readonly emitter: TweetEmitter;
  readonly maxRatePerSecond: number;
}

/** Reads a JSON object body, or fails with a 4xx that says why. */
async function readJsonObject(request: Request): Promise<Record<string, unknown>> {
  const type = request.headers.get("content-type") ?? "";
  if (!/^application\/([a-z0-9.+-]+\+)?json\s*(;|$)/i.test(type)) {
    throw unsupportedMediaType(`The body must be application/json, got '${type || "nothing"}'`);
  }
  let body: unknown;
  try {
    body = await request.json();
  } catch {
    throw invalidBody("The body is not valid JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw invalidBody("The body must be a JSON object");
  }
  return body as Record<string, unknown>;
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
