/**
 * The check both Kafka adapters make after creating a topic: it has the
 * requested partition count and a leader for every partition (a concurrent
 * creator may have won the race with its leaders still pending).
 */
import { TopicMismatchError, type TopicSpec } from "./event_log.ts";

/** Longest the check waits for every partition of a topic to have a leader. */
const LEADER_WAIT_MS = 10_000;

/**
 * Resolves once `partitionsOf` (the topic's partitions, or undefined while the
 * broker does not list it yet) shows `spec.partitions` partitions, each with a
 * leader; throws `TopicMismatchError` on another count, and an error after
 * `LEADER_WAIT_MS` without a leader for every partition.
 */
export async function awaitTopicLeaders(
  spec: TopicSpec,
  partitionsOf: () => Promise<readonly { readonly leader: number }[] | undefined>,
): Promise<void> {
  const deadline = Date.now() + LEADER_WAIT_MS;
  for (;;) {
    const partitions = await partitionsOf();
    if (partitions !== undefined) {
      if (partitions.length !== spec.partitions) {
        throw new TopicMismatchError(spec.name, spec.partitions, partitions.length);
      }
      if (partitions.every((partition) => partition.leader >= 0)) return;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `Cannot use topic '${spec.name}': it has no leader for every partition after ${LEADER_WAIT_MS} ms`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
