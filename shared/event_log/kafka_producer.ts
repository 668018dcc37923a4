/**
 * The idempotent producer on kafkajs (`acks: -1`). Partitions are chosen here
 * with Kafka's Java default partitioner (`partitionForKey`, murmur2), keyless
 * records round robin, and given to kafkajs explicitly, so each record's
 * offset is known exactly.
 */

import { type Kafka, type Message, Partitioners, type Producer } from "kafkajs";
import type { ProducerRecord, RecordMetadata } from "./event_log.ts";
import { partitionForKey } from "./murmur2.ts";
import { Lazy, type Settings, toBuffer } from "./_kafka_shared.ts";
import type { KafkaTopics } from "./kafka_topics.ts";

export class KafkaProducer {
  readonly #producer: Lazy<Producer>;
  readonly #topics: KafkaTopics;
  readonly #settings: Settings;
  readonly #roundRobin = new Map<string, number>();

  constructor(kafka: Kafka, topics: KafkaTopics, settings: Settings) {
    this.#topics = topics;
    this.#settings = settings;
    this.#producer = new Lazy(() =>
      kafka.producer({
        idempotent: true,
        // Idempotence in kafkajs requires one request in flight per broker.
        maxInFlightRequests: 1,
        allowAutoTopicCreation: false,
        // Only sets kafkajs's default; every message carries its partition already.
        createPartitioner: Partitioners.DefaultPartitioner,
      })
    );
  }

  async send(topic: string, records: readonly ProducerRecord[]): Promise<RecordMetadata[]> {
    const count = await this.#topics.partitionCount(topic);
    if (records.length === 0) return [];
    const partitions = records.map((record) =>
      record.key === null ? this.#nextRoundRobin(topic, count) : partitionForKey(record.key, count)
    );
    const messages = records.map((record, i): Message => ({
      key: record.key === null ? null : toBuffer(record.key),
      value: toBuffer(record.value),
      partition: partitions[i]!,
      ...(record.headers === undefined ? {} : { headers: { ...record.headers } }),
      ...(record.timestamp === undefined ? {} : { timestamp: String(record.timestamp) }),
    }));
    const producer = await this.#producer.get();
    const acknowledged = await producer.send({
      topic,
      messages,
      acks: -1,
      compression: this.#settings.compression,
    });
    // kafkajs answers once per partition with the offset of its first record;
    // the partition's records follow in send order.
    const next = new Map<number, number>();
    for (const answer of acknowledged) {
      if (answer.topicName !== topic) continue;
      next.set(answer.partition, Number(answer.baseOffset ?? answer.offset));
    }
    return partitions.map((partition): RecordMetadata => {
      const offset = next.get(partition);
      if (offset === undefined || Number.isNaN(offset)) {
        throw new Error(
          `Cannot send to topic '${topic}': partition ${partition} acknowledged no offset`,
        );
      }
      next.set(partition, offset + 1);
      return { topic, partition, offset };
    });
  }

  disconnect(): Promise<void> {
    return this.#producer.disconnect();
  }

  #nextRoundRobin(topic: string, count: number): number {
    const next = this.#roundRobin.get(topic) ?? 0;
    this.#roundRobin.set(topic, (next + 1) % count);
    return next % count;
  }
}
