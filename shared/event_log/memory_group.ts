/** A consumer group of the embedded log: its members, committed offsets and assignment. */

import { Partition, Signal, Topic } from "./memory_topics.ts";

/** What a group needs of its members, plain or transactional. */
export interface GroupMember {
  readonly memberId: string;
  readonly topics: readonly string[];
  readonly fromBeginning: boolean;
  assign(partitions: Partition[]): void;
  stop(): Promise<void>;
}

export class Group {
  readonly members = new Map<string, GroupMember>();
  readonly committed = new Map<Partition, number>();
  /** Partitions with a batch in progress; a new owner waits until the old one releases them. */
  readonly busy = new Set<Partition>();

  constructor(readonly topics: ReadonlyMap<string, Topic>, readonly signal: Signal) {}

  /** Next offset the group reads; below the log start it continues at the log start. */
  position(partition: Partition): number {
    return Math.max(this.committed.get(partition) ?? 0, partition.logStart);
  }

  join(member: GroupMember): void {
    this.members.set(member.memberId, member);
    this.#rebalance();
  }

  leave(member: GroupMember): void {
    this.members.delete(member.memberId);
    member.assign([]);
    this.#rebalance();
  }

  /** Kafka's round-robin assignor: partitions in topic order dealt over the sorted members. */
  #rebalance(): void {
    const members = [...this.members.values()].sort((a, b) =>
      a.memberId < b.memberId ? -1 : a.memberId > b.memberId ? 1 : 0
    );
    const assignments = new Map<GroupMember, Partition[]>(members.map((member) => [member, []]));
    const topics = [...new Set(members.flatMap((member) => member.topics))].sort();
    let next = 0;
    for (const name of topics) {
      for (const partition of this.topics.get(name)!.partitions) {
        // Some member subscribes to every listed topic, so this finds one.
        while (!members[next % members.length]!.topics.includes(name)) next++;
        const member = members[next % members.length]!;
        next++;
        assignments.get(member)!.push(partition);
        // Pinning "latest" now keeps records produced before the first commit
        // from being skipped when a later rebalance resolves it again.
        if (!member.fromBeginning && !this.committed.has(partition)) {
          this.committed.set(partition, partition.highWatermark);
        }
      }
    }
    for (const [member, partitions] of assignments) member.assign(partitions);
    this.signal.notify();
  }
}
