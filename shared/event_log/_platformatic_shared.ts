/** What the @platformatic/kafka adapter's parts share: settings, conversions. */

import { Buffer } from "node:buffer";
import type { Admin, CompressionAlgorithmValue, Message } from "@platformatic/kafka";
import type { ConsumedRecord, RecordHeaders, TopicPartition } from "./event_log.ts";
import type { PlatformaticClient } from "./platformatic_client.ts";
import type { PlatformaticTopics } from "./platformatic_topics.ts";

export interface Settings {
  readonly compression: CompressionAlgorithmValue | undefined;
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

/** What a member needs of its event log. */
export interface MemberContext {
  readonly client: PlatformaticClient;
  readonly settings: Settings;
  readonly admin: Admin;
  readonly topics: PlatformaticTopics;
  partitionCount(topic: string): Promise<number>;
  forget(member: { stop(): Promise<void> }): void;
}

const EMPTY = new Uint8Array(0);
const decoder = new TextDecoder();
const encoder = new TextEncoder();

export function partitionKey(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}

export function fromPartitionKey(key: string): TopicPartition {
  const [topic, partition] = key.split("\u0000");
  return { topic: topic!, partition: Number(partition) };
}

export function byPartition(a: TopicPartition, b: TopicPartition): number {
  return a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition;
}

/** A Buffer over the same bytes (the client wants Buffers; no copy). */
export function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * The encoded header names seen so far: a few (`traceparent` on every record),
 * and the client only reads a name's bytes, so one Buffer serves every record.
 */
const headerNames = new Map<string, Buffer>();
const MAX_CACHED_HEADER_NAMES = 256;

function headerName(name: string): Buffer {
  let bytes = headerNames.get(name);
  if (bytes === undefined) {
    bytes = toBuffer(encoder.encode(name));
    if (headerNames.size < MAX_CACHED_HEADER_NAMES) headerNames.set(name, bytes);
  }
  return bytes;
}

export function toHeaderMap(headers: RecordHeaders | undefined): Map<Buffer, Buffer> | undefined {
  if (headers === undefined) return undefined;
  const result = new Map<Buffer, Buffer>();
  // Per produced record: the value is encoded once, and wrapped without a copy.
  for (const name in headers) result.set(headerName(name), toBuffer(encoder.encode(headers[name])));
  return result;
}

export function toRecord(message: Message): ConsumedRecord {
  const headers: Record<string, string> = {};
  // A repeated header: the last one wins, as Kafka's `lastHeader`.
  for (const [name, value] of message.headerEntries ?? message.headers) {
    headers[decoder.decode(name)] = decoder.decode(value);
  }
  const key = message.key as Buffer | undefined | null;
  const value = message.value as Buffer | undefined | null;
  return {
    topic: message.topic,
    partition: message.partition,
    offset: Number(message.offset),
    key: key === undefined || key === null
      ? null
      : new Uint8Array(key.buffer, key.byteOffset, key.byteLength),
    value: value === undefined || value === null
      ? EMPTY
      : new Uint8Array(value.buffer, value.byteOffset, value.byteLength),
    headers,
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
