/**
 * The stream control API, `/api/v1/stream`: the producer's status, pause,
 * resume and rate, for administrators (`bearerAuth` on `/api/*`, added by
 * the composition).
 */
import {
  bearerSecurity,
  createRoute,
  type OpenAPIHono,
  problemResponses,
  z,
} from "../../shared/http/openapi.ts";
import { ProblemError } from "../../shared/http/problem.ts";
import { StreamCompletedError, type TweetEmitter } from "./emitter.ts";

export interface StreamRoutesOptions {
  readonly emitter: TweetEmitter;
  readonly maxRatePerSecond: number;
}

const API = "/api/v1/stream";
const TAG = "stream";

const StatusSchema = z.object({
  state: z.enum(["running", "paused", "completed", "stopped"]),
  produced: z.int().min(0).openapi({ description: "Tweets the event log acknowledged" }),
  ratePerSecond: z.int().min(1).openapi({
    description: "The rate asked for, in tweets per second",
  }),
  achievedPerSecond: z.int().min(0).openapi({
    description: "Tweets acknowledged per second over the last five seconds: below " +
      "`ratePerSecond` when the process cannot produce that many (the rest is shed)",
  }),
  count: z.int().min(1).nullable().openapi({
    description: "Tweets to produce in all; null when unbounded",
  }),
  topic: z.string().openapi({ example: "twitter-topic" }),
}).openapi("StreamStatus");

const adminProblems = {
  ...problemResponses(401, 403),
  403: { ...problemResponses(403)[403], description: "The token lacks app_admin_role" },
};

const statusResponse = (description: string) => ({
  description,
  content: { "application/json": { schema: StatusSchema } },
});

const statusRoute = createRoute({
  method: "get",
  path: API,
  operationId: "streamStatus",
  summary: "The producer's status",
  tags: [TAG],
  security: bearerSecurity,
  responses: { 200: statusResponse("The status"), ...adminProblems },
});

const pauseRoute = createRoute({
  method: "post",
  path: `${API}/pause`,
  operationId: "pauseStream",
  summary: "Pause producing",
  description: "Idempotent; a completed or stopped stream keeps its state.",
  tags: [TAG],
  security: bearerSecurity,
  responses: { 200: statusResponse("The status after pausing"), ...adminProblems },
});

const resumeRoute = createRoute({
  method: "post",
  path: `${API}/resume`,
  operationId: "resumeStream",
  summary: "Resume producing",
  description: "409 `stream-completed` once the stream's count is produced.",
  tags: [TAG],
  security: bearerSecurity,
  responses: {
    200: statusResponse("The status after resuming"),
    ...adminProblems,
    ...problemResponses(409),
  },
});

function rateRoute(maxRatePerSecond: number) {
  return createRoute({
    method: "put",
    path: `${API}/rate`,
    operationId: "setStreamRate",
    summary: "Set the rate",
    description: "Tweets per second, until the configuration's rate changes; at most " +
      `${maxRatePerSecond} (STREAM_MAX_RATE_PER_SECOND), a 400 above.`,
    tags: [TAG],
    security: bearerSecurity,
    request: {
      body: {
        required: true,
        content: {
          "application/json": {
            schema: z.object({
              perSecond: z.int().min(1).max(maxRatePerSecond, {
                error: `must be an integer from 1 to ${maxRatePerSecond}`,
              }).openapi({ example: 50 }),
            }).openapi("StreamRate"),
          },
        },
      },
    },
    responses: {
      200: statusResponse("The status at the new rate"),
      ...problemResponses(400),
      ...adminProblems,
      ...problemResponses(413, 415),
    },
  });
}

export function addStreamRoutes(app: OpenAPIHono, options: StreamRoutesOptions): OpenAPIHono {
  const { emitter, maxRatePerSecond } = options;

  app.openapi(statusRoute, (c) => c.json(emitter.status(), 200));

  app.openapi(pauseRoute, (c) => c.json(emitter.pause(), 200));

  app.openapi(resumeRoute, (c) => {
    try {
      return c.json(emitter.resume(), 200);
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

  app.openapi(
    rateRoute(maxRatePerSecond),
    (c) => c.json(emitter.setRate(c.req.valid("json").perSecond), 200),
  );

  return app;
}
