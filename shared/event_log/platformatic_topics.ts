/**
 * Topic administration on @platformatic/kafka: creating topics and waiting
 * for their leaders, partition counts (cached for `metadataMaxAgeMs`),
 * offsets, committed offsets and lag.
 */

import type { Admin } from "@platformatic/kafka";
import {
  type PartitionLag,
  type TopicPartition,
  type TopicSpec,
  UnknownTopicError,
} from "./event_log.ts";
import { awaitTopicLeaders } from "./_topic_leaders.ts";
import type { Settings } from "./_platformatic_shared.ts";

/** ListOffsets timestamps: the next offset, the first retained one. */
const LATEST = -1n;
const EARLIEST = -2n;

/** The first and next offsets of one partition. */
export interface PartitionBounds {
  readonly low: number;
  readonly high: number;
}

function isUnknownTopic(error: unknown): boolean {
  return /UNKNOWN_TOPIC_OR_PARTITION|does not host this topic|unknown topic/i.test(
    describe(error),
  );
}

function isTopicExists(error: unknown): boolean {
  return /TOPIC_ALREADY_EXISTS|already exists/i.test(describe(error));
}

/** The error and its causes as text: the client wraps broker errors in MultipleErrors. */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const nested = (error as { errors?: unknown[] }).errors ?? [];
  const cause = (error as { cause?: unknown }).cause;
  return [
    error.message,
    JSON.stringify((error as { apiId?: unknown }).apiId ?? ""),
    ...nested.map(describe),
    ...(cause === undefined ? [] : [describe(cause)]),
  ].join(" ");
}

export class PlatformaticTopics {
  readonly #admin: Admin;
  readonly #settings: Settings;
  readonly #partitionCounts = new Map<string, { count: number; readAt: number }>();

  constructor(admin: Admin, settings: Settings) {
    this.#admin = admin;
    this.#settings = settings;
  }

  async ensure(spec: TopicSpec): Promise<void> {
    if (!Number.isInteger(spec.partitions) || spec.partitions < 1) {
      throw new RangeError(
        `Cannot create topic '${spec.name}': the partition count must be a positive integer`,
      );
    }
    try {
      await this.#admin.createTopics({
        topics: [spec.name],
        partitions: spec.partitions,
        replicas: this.#settings.replicationFactor,
        ...(spec.compacted ? { configs: [{ name: "cleanup.policy", value: "compact" }] } : {}),
      });
    } catch (error) {
      if (!isTopicExists(error)) throw error;
    }
    // Verify, as the topic may have existed (with another count) or its
    // leaders may still be pending.
    await awaitTopicLeaders(spec, () => this.#partitionsOf(spec.name));
    this.#partitionCounts.set(spec.name, { count: spec.partitions, readAt: Date.now() });
  }

  /** The topic's partition count; throws `UnknownTopicError` when it does not exist. */
  async partitionCount(topic: string): Promise<number> {
    const known = this.#partitionCounts.get(topic);
    if (known !== undefined && Date.now() - known.readAt < this.#settings.metadataMaxAgeMs) {
      return known.count;
    }
    const count = (await this.#partitionsOf(topic))?.length ?? 0;
    if (count === 0) throw new UnknownTopicError(topic);
    this.#partitionCounts.set(topic, { count, readAt: Date.now() });
    return count;
  }

  /** The first and next offsets of every partition of `topic`, by partition. */
  async bounds(topic: string): Promise<PartitionBounds[]> {
    const count = await this.partitionCount(topic);
    const request = (timestamp: bigint) =>
      this.#admin.listOffsets({
        topics: [{
          name: topic,
          partitions: Array.from({ length: count }, (_, partitionIndex) => ({
            partitionIndex,
            timestamp,
          })),
        }],
      });
    const [latest, earliest] = await Promise.all([request(LATEST), request(EARLIEST)]);
    const offsetOf = (answer: typeof latest, partition: number) =>
      Number(
        answer.find((entry) => entry.name === topic)?.partitions
          .find((entry) => entry.partitionIndex === partition)?.offset ?? 0n,
      );
    return Array.from({ length: count }, (_, partition) => ({
      low: offsetOf(earliest, partition),
      high: offsetOf(latest, partition),
    }));
  }

  /** The group's committed offset per partition; -1 where it committed none. */
  async committed(
    groupId: string,
    partitions: readonly TopicPartition[],
  ): Promise<Map<string, number>> {
    const byTopic = new Map<string, number[]>();
    for (const { topic, partition } of partitions) {
      byTopic.set(topic, [...byTopic.get(topic) ?? [], partition]);
    }
    const [group] = await this.#admin.listConsumerGroupOffsets({
      groups: [{
        groupId,
        topics: [...byTopic].map(([name, list]) => ({ name, partitionIndexes: list })),
      }],
      requireStable: true,
    });
    const result = new Map<string, number>();
    for (const { topic, partition } of partitions) {
      const offset = group?.topics.find((entry) => entry.name === topic)?.partitions
        .find((entry) => entry.partitionIndex === partition)?.committedOffset;
      result.set(`${topic}\u0000${partition}`, offset === undefined ? -1 : Number(offset));
    }
    return result;
  }

  async lag(groupId: string, topic: string): Promise<PartitionLag[]> {
    const count = await this.partitionCount(topic);
    const partitions = Array.from({ length: count }, (_, partition) => ({ topic, partition }));
    const [committed, bounds] = await Promise.all([
      this.committed(groupId, partitions),
      this.bounds(topic),
    ]);
    return bounds.map(({ low, high }, partition): PartitionLag => {
      // -1 means nothing committed: the group would start at the log start.
      const committedOffset = Math.max(committed.get(`${topic}\u0000${partition}`) ?? -1, low);
      return {
        topic,
        partition,
        committedOffset,
        highWatermark: high,
        lag: Math.max(high - committedOffset, 0),
      };
    });
  }

  /** The topic's partitions, or undefined while the broker does not know the topic. */
  async #partitionsOf(topic: string): Promise<{ leader: number }[] | undefined> {
    try {
      const metadata = await this.#admin.metadata({ topics: [topic], forceUpdate: true });
      return metadata.topics.get(topic)?.partitions;
    } catch (error) {
      if (isUnknownTopic(error)) return undefined;
      throw error;
    }
  }
}
