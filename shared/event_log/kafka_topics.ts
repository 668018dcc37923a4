/**
 * Topic administration on kafkajs: creating topics and waiting for their
 * leaders, partition counts (cached for `metadataMaxAgeMs`), offsets and lag.
 */

import type { Admin, PartitionMetadata } from "kafkajs";
import { type PartitionLag, type TopicSpec, UnknownTopicError } from "./event_log.ts";
import { awaitTopicLeaders } from "./_topic_leaders.ts";
import { errorType, type Lazy, type Settings } from "./_kafka_shared.ts";

/** The first and next offsets of one partition. */
export interface PartitionBounds {
  readonly low: number;
  readonly high: number;
}

export class KafkaTopics {
  readonly #admin: Lazy<Admin>;
  readonly #settings: Settings;
  readonly #partitionCounts = new Map<string, { count: number; readAt: number }>();

  constructor(admin: Lazy<Admin>, settings: Settings) {
    this.#admin = admin;
    this.#settings = settings;
  }

  async ensure(spec: TopicSpec): Promise<void> {
    if (!Number.isInteger(spec.partitions) || spec.partitions < 1) {
      throw new RangeError(
        `Cannot create topic '${spec.name}': the partition count must be a positive integer`,
      );
    }
    const admin = await this.#admin.get();
    try {
      // Resolves false when the topic exists already, whatever its partition count.
      await admin.createTopics({
        topics: [{
          topic: spec.name,
          numPartitions: spec.partitions,
          replicationFactor: this.#settings.replicationFactor,
          ...(spec.compacted
            ? { configEntries: [{ name: "cleanup.policy", value: "compact" }] }
            : {}),
        }],
        waitForLeaders: true,
      });
    } catch (error) {
      // kafkajs waits for leaders only through LEADER_NOT_AVAILABLE; a KRaft
      // broker may answer that it does not know the new topic yet instead.
      if (errorType(error) !== "UNKNOWN_TOPIC_OR_PARTITION") throw error;
    }
    // Verify, as the topic may have existed (with another count) or another
    // creator may have won the race with its leaders still pending.
    await awaitTopicLeaders(spec, () => this.#partitionsOf(admin, spec.name));
    this.#partitionCounts.set(spec.name, { count: spec.partitions, readAt: Date.now() });
  }

  /** The topic's partition count; throws `UnknownTopicError` when it does not exist. */
  async partitionCount(topic: string): Promise<number> {
    const known = this.#partitionCounts.get(topic);
    if (known !== undefined && Date.now() - known.readAt < this.#settings.metadataMaxAgeMs) {
      return known.count;
    }
    const admin = await this.#admin.get();
    if (!(await admin.listTopics()).includes(topic)) throw new UnknownTopicError(topic);
    const count = (await this.#partitionsOf(admin, topic))?.length ?? 0;
    if (count === 0) throw new UnknownTopicError(topic);
    this.#partitionCounts.set(topic, { count, readAt: Date.now() });
    return count;
  }

  /** The first and next offsets of one partition. */
  async bounds(topic: string, partition: number): Promise<PartitionBounds> {
    const admin = await this.#admin.get();
    const offsets = await admin.fetchTopicOffsets(topic);
    const bounds = offsets.find((entry) => entry.partition === partition);
    return { low: Number(bounds?.low ?? 0), high: Number(bounds?.high ?? 0) };
  }

  async lag(groupId: string, topic: string): Promise<PartitionLag[]> {
    await this.partitionCount(topic);
    const admin = await this.#admin.get();
    const [committed, offsets] = await Promise.all([
      admin.fetchOffsets({ groupId, topics: [topic] }),
      admin.fetchTopicOffsets(topic),
    ]);
    const committedOffsets = new Map(
      (committed.find((entry) => entry.topic === topic)?.partitions ?? [])
        .map(({ partition, offset }) => [partition, Number(offset)]),
    );
    return offsets
      .map(({ partition, high, low }): PartitionLag => {
        const highWatermark = Number(high);
        const logStart = Number(low);
        // -1 means nothing committed: the group would start at the log start.
        const committedOffset = Math.max(committedOffsets.get(partition) ?? -1, logStart);
        return {
          topic,
          partition,
          committedOffset,
          highWatermark,
          lag: Math.max(highWatermark - committedOffset, 0),
        };
      })
      .sort((a, b) => a.partition - b.partition);
  }

  /** The topic's partitions, or undefined while the broker does not know the topic. */
  async #partitionsOf(admin: Admin, topic: string): Promise<PartitionMetadata[] | undefined> {
    try {
      const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
      return topics.find((entry) => entry.name === topic)?.partitions;
    } catch (error) {
      if (errorType(error) === "UNKNOWN_TOPIC_OR_PARTITION") return undefined;
      throw error;
    }
  }
}
