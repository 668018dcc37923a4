/** What the kafkajs adapter's parts share: settings, conversions, lazy connections. */

import { Buffer } from "node:buffer";
import { type Admin, CompressionTypes, type IHeaders, Kafka, type KafkaMessage } from "kafkajs";
import { type ConsumedRecord, type RecordHeaders, type TopicPartition } from "./event_log.ts";

export interface Settings {
  readonly compression: CompressionTypes;
  readonly replicationFactor: number;
  readonly sessionTimeoutMs: number;
  readonly heartbeatIntervalMs: number;
  readonly rebalanceTimeoutMs: number;
  readonly maxWaitTimeMs: number;
  readonly retryBackoffMs: number;
  readonly pingTimeoutMs: number;
  readonly metadataMaxAgeMs: number;
  readonly onError: (error: unknown, context: string) => void;
}

export const EMPTY = new Uint8Array(0);
export const decoder = new TextDecoder();

export function errorType(error: unknown): unknown {
  return typeof error === "object" && error !== null && "type" in error ? error.type : undefined;
}

export function partitionKey(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}

export function byPartition(a: TopicPartition, b: TopicPartition): number {
  return a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition;
}

/** A Buffer over the same bytes (kafkajs wants Buffers; no copy). */
export function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A plain Uint8Array over the same bytes as kafkajs's Buffer. */
export function toBytes(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

export function toHeaders(headers: IHeaders | undefined): RecordHeaders {
  const result: Record<string, string> = {};
  if (headers === undefined) return result;
  for (const [name, raw] of Object.entries(headers)) {
    // A repeated header arrives as an array; the last one wins, as Kafka's `lastHeader`.
    const value = Array.isArray(raw) ? raw.at(-1) : raw;
    if (value === undefined) continue;
    result[name] = typeof value === "string" ? value : decoder.decode(value);
  }
  return result;
}

export function toRecord(topic: string, partition: number, message: KafkaMessage): ConsumedRecord {
  return {
    topic,
    partition,
    offset: Number(message.offset),
    key: message.key === null ? null : toBytes(message.key),
    value: message.value === null ? EMPTY : toBytes(message.value),
    headers: toHeaders(message.headers),
    timestamp: Number(message.timestamp),
  };
}

export function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A client connected on first use; a failed connection is retried by the next use. */
export class Lazy<T extends { connect(): Promise<void>; disconnect(): Promise<void> }> {
  #client: T | undefined;
  #ready: Promise<T> | undefined;

  constructor(readonly create: () => T) {}

  get(): Promise<T> {
    this.#ready ??= this.#connect();
    return this.#ready;
  }

  async #connect(): Promise<T> {
    const client = this.create();
    this.#client = client;
    try {
      await client.connect();
      return client;
    } catch (error) {
      this.#ready = undefined;
      this.#client = undefined;
      await client.disconnect().catch(() => {});
      throw error;
    }
  }

  async disconnect(): Promise<void> {
    const client = this.#client;
    const ready = this.#ready;
    this.#client = undefined;
    this.#ready = undefined;
    if (client === undefined) return;
    await ready?.catch(() => {});
    await client.disconnect();
  }
}

/** What a member needs of its event log. */
export interface MemberContext {
  readonly kafka: Kafka;
  readonly settings: Settings;
  admin(): Promise<Admin>;
  partitionCount(topic: string): Promise<number>;
  forget(member: { stop(): Promise<void> }): void;
}
