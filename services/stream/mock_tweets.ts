/**
 * Mock tweets like the original twitter-to-kafka-service: 5-15 words of its
 * 22-word lorem vocabulary with one keyword inserted in the middle.
 */
import { mockUserId } from "../../shared/events/mock_users.ts";
import type { TweetEvent } from "../../shared/events/tweet_event.ts";
import type { SnowflakeIds } from "./tweet_ids.ts";

export const VOCABULARY = [
  "Lorem",
  "ipsum",
  "dolor",
  "sit",
  "amet",
  "consectetuer",
  "adipiscing",
  "elit",
  "Maecenas",
  "porttitor",
  "congue",
  "massa",
  "Fusce",
  "posuere",
  "magna",
  "sed",
  "pulvinar",
  "ultricies",
  "purus",
  "lectus",
  "malesuada",
  "libero",
] as const;

export interface MockTweetOptions {
  readonly keywords: readonly string[];
  readonly minWords: number;
  readonly maxWords: number;
  /** Number of distinct authors; their ids are derived from their index. */
  readonly users: number;
  readonly ids: SnowflakeIds;
  /** Uniform in [0, 1). @default Math.random */
  readonly random?: () => number;
}

export { mockUserId };

export class MockTweets {
  readonly #random: () => number;
  #keywords: readonly string[];

  constructor(readonly options: MockTweetOptions) {
    if (options.keywords.length === 0) {
      throw new RangeError("Cannot generate mock tweets: at least one keyword is needed");
    }
    if (options.minWords > options.maxWords) {
      throw new RangeError("Cannot generate mock tweets: minWords exceeds maxWords");
    }
    this.#random = options.random ?? Math.random;
    this.#keywords = options.keywords;
  }

  /** Replaces the keywords of the next tweets. */
  setKeywords(keywords: readonly string[]): void {
    if (keywords.length === 0) {
      throw new RangeError("Cannot generate mock tweets: at least one keyword is needed");
    }
    this.#keywords = keywords;
  }

  #pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.#random() * items.length)]!;
  }

  text(): string {
    const { minWords, maxWords } = this.options;
    const keywords = this.#keywords;
    const length = minWords + Math.floor(this.#random() * (maxWords - minWords + 1));
    const words = Array.from({ length }, () => this.#pick(VOCABULARY) as string);
    words.splice(Math.floor(length / 2) + 1, 0, this.#pick(keywords));
    return words.join(" ");
  }

  next(): TweetEvent {
    const { id, createdAt } = this.options.ids.next();
    const userId = mockUserId(Math.floor(this.#random() * this.options.users));
    return { id, userId, text: this.text(), createdAt, source: "mock" };
  }
}
