/**
 * Proactive content negotiation on `Accept` (RFC 9110 section 12.5.1): quality
 * values, wildcards, and the most specific matching range deciding a type's
 * quality.
 */

interface MediaRange {
  readonly type: string;
  readonly subtype: string;
  readonly quality: number;
  /** 0 for `*\/*`, 1 for `type/*`, 2 for `type/subtype`. */
  readonly specificity: number;
}

function parseAccept(header: string): MediaRange[] {
  return header.split(",").flatMap((part) => {
    const [range = "", ...parameters] = part.split(";").map((piece) => piece.trim());
    const [type, subtype] = range.toLowerCase().split("/");
    if (!type || !subtype) return [];
    let quality = 1;
    for (const parameter of parameters) {
      const [name, value] = parameter.split("=").map((piece) => piece.trim());
      if (name?.toLowerCase() === "q" && value !== undefined) {
        const parsed = Number(value);
        quality = Number.isFinite(parsed) ? Math.min(1, Math.max(0, parsed)) : 0;
      }
    }
    const specificity = type === "*" ? 0 : subtype === "*" ? 1 : 2;
    return [{ type, subtype, quality, specificity }];
  });
}

function qualityOf(offer: string, ranges: readonly MediaRange[]): number {
  const [type, subtype] = offer.toLowerCase().split("/");
  let best: MediaRange | undefined;
  for (const range of ranges) {
    const matches = (range.type === "*" || range.type === type) &&
      (range.subtype === "*" || range.subtype === subtype);
    if (matches && (best === undefined || range.specificity > best.specificity)) best = range;
  }
  return best?.quality ?? 0;
}

/**
 * The offer the client prefers, ties going to the earlier offer; undefined
 * when the client accepts none. A missing or empty header accepts anything.
 */
export function negotiate(
  accept: string | undefined,
  offers: readonly string[],
): string | undefined {
  if (accept === undefined || accept.trim() === "") return offers[0];
  const ranges = parseAccept(accept);
  let chosen: string | undefined;
  let chosenQuality = 0;
  for (const offer of offers) {
    const quality = qualityOf(offer, ranges);
    if (quality > chosenQuality) {
      chosen = offer;
      chosenQuality = quality;
    }
  }
  return chosen;
}
