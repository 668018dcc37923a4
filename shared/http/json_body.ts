import { invalidBody, ProblemError, unsupportedMediaType } from "./problem.ts";

/** Reads a JSON object body, or fails with the 4xx problem that says why. */
export async function readJsonObject(request: Request): Promise<Record<string, unknown>> {
  const type = request.headers.get("content-type") ?? "";
  if (!/^application\/([a-z0-9.+-]+\+)?json\s*(;|$)/i.test(type)) {
    throw unsupportedMediaType(`The body must be application/json, got '${type || "nothing"}'`);
  }
  let body: unknown;
  try {
    body = await request.json();
  } catch (error) {
    // A body over the size limit fails as the 413 problem itself.
    if (error instanceof ProblemError) throw error;
    throw invalidBody("The body is not valid JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw invalidBody("The body must be a JSON object");
  }
  return body as Record<string, unknown>;
}
