/**
 * The connection settings of the @platformatic/kafka adapter. That client has
 * no factory object like kafkajs's `Kafka`: every producer, consumer and admin
 * client takes these options itself.
 */

import type { BaseOptions } from "@platformatic/kafka";

export interface PlatformaticClientOptions {
  /** Bootstrap brokers, `host:port`. */
  readonly brokers: readonly string[];
  /**
   * Names this client in the broker's logs and metrics.
   * @default "twitterapi"
   */
  readonly clientId?: string;
  /**
   * Longest wait for a TCP connection to a broker, in milliseconds.
   * @default 3_000
   */
  readonly connectionTimeoutMs?: number;
  /**
   * Longest wait for a broker's answer to one request, in milliseconds.
   * @default 30_000
   */
  readonly requestTimeoutMs?: number;
  /**
   * Retries of a failed request (the client's default retries without end).
   * @default 5
   */
  readonly retries?: number;
  /**
   * Pause between retries, in milliseconds.
   * @default 300
   */
  readonly retryDelayMs?: number;
}

/** What every @platformatic/kafka client of the adapter is built from. */
export interface PlatformaticClient {
  readonly base: BaseOptions;
}

export function createPlatformaticClient(options: PlatformaticClientOptions): PlatformaticClient {
  return {
    base: {
      clientId: options.clientId ?? "twitterapi",
      bootstrapBrokers: [...options.brokers],
      connectTimeout: options.connectionTimeoutMs ?? 3_000,
      timeout: options.requestTimeoutMs ?? 30_000,
      requestTimeout: options.requestTimeoutMs ?? 30_000,
      retries: options.retries ?? 5,
      retryDelay: options.retryDelayMs ?? 300,
      autocreateTopics: false,
    },
  };
}
