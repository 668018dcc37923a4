/**
 * The one text analyser of the product: the search index and the word-count
 * stream processor both use it, so a word counted is a word searchable.
 */

/** Runs of characters that are not letters, marks, numbers or `_`. */
const SEPARATORS = /[^\p{L}\p{M}\p{N}_]+/u;

/**
 * Lower-cases `text` and splits it on runs of Unicode non-word characters
 * (word characters are letters, combining marks, numbers and `_`).
 * Returns the terms in order of appearance, duplicates included.
 */
export function tokenize(text: string | null | undefined): string[] {
  if (!text) return [];
  return text.toLowerCase().split(SEPARATORS).filter((term) => term.length > 0);
}
