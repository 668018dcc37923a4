/**
 * The `from` and `to` query parameters of every API that filters by time:
 * an ISO-8601 date-time with offset, or a date meaning a whole UTC day.
 */
import type { ParameterError } from "./problem.ts";

/** Bounds in epoch milliseconds, both inclusive; absent when not given. */
export interface TimeRange {
  from?: number;
  to?: number;
}

const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i;
const DAY_MS = 86_400_000;

/**
 * An ISO-8601 date-time with offset, or a date meaning a UTC day: its first
 * millisecond for a lower bound, its last for an upper bound.
 */
function parseInstant(value: string, bound: "from" | "to"): number | undefined {
  if (DATE_ONLY.test(value)) {
    const start = Date.parse(`${value}T00:00:00Z`);
    if (Number.isNaN(start) || new Date(start).toISOString().slice(0, 10) !== value) {
      return undefined;
    }
    return bound === "from" ? start : start + DAY_MS - 1;
  }
  if (!DATE_TIME.test(value)) return undefined;
  const millis = Date.parse(value);
  return Number.isNaN(millis) ? undefined : millis;
}

/** Parses `from` and `to`, adding what is wrong with them to `errors`. */
export function parseTimeRange(params: URLSearchParams, errors: ParameterError[]): TimeRange {
  const range: TimeRange = {};
  for (const bound of ["from", "to"] as const) {
    const value = params.get(bound);
    if (value === null) continue;
    const millis = parseInstant(value, bound);
    if (millis === undefined) {
      errors.push({
        parameter: bound,
        detail: "must be an ISO-8601 date (2026-11-24) or date-time with offset " +
          "(2026-11-24T10:00:00Z)",
      });
    } else {
      range[bound] = millis;
    }
  }
  if (range.from !== undefined && range.to !== undefined && range.from > range.to) {
    errors.push({ parameter: "to", detail: "must not be before from" });
  }
  return range;
}
