/** CPU time of processes, from /proc, for the benchmarks' cost figures. */

const TICKS_PER_SECOND = 100;

async function ownCpuSeconds(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
  // Fields after the parenthesized command name: utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11] ?? 0) + Number(fields[12] ?? 0)) / TICKS_PER_SECOND;
}

async function childrenOf(pid: number): Promise<number[]> {
  const tasks = await Array.fromAsync(Deno.readDir(`/proc/${pid}/task`)).catch(() => []);
  const lists = await Promise.all(
    tasks.map((task) =>
      Deno.readTextFile(`/proc/${pid}/task/${task.name}/children`).catch(() => "")
    ),
  );
  return lists.flatMap((list) => list.split(" ").filter((id) => id !== "").map(Number));
}

/**
 * CPU seconds (user and system) `pid` and every live descendant have used so
 * far (an engine's launcher and its JVM; a service process).
 */
export async function treeCpuSeconds(pid: number): Promise<number> {
  const children = await childrenOf(pid);
  const times = await Promise.all([ownCpuSeconds(pid), ...children.map(treeCpuSeconds)]);
  return times.reduce((sum, time) => sum + time, 0);
}
