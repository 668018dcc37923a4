/**
 * The `from` and `to` query parameters of every API that filters by time:
 * an ISO-8601 date-time with offset, or a date meaning a whole UTC day. They
 * are schemas, so that the API descriptions state what the code accepts.
 */
import { z } from "./openapi.ts";

/** Bounds in epoch milliseconds, both inclusive; absent when not given. */
export interface TimeRange {
  from?: number;
  to?: number;
}

const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;
/**
 * A date, or a date-time with offset, field by field in range: the schema's
 * `pattern`, so the description states what is accepted (no flags: JSON
 * Schema patterns have none). A date that does not exist (02-30) is refused
 * after it.
 */
const INSTANT = new RegExp(
  "^\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])" +
    "([Tt]([01]\\d|2[0-3]):[0-5]\\d(:[0-5]\\d(\\.\\d{1,9})?)?([Zz]|[+-]([01]\\d|2[0-3]):[0-5]\\d))?$",
);
const DAY_MS = 86_400_000;
const INSTANT_DETAIL = "must be an ISO-8601 date (2026-11-24) or date-time with offset " +
  "(2026-11-24T10:00:00Z)";

/**
 * An ISO-8601 date-time with offset, or a date meaning a UTC day (`value`
 * matched `INSTANT`): its first millisecond for a lower bound, its last for an
 * upper bound.
 */
function parseInstant(value: string, bound: "from" | "to"): number | undefined {
  if (DATE_ONLY.test(value)) {
    const start = Date.parse(`${value}T00:00:00Z`);
    if (Number.isNaN(start) || new Date(start).toISOString().slice(0, 10) !== value) {
      return undefined;
    }
    return bound === "from" ? start : start + DAY_MS - 1;
  }
  const millis = Date.parse(value);
  return Number.isNaN(millis) ? undefined : millis;
}

/** One bound as a query parameter, parsed to epoch milliseconds. */
function instantParameter(bound: "from" | "to") {
  return z.string().regex(INSTANT, { error: INSTANT_DETAIL, abort: true }).transform(
    (value, context) => {
      const millis = parseInstant(value, bound);
      if (millis === undefined) {
        context.addIssue({ code: "custom", message: INSTANT_DETAIL, input: value });
        return z.NEVER;
      }
      return millis;
    },
  ).optional().openapi({
    // The forms in words, not as an `example`: an API reference's "Try it out" sends a
    // parameter's example, and a fixed day would narrow every first try to that day.
    description: bound === "from"
      ? "Earliest creation time, inclusive: an ISO-8601 date-time with offset " +
        "(2026-11-24T10:00:00Z), or a date (2026-11-24: its first millisecond, UTC)"
      : "Latest creation time, inclusive: an ISO-8601 date-time with offset " +
        "(2026-11-24T10:00:00Z), or a date (2026-11-24: its last millisecond, UTC); " +
        "not before `from`",
  });
}

/** The shape of `from` and `to`, for a route's query schema (with `refineTimeRange`). */
export const TIME_RANGE_PARAMETERS = {
  from: instantParameter("from"),
  to: instantParameter("to"),
};

/** The cross-parameter rule of a time range: `to` is not before `from`. */
export function refineTimeRange(
  range: { readonly from?: number | undefined; readonly to?: number | undefined },
  context: z.RefinementCtx,
): void {
  if (range.from !== undefined && range.to !== undefined && range.from > range.to) {
    context.addIssue({ code: "custom", path: ["to"], message: "must not be before from" });
  }
}
