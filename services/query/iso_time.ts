/**
 * `new Date(ms).toISOString()`, formatted by arithmetic: V8's toISOString
 * cost microseconds a call, the largest part of a search's own CPU time at
 * twenty tweets a page (`bench:gateway`'s profile of query). The date part
 * comes from toISOString once per day and is kept for the next call, which
 * is most often of the same day (a page is newest first).
 */
const DAY_MS = 86_400_000;
const MAX_TIME_MS = 8.64e15;

let cachedDay = Number.NaN;
/** `YYYY-MM-DDT` of `cachedDay`. */
let cachedPrefix = "";

function twoDigits(value: number): string {
  return value < 10 ? `0${value}` : `${value}`;
}

/** The ISO-8601 UTC time of epoch milliseconds; throws `RangeError` for an invalid time. */
export function isoTime(time: number): string {
  // A Date's range and its truncation to whole milliseconds.
  if (!(Math.abs(time) <= MAX_TIME_MS)) throw new RangeError(`Invalid time value: ${time}`);
  const ms = Math.trunc(time);
  const day = Math.floor(ms / DAY_MS);
  if (day !== cachedDay) {
    const iso = new Date(day * DAY_MS).toISOString();
    cachedPrefix = iso.slice(0, iso.indexOf("T") + 1);
    cachedDay = day;
  }
  let rest = ms - day * DAY_MS;
  const hours = Math.floor(rest / 3_600_000);
  rest -= hours * 3_600_000;
  const minutes = Math.floor(rest / 60_000);
  rest -= minutes * 60_000;
  const seconds = Math.floor(rest / 1000);
  const millis = rest - seconds * 1000;
  return `${cachedPrefix}${twoDigits(hours)}:${twoDigits(minutes)}:${twoDigits(seconds)}.${
    millis < 10 ? "00" : millis < 100 ? "0" : ""
  }${millis}Z`;
}
