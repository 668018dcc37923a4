/**
 * The idempotent producer on @platformatic/kafka (`acks: -1`, pipelined
 * sends). Partitions are chosen here with Kafka's Java default partitioner
 * (`partitionForKey`, murmur2), keyless records round robin, so each record's
 * offset is known exactly from its partition's base offset.
 */

import { type MessageToProduce, ProduceAcks, Producer } from "@platformatic/kafka";
import type { Buffer } from "node:buffer";
import type { ProducerRecord, RecordMetadata } from "./event_log.ts";
import { partitionForKey } from "./murmur2.ts";
import { type Settings, toBuffer, toHeaderMap } from "./_platformatic_shared.ts";
import type { PlatformaticClient } from "./platformatic_client.ts";
import type { PlatformaticTopics } from "./platformatic_topics.ts";

/** One record in the client's shape, on a partition chosen here. */
export function toMessage(
  topic: string,
  partition: number,
  record: ProducerRecord,
): MessageToProduce<Buffer, Buffer, Buffer, Buffer> {
  return {
    topic,
    partition,
    ...(record.key === null ? {} : { key: toBuffer(record.key) }),
    value: toBuffer(record.value),
    ...(record.headers === undefined ? {} : { headers: toHeaderMap(record.headers)! }),
    ...(record.timestamp === undefined ? {} : { timestamp: BigInt(record.timestamp) }),
  };
}

export class PlatformaticProducer {
  readonly #producer: Producer;
  readonly #topics: PlatformaticTopics;
  readonly #settings: Settings;
  readonly #roundRobin = new Map<string, number>();

  constructor(client: PlatformaticClient, topics: PlatformaticTopics, settings: Settings) {
    this.#topics = topics;
    this.#settings = settings;
    this.#producer = new Producer({
      ...client.base,
      idempotent: true,
      acks: ProduceAcks.ALL,
      ...(settings.compression === undefined ? {} : { compression: settings.compression }),
    });
  }

  async send(topic: string, records: readonly ProducerRecord[]): Promise<RecordMetadata[]> {
    const count = await this.#topics.partitionCount(topic);
    if (records.length === 0) return [];
    const partitions = records.map((record) =>
      record.key === null ? this.#nextRoundRobin(topic, count) : partitionForKey(record.key, count)
    );
    const result = await this.#producer.send({
      messages: records.map((record, i) => toMessage(topic, partitions[i]!, record)),
    });
    // One base offset per partition; the partition's records follow in send order.
    const next = new Map<number, number>();
    for (const answer of result.offsets ?? []) {
      if (answer.topic === topic) next.set(answer.partition, Number(answer.offset));
    }
    return partitions.map((partition): RecordMetadata => {
      const offset = next.get(partition);
      if (offset === undefined) {
        throw new Error(
          `Cannot send to topic '${topic}': partition ${partition} acknowledged no offset`,
        );
      }
      next.set(partition, offset + 1);
      return { topic, partition, offset };
    });
  }

  close(): Promise<void> {
    return this.#producer.close();
  }

  #nextRoundRobin(topic: string, count: number): number {
    const next = this.#roundRobin.get(topic) ?? 0;
    this.#roundRobin.set(topic, (next + 1) % count);
    return next % count;
  }
}
