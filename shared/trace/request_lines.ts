/**
 * Whether a trace's successful requests are logged at info, decided once where
 * the trace begins and carried with the trace context, so that every service
 * a request passes agrees: a trace has all its request lines or none (failed
 * requests are logged in any case). It travels as the `twitterapi` member of
 * W3C `tracestate` (`twitterapi=rl:<n>`): `n` 0 for a trace whose successful
 * requests are not logged, else the number of requests the logged one stands
 * for (1 when every one is logged). A service sampling its own lines (the
 * gateway, one in a hundred) would otherwise log a line its upstreams all log
 * again, for every request it forwards.
 */
import { type Context, createContextKey } from "@opentelemetry/api";

const TRACESTATE_KEY = "twitterapi";
const MEMBER = /^rl:(\d{1,9})$/;
const REQUEST_LINES = createContextKey("twitterapi request lines");

/**
 * The decision a caller's `tracestate` carries: 0 (not logged) or the number
 * of requests a logged line stands for; undefined when it carries none.
 */
export function requestLinesOf(tracestate: string | undefined): number | undefined {
  if (tracestate === undefined || !tracestate.includes(`${TRACESTATE_KEY}=`)) return undefined;
  for (const member of tracestate.split(",")) {
    const separator = member.indexOf("=");
    if (member.slice(0, separator).trim() !== TRACESTATE_KEY) continue;
    const match = MEMBER.exec(member.slice(separator + 1).trim());
    return match === null ? undefined : Number(match[1]);
  }
  return undefined;
}

/** `context` with the decision for the requests made in it. */
export function withRequestLines(context: Context, oneIn: number): Context {
  return context.setValue(REQUEST_LINES, oneIn);
}

/**
 * Adds the decision of `from`, if it holds one, to the `tracestate` of a
 * carrier the propagator has written: as the leftmost member (the W3C rule
 * for a member this vendor changed), replacing an earlier one of ours.
 */
export function injectRequestLines(carrier: Record<string, string>, from: Context): void {
  const oneIn = from.getValue(REQUEST_LINES);
  if (typeof oneIn !== "number") return;
  const ours = `${TRACESTATE_KEY}=rl:${oneIn}`;
  const others = carrier.tracestate?.split(",").filter((member) => {
    const name = member.slice(0, member.indexOf("=")).trim();
    return name !== "" && name !== TRACESTATE_KEY;
  }) ?? [];
  // W3C allows 32 members; ours replaces the rightmost when the list is full.
  carrier.tracestate = [ours, ...others.slice(0, 31)].join(",");
}
