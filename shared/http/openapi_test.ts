import assert from "node:assert/strict";
import { assertValidOpenApi31 } from "../testing/openapi_assertions.ts";
import { createOpenApiApp, createRoute, serverSentEventSchema, z } from "./openapi.ts";

Deno.test("serverSentEventSchema describes one parsed event, its data's JSON as contentSchema", async () => {
  const app = createOpenApiApp();
  app.openapi(
    createRoute({
      method: "get",
      path: "/watch",
      responses: {
        200: {
          description: "The stream",
          content: {
            "text/event-stream": {
              schema: serverSentEventSchema({
                events: ["version"],
                data: z.object({ version: z.string() }),
                id: "The version",
              }),
            },
          },
        },
      },
    }),
    () => new Response('event: version\nid: 1\ndata: {"version":"1"}\n\n'),
  );
  const description = app.getOpenAPI31Document({
    openapi: "3.1.0",
    info: { title: "test", version: "1" },
  });
  await assertValidOpenApi31(description);
  const schema = description.paths?.["/watch"]?.get?.responses?.["200"] as {
    content: Record<string, { schema: unknown }>;
  };
  assert.deepEqual(schema.content["text/event-stream"]!.schema, {
    type: "object",
    properties: {
      event: { type: "string", enum: ["version"] },
      data: {
        type: "string",
        description: "JSON",
        contentMediaType: "application/json",
        contentSchema: {
          type: "object",
          properties: { version: { type: "string" } },
          required: ["version"],
          additionalProperties: false,
        },
      },
      id: { type: "string", description: "The version" },
      retry: { type: "integer", minimum: 0, description: "Milliseconds before reconnecting" },
    },
    required: ["event", "data", "id"],
  });
});
