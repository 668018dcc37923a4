/**
 * RFC 9457 problem details. Every error a client sees is one of these, with a
 * stable `type` URI per error code and never a stack trace.
 */

export const PROBLEM_CONTENT_TYPE = "application/problem+json";

/** The stable `type` URI of an error code. */
export function problemType(code: string): string {
  return `urn:twitterapi:problem:${code}`;
}

export interface ProblemBody {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail?: string;
  readonly instance?: string;
  readonly [extension: string]: unknown;
}

export interface ProblemInit {
  readonly status: number;
  /** Stable machine-readable code; becomes the `type` URI. */
  readonly code: string;
  /** Short summary, the same for every occurrence of the code. */
  readonly title: string;
  /** What went wrong this time, in words a person can act on. */
  readonly detail?: string;
  readonly extensions?: Readonly<Record<string, unknown>>;
  readonly headers?: Readonly<Record<string, string>>;
}

/** An error that becomes a problem response at the HTTP edge. */
export class ProblemError extends Error {
  readonly status: number;
  readonly code: string;
  readonly title: string;
  readonly detail: string | undefined;
  readonly extensions: Readonly<Record<string, unknown>>;
  readonly headers: Readonly<Record<string, string>>;

  constructor(init: ProblemInit) {
    super(init.detail ?? init.title);
    this.name = "ProblemError";
    this.status = init.status;
    this.code = init.code;
    this.title = init.title;
    this.detail = init.detail;
    this.extensions = init.extensions ?? {};
    this.headers = init.headers ?? {};
  }

  body(instance?: string): ProblemBody {
    return {
      ...this.extensions,
      type: problemType(this.code),
      title: this.title,
      status: this.status,
      ...(this.detail === undefined ? {} : { detail: this.detail }),
      ...(instance === undefined ? {} : { instance }),
    };
  }
}

export interface ParameterError {
  readonly parameter: string;
  readonly detail: string;
}

/** 400 naming every invalid parameter. */
export function invalidParameters(errors: readonly ParameterError[]): ProblemError {
  return new ProblemError({
    status: 400,
    code: "invalid-parameter",
    title: "Invalid request parameter",
    detail: errors.map((error) => `${error.parameter}: ${error.detail}`).join("; "),
    extensions: { errors },
  });
}

export function invalidBody(detail: string): ProblemError {
  return new ProblemError({
    status: 400,
    code: "invalid-body",
    title: "Invalid request body",
    detail,
  });
}

export function notFound(detail: string): ProblemError {
  return new ProblemError({ status: 404, code: "not-found", title: "Resource not found", detail });
}

/** 405 for a method the resource does not serve; `allow` lists those it serves. */
export function methodNotAllowed(detail: string, allow: readonly string[]): ProblemError {
  return new ProblemError({
    status: 405,
    code: "method-not-allowed",
    title: "Method not allowed",
    detail,
    headers: { allow: allow.join(", ") },
  });
}

export function notAcceptable(detail: string, available: readonly string[]): ProblemError {
  return new ProblemError({
    status: 406,
    code: "not-acceptable",
    title: "No acceptable representation",
    detail,
    extensions: { available },
  });
}

export function unsupportedMediaType(detail: string): ProblemError {
  return new ProblemError({
    status: 415,
    code: "unsupported-media-type",
    title: "Unsupported media type",
    detail,
  });
}

export function payloadTooLarge(limitBytes: number): ProblemError {
  return new ProblemError({
    status: 413,
    code: "payload-too-large",
    title: "Request body too large",
    detail: `The request body must be at most ${limitBytes} bytes`,
  });
}

export function internalError(): ProblemError {
  return new ProblemError({
    status: 500,
    code: "internal",
    title: "Internal server error",
    detail: "The server failed to handle the request; it has been logged with the trace id",
  });
}

export function problemResponse(problem: ProblemError, instance?: string): Response {
  return new Response(JSON.stringify(problem.body(instance)), {
    status: problem.status,
    headers: { ...problem.headers, "content-type": PROBLEM_CONTENT_TYPE },
  });
}
