/**
 * Tracing for any event log, so that one tweet is one trace across topics and
 * services without a service writing a span by hand.
 *
 * - Sending: one PRODUCER span per record (`send <topic>`), whose context is
 *   written into the record's headers (W3C `traceparent`). A record whose
 *   headers already carry a trace context (one forwarded from a consumed
 *   record, see `traceHeaders`) continues that trace; any other record
 *   continues the active context, or starts its own trace when there is none.
 * - Consuming: one CONSUMER span per record (`process <topic>`), the child of
 *   the record's producer span, open while the handler works on the batch and
 *   failed with it. The handler sees each record with `traceparent` naming its
 *   consumer span, so a record it sends continues the consumed one's trace,
 *   also through a transaction and after the batch ended (wordcount's
 *   coalesced updates).
 *
 * A record of an unsampled trace (sampling is parent-based) gets no span:
 * its context passes on as it is, so such a trace costs next to nothing.
 *
 * Per record, not one span per batch with links: Zipkin ignores span links,
 * and a batch span would put every tweet but one in a trace of its own.
 * Work done once for a whole batch (one bulk write) goes through
 * `inRecordsSpan`, which puts a span of it in every record's trace.
 */
import {
  type Attributes,
  type Context,
  context,
  type HrTime,
  isSpanContextValid,
  type Link,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
} from "@opentelemetry/api";
import { startSpan, type Tracer } from "../trace/tracing.ts";
import type {
  BatchHandler,
  ConsumedRecord,
  ConsumerGroupMember,
  ConsumerOptions,
  EventLog,
  PartitionLag,
  ProducerRecord,
  RecordBatch,
  RecordHeaders,
  RecordMetadata,
  TopicSpec,
  Transaction,
  TransactionalConsumerOptions,
  TransactionalHandler,
} from "./event_log.ts";

/** The W3C trace-context headers, the only ones `traceHeaders` copies. */
const TRACE_HEADERS = ["traceparent", "tracestate"] as const;

/**
 * Most links a batch-wide span keeps to the other records' spans (the SDK's
 * default span limit): beyond it a link would be dropped anyway.
 */
const MAX_LINKS = 128;

export interface TracedEventLogOptions {
  /**
   * `messaging.system` of every span; the embedded log has Kafka's semantics.
   * @default "kafka"
   */
  readonly system?: string;
}

/** The live consumer span of a record handed to a handler, and the tracer that made it. */
interface RecordTrace {
  readonly span: Span;
  readonly tracer: Tracer;
}

/** Records being handled, by the object the handler received: gone with the batch. */
const handled = new WeakMap<ConsumedRecord, RecordTrace>();

/** An `EventLog` that traces every record it sends and every record it delivers. */
export class TracedEventLog implements EventLog {
  readonly #inner: EventLog;
  readonly #tracer: Tracer;
  readonly #system: string;

  constructor(inner: EventLog, tracer: Tracer, options: TracedEventLogOptions = {}) {
    this.#inner = inner;
    this.#tracer = tracer;
    this.#system = options.system ?? "kafka";
  }

  ensureTopic(spec: TopicSpec): Promise<void> {
    return this.#inner.ensureTopic(spec);
  }

  async send(topic: string, records: readonly ProducerRecord[]): Promise<RecordMetadata[]> {
    const { spans, traced } = this.#startSends(topic, records, false);
    try {
      const metadata = await this.#inner.send(topic, traced);
      spans.forEach((span, i) => {
        const position = metadata[i];
        if (span !== undefined && position !== undefined) {
          span.setAttributes({
            "messaging.destination.partition.id": String(position.partition),
            "messaging.kafka.offset": position.offset,
          });
        }
      });
      return metadata;
    } catch (error) {
      for (const span of spans) if (span !== undefined) fail(span, error);
      throw error;
    } finally {
      for (const span of spans) span?.end();
    }
  }

  consume(options: ConsumerOptions, handler: BatchHandler): Promise<ConsumerGroupMember> {
    return this.#inner.consume(
      options,
      (batch) => this.#process(options.groupId, batch, (traced) => handler(traced)),
    );
  }

  consumeTransactional(
    options: TransactionalConsumerOptions,
    handler: TransactionalHandler,
  ): Promise<ConsumerGroupMember> {
    const { beforeCommit } = options;
    return this.#inner.consumeTransactional(
      {
        ...options,
        ...(beforeCommit === undefined
          ? {}
          : { beforeCommit: (transaction) => beforeCommit(this.#traced(transaction)) }),
      },
      (batch, transaction) =>
        this.#process(
          options.groupId,
          batch,
          (traced) => handler(traced, this.#traced(transaction)),
        ),
    );
  }

  readPartition(
    topic: string,
    partition: number,
    fromOffset: number,
    onRecords: (records: readonly ConsumedRecord[]) => void,
  ): Promise<number> {
    return this.#inner.readPartition(topic, partition, fromOffset, onRecords);
  }

  lag(groupId: string, topic: string): Promise<PartitionLag[]> {
    return this.#inner.lag(groupId, topic);
  }

  ping(): Promise<void> {
    return this.#inner.ping();
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  /**
   * A transaction whose records get their producer spans when handed over;
   * those end at once, since the records are written only at the commit.
   */
  #traced(transaction: Transaction): Transaction {
    return {
      send: (topic, records) => {
        const { spans, traced } = this.#startSends(topic, records, true);
        try {
          transaction.send(topic, traced);
        } catch (error) {
          for (const span of spans) if (span !== undefined) fail(span, error);
          throw error;
        } finally {
          for (const span of spans) span?.end();
        }
      },
    };
  }

  #startSends(
    topic: string,
    records: readonly ProducerRecord[],
    transactional: boolean,
  ): { spans: (Span | undefined)[]; traced: ProducerRecord[] } {
    const active = context.active();
    const activeUnsampled = isUnsampled(active);
    const spans: (Span | undefined)[] = [];
    const traced = records.map((record): ProducerRecord => {
      const forwarded = record.headers?.traceparent !== undefined;
      const parent = forwarded ? propagation.extract(ROOT_CONTEXT, record.headers!) : active;
      if (forwarded ? isUnsampled(parent) : activeUnsampled) {
        spans.push(undefined);
        return forwarded ? record : { ...record, headers: injected(record.headers, parent) };
      }
      // Each record of a stream in new traces is a root the sampler mostly drops.
      const span = startSpan(this.#tracer, `send ${topic}`, {
        kind: SpanKind.PRODUCER,
        attributes: {
          "messaging.system": this.#system,
          "messaging.operation.type": "send",
          "messaging.operation.name": "send",
          "messaging.destination.name": topic,
          "messaging.message.body.size": record.value.byteLength,
          ...(transactional ? { "messaging.kafka.transactional": true } : {}),
        },
      }, parent);
      spans.push(span);
      return { ...record, headers: injected(record.headers, trace.setSpan(parent, span)) };
    });
    return { spans, traced };
  }

  /** Runs `work` on the batch with a consumer span per record, each the child of its producer. */
  async #process(
    groupId: string,
    batch: RecordBatch,
    work: (batch: RecordBatch) => Promise<void>,
  ): Promise<void> {
    const spans: Span[] = [];
    const records = batch.records.map((record): ConsumedRecord => {
      const parent = propagation.extract(ROOT_CONTEXT, record.headers);
      // Nothing of an unsampled trace is recorded: the record is handled as it came.
      if (isUnsampled(parent)) return record;
      const span = this.#tracer.startSpan(`process ${batch.topic}`, {
        kind: SpanKind.CONSUMER,
        attributes: {
          "messaging.system": this.#system,
          "messaging.operation.type": "process",
          "messaging.operation.name": "process",
          "messaging.destination.name": batch.topic,
          "messaging.destination.partition.id": String(batch.partition),
          "messaging.consumer.group.name": groupId,
          "messaging.kafka.offset": record.offset,
          "messaging.message.body.size": record.value.byteLength,
        },
      }, parent);
      spans.push(span);
      const traced = { ...record, headers: injected(record.headers, trace.setSpan(parent, span)) };
      handled.set(traced, { span, tracer: this.#tracer });
      return traced;
    });
    try {
      await work({ ...batch, records });
    } catch (error) {
      for (const span of spans) fail(span, error);
      throw error;
    } finally {
      for (const span of spans) span.end();
    }
  }
}

/**
 * The trace-context headers of a consumed record, for a record sent on its
 * behalf later (after the batch, in another call): that record then
 * continues the consumed one's trace.
 */
export function traceHeaders(record: { readonly headers: RecordHeaders }): RecordHeaders {
  const headers: Record<string, string> = {};
  for (const name of TRACE_HEADERS) {
    const value = record.headers[name];
    if (value !== undefined) headers[name] = value;
  }
  return headers;
}

/**
 * The consumer span of a record being handled, to add what the handler
 * learns (the tweet's id) or why the record failed; undefined when the
 * record did not come from a `TracedEventLog`.
 */
export function recordSpan(record: ConsumedRecord): Span | undefined {
  return handled.get(record)?.span;
}

/** The record's consumer span (or, untraced, its producer's) as a context. */
function recordContext(record: ConsumedRecord): Context {
  const live = handled.get(record);
  return live === undefined
    ? propagation.extract(ROOT_CONTEXT, record.headers)
    : trace.setSpan(ROOT_CONTEXT, live.span);
}

/**
 * Runs `work` with the record's consumer span active: its logs carry the
 * record's trace, and what it sends (or the client spans it starts) is part of
 * that trace.
 */
export function inRecordContext<T>(record: ConsumedRecord, work: () => T): T {
  return context.with(recordContext(record), work);
}

/** Records the failure of a record alone (it was dead-lettered) on its consumer span. */
export function recordFailed(record: ConsumedRecord, error: unknown): void {
  const span = handled.get(record)?.span;
  if (span !== undefined) fail(span, error);
}

/**
 * Runs work done once for many records (one bulk write of a batch) so that
 * it shows in every record's trace. It runs inside a span `name`, the child
 * of the first record's consumer span and linked to the others (so the
 * client spans it starts, the bulk request, are in the first record's
 * trace); every other record whose trace is sampled gets a span of the same
 * name, time and outcome under its consumer span, linked to the one that did
 * the work. One span per record is the cost of Zipkin showing each tweet's
 * trace whole; unsampled records cost nothing. Records that did not come
 * from a `TracedEventLog` run `work` untraced.
 */
export async function inRecordsSpan<T>(
  records: readonly ConsumedRecord[],
  name: string,
  attributes: Attributes,
  work: () => Promise<T>,
): Promise<T> {
  const traces = records.flatMap((record) => handled.get(record) ?? []);
  const [first, ...others] = traces;
  if (first === undefined) return await work();
  const startTime = now();
  const spanAttributes = { ...attributes, "messaging.batch.message_count": records.length };
  const links: Link[] = others.slice(0, MAX_LINKS).map(({ span }) => ({
    context: span.spanContext(),
  }));
  const main = first.tracer.startSpan(
    name,
    { attributes: spanAttributes, links, startTime },
    trace.setSpan(ROOT_CONTEXT, first.span),
  );
  let failure: { error: unknown } | undefined;
  try {
    return await context.with(trace.setSpan(ROOT_CONTEXT, main), work);
  } catch (error) {
    failure = { error };
    throw error;
  } finally {
    const endTime = now();
    const done = main.spanContext();
    for (const { span, tracer } of others) {
      if (!span.isRecording()) continue;
      const mirror = tracer.startSpan(name, {
        attributes: { ...spanAttributes, "batch.trace_id": done.traceId },
        links: [{ context: done }],
        startTime,
      }, trace.setSpan(ROOT_CONTEXT, span));
      if (failure !== undefined) fail(mirror, failure.error);
      mirror.end(endTime);
    }
    if (failure !== undefined) fail(main, failure.error);
    main.end(endTime);
  }
}

/**
 * Now, in whole microseconds: Zipkin refuses (400) a span whose timestamp
 * has a fraction of a microsecond, and a sum of float milliseconds has one.
 */
function now(): HrTime {
  const micros = Math.round((performance.timeOrigin + performance.now()) * 1000);
  return [Math.floor(micros / 1e6), (micros % 1e6) * 1000];
}

/**
 * Whether the context continues a trace that is not sampled. Sampling is
 * parent-based (`shared/trace/tracing.ts`): no span of such a trace would be
 * recorded, so none is started and the context passes on as it is.
 */
function isUnsampled(parent: Context): boolean {
  const spanContext = trace.getSpanContext(parent);
  return spanContext !== undefined && isSpanContextValid(spanContext) &&
    (spanContext.traceFlags & TraceFlags.SAMPLED) === 0;
}

/** A copy of `headers` with the trace context of `from` written in. */
function injected(headers: RecordHeaders | undefined, from: Context): RecordHeaders {
  const copy: RecordHeaders = { ...headers };
  propagation.inject(from, copy);
  return copy;
}

function fail(span: Span, error: unknown): void {
  span.recordException(error instanceof Error ? error : String(error));
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: error instanceof Error ? error.message : String(error),
  });
}

/**
 * Runs `work` outside any trace: each record it sends without trace headers
 * starts a trace of its own (the stream's tweets), whatever context the
 * caller runs in.
 */
export function inNewTraces<T>(work: () => T): T {
  return context.with(ROOT_CONTEXT, work);
}
