/**
 * Discovery through the registry service (the seed's Eureka client): keeps
 * this process's instances registered by heartbeat, and follows the
 * instances of the services it calls over server-sent events.
 *
 * Registries do not replicate among themselves, so every instance registers
 * with every configured registry: each holds the whole view, and a consumer
 * can follow any one of them (the first that answers) and fail over to the
 * next. A heartbeat answered "unknown" (evicted, or the registry restarted)
 * registers again at once, which refills a restarted registry within a
 * heartbeat.
 *
 * Every request carries the client's own access token (client credentials,
 * audience `registry`): the registry admits a registration only from the
 * client of that service, so what it lists was registered by its service. A
 * token the registry refuses with 401 (expired, keys rotated) is replaced
 * and the request sent once more at once, so renewals never lapse for it.
 *
 * Also the registration rules (names, ids, fields and limits) the registry
 * enforces, so a client fails fast on what the registry would refuse.
 */
import { sleep } from "../async/retry.ts";
import { type TokenSource, TokenSourceError } from "../auth/client_credentials.ts";
import type { Logger } from "../log/log.ts";
import type { ServiceDiscovery, ServiceInstance } from "./service_discovery.ts";

export const SERVICE_NAME_PATTERN = /^[a-z][a-z0-9-]{0,62}$/;
export const INSTANCE_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

export const REGISTRATION_LIMITS = {
  baseUrlLength: 2048,
  versionLength: 64,
  metadataEntries: 32,
  metadataKeyLength: 64,
  metadataValueLength: 1024,
} as const;

export function isServiceName(value: string): boolean {
  return SERVICE_NAME_PATTERN.test(value);
}

export function isInstanceId(value: string): boolean {
  return INSTANCE_ID_PATTERN.test(value);
}

/** The fields of a registration besides its service and instance id. */
export interface RegistrationFields {
  readonly baseUrl: string;
  readonly version: string;
  readonly metadata: Readonly<Record<string, string>>;
}

export interface FieldProblem {
  readonly field: string;
  readonly detail: string;
}

export type RegistrationCheck =
  | { readonly ok: true; readonly fields: RegistrationFields }
  | { readonly ok: false; readonly problems: readonly FieldProblem[] };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The base URL without a trailing slash, or why it is not one. */
export function parseBaseUrl(value: unknown): { url: string } | { problem: string } {
  if (typeof value !== "string") return { problem: "must be a string" };
  if (value.length > REGISTRATION_LIMITS.baseUrlLength) {
    return { problem: `must be at most ${REGISTRATION_LIMITS.baseUrlLength} characters` };
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return { problem: `must be an absolute http(s) URL, got '${value}'` };
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return { problem: `must be an absolute http(s) URL, got '${value}'` };
  }
  if (url.username !== "" || url.password !== "" || url.search !== "" || url.hash !== "") {
    return { problem: "must not carry credentials, a query or a fragment" };
  }
  return { url: url.origin + url.pathname.replace(/\/+$/, "") };
}

/**
 * Checks the fields of a registration as the registry does, naming every
 * problem; `metadata` may be absent (no metadata). The base URL comes back
 * without a trailing slash.
 */
export function checkRegistration(body: Readonly<Record<string, unknown>>): RegistrationCheck {
  const problems: FieldProblem[] = [];
  const baseUrl = parseBaseUrl(body.baseUrl);
  if ("problem" in baseUrl) problems.push({ field: "baseUrl", detail: baseUrl.problem });
  const { version } = body;
  if (
    typeof version !== "string" || version.length === 0 ||
    version.length > REGISTRATION_LIMITS.versionLength
  ) {
    problems.push({
      field: "version",
      detail: `must be a string of 1 to ${REGISTRATION_LIMITS.versionLength} characters`,
    });
  }
  const metadata = body.metadata ?? {};
  if (!isRecord(metadata)) {
    problems.push({ field: "metadata", detail: "must be an object of string values" });
  } else {
    const entries = Object.entries(metadata);
    if (entries.length > REGISTRATION_LIMITS.metadataEntries) {
      problems.push({
        field: "metadata",
        detail:
          `must have at most ${REGISTRATION_LIMITS.metadataEntries} entries, got ${entries.length}`,
      });
    }
    for (const [key, value] of entries) {
      if (key.length === 0 || key.length > REGISTRATION_LIMITS.metadataKeyLength) {
        problems.push({
          field: "metadata",
          detail: `keys must be 1 to ${REGISTRATION_LIMITS.metadataKeyLength} characters`,
        });
      } else if (
        typeof value !== "string" || value.length > REGISTRATION_LIMITS.metadataValueLength
      ) {
        problems.push({
          field: `metadata.${key}`,
          detail:
            `must be a string of at most ${REGISTRATION_LIMITS.metadataValueLength} characters`,
        });
      }
    }
  }
  if (problems.length > 0 || "problem" in baseUrl) return { ok: false, problems };
  return {
    ok: true,
    fields: {
      baseUrl: baseUrl.url,
      version: version as string,
      metadata: { ...(metadata as Record<string, string>) },
    },
  };
}

/** One event of a `text/event-stream`. */
export interface ServerSentEvent {
  /** The `event` field; "message" when the event named none. */
  readonly event: string;
  readonly data: string;
}

/** An incremental `text/event-stream` parser (WHATWG HTML, server-sent events). */
export class ServerSentEventParser {
  #buffer = "";
  #event = "";
  #data: string[] = [];

  /** Feeds decoded text; returns the events it completed. */
  push(text: string): ServerSentEvent[] {
    this.#buffer += text;
    const events: ServerSentEvent[] = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.#buffer);
      if (match === null) break;
      // A CR at the very end may be the first half of a CRLF split across chunks.
      if (match[0] === "\r" && match.index === this.#buffer.length - 1) break;
      const line = this.#buffer.slice(0, match.index);
      this.#buffer = this.#buffer.slice(match.index + match[0].length);
      const event = this.#line(line);
      if (event !== undefined) events.push(event);
    }
    return events;
  }

  #line(line: string): ServerSentEvent | undefined {
    if (line === "") {
      const data = this.#data;
      const event = this.#event;
      this.#data = [];
      this.#event = "";
      return data.length === 0 ? undefined : { event: event || "message", data: data.join("\n") };
    }
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.#event = value;
    else if (field === "data") this.#data.push(value);
    return undefined;
  }
}

/**
 * The events of a `text/event-stream` body. `onChunk` is called for every
 * chunk received, comments included (for idle detection). Leaving the loop
 * early cancels the body.
 */
export async function* readServerSentEvents(
  body: ReadableStream<Uint8Array>,
  onChunk?: () => void,
): AsyncGenerator<ServerSentEvent> {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new ServerSentEventParser();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      onChunk?.();
      yield* parser.push(value);
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

export interface RegistryClientOptions {
  /** Registry base URLs: instances register with each; watches follow the first that answers. */
  readonly urls: readonly string[];
  /**
   * The access tokens of every request: the client credentials of the
   * service this client registers (its realm role `service:<name>`), which
   * also read the registry.
   */
  readonly tokens: TokenSource;
  /**
   * How often each registered instance renews its registration.
   * @default 1000
   */
  readonly heartbeatMs?: number;
  readonly logger: Logger;
  /** @default globalThis.fetch */
  readonly fetch?: typeof fetch;
  /**
   * Longest wait for one registry request, and for a watch stream to open.
   * @default 2000
   */
  readonly requestTimeoutMs?: number;
  /**
   * First delay before retrying after every registry failed.
   * @default 100
   */
  readonly initialRetryDelayMs?: number;
  /**
   * Longest delay between watch reconnection rounds (registrations retry at
   * least every heartbeat).
   * @default 5000
   */
  readonly maxRetryDelayMs?: number;
  /**
   * A watch stream without a byte for this long is taken for dead and reopened
   * (the registry pings every 15 s).
   * @default 45_000
   */
  readonly watchIdleTimeoutMs?: number;
}

export type InstancesListener = (instances: readonly ServiceInstance[]) => void;

const API_PATH = "/api/v1/registry/services";
const DEREGISTER_TIMEOUT_MS = 1000;

/** The registry answered, but not as the protocol says. */
export class RegistryResponseError extends Error {
  readonly code = "registry-response";
  constructor(action: string, readonly status: number, body: string) {
    super(
      `Cannot ${action}: the registry answered ${status}${body ? `: ${body.slice(0, 300)}` : ""}`,
    );
    this.name = "RegistryResponseError";
  }
}

interface Registration {
  readonly instance: ServiceInstance;
  readonly stopping: AbortController;
  loops: Promise<void>[];
}

interface Watch {
  readonly service: string;
  view: readonly ServiceInstance[] | undefined;
  /** Instances of the view a warming-up registry has not shown yet. */
  readonly carried: Map<string, ServiceInstance>;
  readonly listeners: Set<InstancesListener>;
  /** Settles once a first view arrived or every registry failed once. */
  readonly settled: PromiseWithResolvers<void>;
  loop: Promise<void>;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** Full-jitter back-off: between half and all of the ceiling. */
function backoff(failures: number, initialMs: number, maxMs: number): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.max(0, failures - 1));
  return Math.round(ceiling / 2 + Math.random() * ceiling / 2);
}

function instanceOf(value: unknown, service: string): ServiceInstance | undefined {
  if (!isRecord(value) || value.service !== service) return undefined;
  const { instanceId, baseUrl, version, metadata } = value;
  if (typeof instanceId !== "string" || typeof baseUrl !== "string") return undefined;
  if (typeof version !== "string" || !isRecord(metadata)) return undefined;
  const entries = Object.entries(metadata);
  if (!entries.every(([, v]) => typeof v === "string")) return undefined;
  entries.sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0);
  return {
    service,
    instanceId,
    baseUrl,
    version,
    metadata: Object.fromEntries(entries) as Record<string, string>,
  };
}

function compareIds(a: ServiceInstance, b: ServiceInstance): number {
  return a.instanceId < b.instanceId ? -1 : a.instanceId > b.instanceId ? 1 : 0;
}

/** Heartbeat-based discovery through one or more registries. */
export class RegistryClient implements ServiceDiscovery, AsyncDisposable {
  readonly #urls: readonly string[];
  readonly #tokens: TokenSource;
  readonly #heartbeatMs: number;
  readonly #logger: Logger;
  readonly #fetch: typeof fetch;
  readonly #requestTimeoutMs: number;
  readonly #initialRetryDelayMs: number;
  readonly #maxRetryDelayMs: number;
  readonly #watchIdleTimeoutMs: number;
  readonly #registrations = new Map<string, Registration>();
  readonly #watches = new Map<string, Watch>();
  readonly #closing = new AbortController();
  #closed: Promise<void> | undefined;

  constructor(options: RegistryClientOptions) {
    const {
      heartbeatMs = 1000,
      requestTimeoutMs = 2000,
      initialRetryDelayMs = 100,
      maxRetryDelayMs = 5000,
      watchIdleTimeoutMs = 45_000,
    } = options;
    if (options.urls.length === 0) {
      throw new TypeError("Cannot create a registry client: 'urls' names no registry");
    }
    this.#urls = options.urls.map((url) => {
      const parsed = URL.canParse(url) ? new URL(url) : undefined;
      if (parsed === undefined || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) {
        throw new TypeError(`Cannot create a registry client: '${url}' is not an http(s) URL`);
      }
      return url.replace(/\/+$/, "");
    });
    for (
      const [name, value] of Object.entries({
        heartbeatMs,
        requestTimeoutMs,
        initialRetryDelayMs,
        maxRetryDelayMs,
        watchIdleTimeoutMs,
      })
    ) {
      if (!Number.isInteger(value) || value < 1) {
        throw new RangeError(
          `Cannot create a registry client as '${name}' must be a positive integer: current value is ${value}`,
        );
      }
    }
    this.#tokens = options.tokens;
    this.#heartbeatMs = heartbeatMs;
    this.#logger = options.logger;
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.#requestTimeoutMs = requestTimeoutMs;
    this.#initialRetryDelayMs = initialRetryDelayMs;
    this.#maxRetryDelayMs = maxRetryDelayMs;
    this.#watchIdleTimeoutMs = watchIdleTimeoutMs;
  }

  /**
   * Registers `instance` with every registry and keeps it registered by
   * heartbeat until `deregister` or `close`. Resolves once a registry
   * accepted it, or once every registry failed a first time: it never
   * throws because registries are down (they are retried in the background,
   * and logged). Throws `TypeError` for an instance the registry would refuse.
   */
  async register(instance: ServiceInstance): Promise<void> {
    if (this.#closed !== undefined) {
      throw new Error(`Cannot register ${instance.instanceId}: the registry client is closed`);
    }
    if (!isServiceName(instance.service)) {
      throw new TypeError(
        `Cannot register an instance of '${instance.service}': not a service name (${SERVICE_NAME_PATTERN.source})`,
      );
    }
    if (!isInstanceId(instance.instanceId)) {
      throw new TypeError(
        `Cannot register instance '${instance.instanceId}': not an instance id (${INSTANCE_ID_PATTERN.source})`,
      );
    }
    const check = checkRegistration({ ...instance });
    if (!check.ok) {
      throw new TypeError(
        `Cannot register instance ${instance.instanceId}: ${
          check.problems.map((problem) => `${problem.field} ${problem.detail}`).join("; ")
        }`,
      );
    }
    const key = `${instance.service}/${instance.instanceId}`;
    const previous = this.#registrations.get(key);
    if (previous !== undefined) {
      // Registering again replaces the registration: stop the old heartbeats.
      this.#registrations.delete(key);
      await this.#stop(previous, false);
      if (this.#closed !== undefined) {
        throw new Error(`Cannot register ${instance.instanceId}: the registry client is closed`);
      }
    }
    const entry: Registration = {
      instance: Object.freeze({
        service: instance.service,
        instanceId: instance.instanceId,
        ...check.fields,
      }),
      stopping: new AbortController(),
      loops: [],
    };
    this.#registrations.set(key, entry);
    const first = Promise.withResolvers<boolean>();
    let pending = this.#urls.length;
    const reported = (accepted: boolean) => {
      pending -= 1;
      if (accepted || pending === 0) first.resolve(accepted);
    };
    entry.loops = this.#urls.map((url) => this.#keepRegistered(entry, url, reported));
    if (!(await first.promise) && !entry.stopping.signal.aborted) {
      this.#logger.error(
        "Cannot register {service} instance {instanceId} with any registry ({registries}); " +
          "retrying in the background",
        { ...this.#describe(entry.instance), registries: this.#urls.join(", ") },
      );
    }
  }

  /**
   * Stops renewing the instance (of every service registered under this id)
   * and removes it from every registry: best effort, short timeout.
   */
  async deregister(instanceId: string): Promise<void> {
    const entries = [...this.#registrations].filter(([, entry]) =>
      entry.instance.instanceId === instanceId
    );
    for (const [key] of entries) this.#registrations.delete(key);
    await Promise.all(entries.map(([, entry]) => this.#stop(entry, true)));
  }

  /**
   * The instances of `service` as known now. The first call for a service
   * fetches them and starts following their changes; while every registry is
   * unreachable it answers with the last view it had (empty if it never had
   * one).
   */
  async instances(service: string): Promise<readonly ServiceInstance[]> {
    this.#checkServiceName(service);
    if (this.#closed !== undefined) return this.#watches.get(service)?.view ?? [];
    const watch = this.#watch(service);
    if (watch.view === undefined) await watch.settled.promise;
    return watch.view ?? [];
  }

  /**
   * Calls `listener` with the new view of `service` each time it changes
   * (starting to follow the service if nothing did). Returns the function
   * that unsubscribes.
   */
  onChange(service: string, listener: InstancesListener): () => void {
    this.#checkServiceName(service);
    if (this.#closed !== undefined) {
      throw new Error(`Cannot follow ${service}: the registry client is closed`);
    }
    const watch = this.#watch(service);
    watch.listeners.add(listener);
    return () => watch.listeners.delete(listener);
  }

  /** Deregisters every instance and stops every heartbeat and watch; nothing is left running. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing.abort();
      const registrations = [...this.#registrations.values()];
      this.#registrations.clear();
      await Promise.all([
        ...registrations.map((entry) => this.#stop(entry, true)),
        ...[...this.#watches.values()].map((watch) => watch.loop),
      ]);
    })();
    return this.#closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #checkServiceName(service: string): void {
    if (!isServiceName(service)) {
      throw new TypeError(
        `Cannot discover '${service}': not a service name (${SERVICE_NAME_PATTERN.source})`,
      );
    }
  }

  #describe(instance: ServiceInstance) {
    return { service: instance.service, instanceId: instance.instanceId };
  }

  #instanceUrl(registry: string, instance: ServiceInstance): string {
    return `${registry}${API_PATH}/${encodeURIComponent(instance.service)}/instances/${
      encodeURIComponent(instance.instanceId)
    }`;
  }

  /**
   * Sends a registry request with the client's token; a 401 drops the token
   * and sends the request once more with a new one.
   */
  async #authorized(url: string, init: RequestInit): Promise<Response> {
    for (let attempt = 0;; attempt++) {
      const headers = new Headers(init.headers);
      headers.set("authorization", `Bearer ${await this.#tokens.token()}`);
      const response = await this.#fetch(url, { ...init, headers });
      if (response.status !== 401 || attempt > 0) return response;
      await response.body?.cancel();
      this.#tokens.invalidate();
    }
  }

  /** One request with a deadline; the body is read within it. */
  async #call(
    method: string,
    url: string,
    options: { body?: unknown; signal?: AbortSignal; timeoutMs?: number } = {},
  ): Promise<{ status: number; text: string }> {
    const timeoutMs = options.timeoutMs ?? this.#requestTimeoutMs;
    const deadline = new AbortController();
    const timer = setTimeout(
      () => deadline.abort(new Error(`no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const signal = options.signal === undefined
      ? deadline.signal
      : AbortSignal.any([options.signal, deadline.signal]);
    try {
      const init: RequestInit = { method, signal };
      if (options.body !== undefined) {
        init.body = JSON.stringify(options.body);
        init.headers = { "content-type": "application/json" };
      }
      const response = await this.#authorized(url, init);
      return { status: response.status, text: await response.text() };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Registers (or renews) the instance with one registry until it is stopped. */
  async #keepRegistered(
    entry: Registration,
    registry: string,
    reported: (accepted: boolean) => void,
  ): Promise<void> {
    const { instance } = entry;
    const { signal } = entry.stopping;
    const url = this.#instanceUrl(registry, instance);
    const fields = { registry, ...this.#describe(instance) };
    let registered = false;
    let failures = 0;
    let reporting = true;
    const report = (accepted: boolean) => {
      if (reporting) reported(accepted);
      reporting = false;
    };
    while (!signal.aborted) {
      const started = Date.now();
      try {
        if (registered) {
          const renewal = await this.#call("PUT", `${url}/heartbeat`, { signal });
          if (renewal.status === 404) {
            this.#logger.warn(
              "Registry {registry} does not know {service} instance {instanceId} " +
                "(evicted, or the registry restarted); registering again",
              fields,
            );
            registered = false;
          } else if (renewal.status !== 204) {
            throw new RegistryResponseError("renew", renewal.status, renewal.text);
          }
        }
        if (!registered) {
          const { baseUrl, version, metadata } = instance;
          const answer = await this.#call("PUT", url, {
            body: { baseUrl, version, metadata },
            signal,
          });
          if (answer.status !== 200 && answer.status !== 201) {
            throw new RegistryResponseError("register", answer.status, answer.text);
          }
          registered = true;
          this.#logger.info("Registered {service} instance {instanceId} with {registry}", fields);
        }
        if (failures > 0) {
          this.#logger.info("Registry {registry} answers again after {failures} failures", {
            ...fields,
            failures,
          });
        }
        failures = 0;
        report(true);
        await sleep(Math.max(0, this.#heartbeatMs - (Date.now() - started)), signal);
      } catch (error) {
        if (signal.aborted) break;
        failures += 1;
        report(false);
        if (!isPowerOfTwo(failures)) {
          // Logged at 1, 2, 4, 8... failures: an outage does not flood the log.
        } else if (error instanceof TokenSourceError && !/answered 4\d\d/.test(error.message)) {
          this.#logger.warn(
            "Cannot get the token of {service} instance {instanceId} for registry {registry} " +
              "(failure {failures}): the issuer does not answer; retrying",
            { ...fields, failures, error },
          );
        } else if (error instanceof TokenSourceError) {
          this.#logger.error(
            "Cannot get the token of {service} instance {instanceId} for registry {registry} " +
              "(failure {failures}); check the service's client id and secret at the issuer",
            { ...fields, failures, error },
          );
        } else if (
          error instanceof RegistryResponseError && (error.status === 401 || error.status === 403)
        ) {
          this.#logger.error(
            "Registry {registry} refuses the credentials of {service} instance {instanceId} " +
              "(failure {failures}); check the service's client id and secret",
            { ...fields, failures, error },
          );
        } else {
          this.#logger.warn(
            "Cannot reach registry {registry} for {service} instance {instanceId} " +
              "(failure {failures}); retrying",
            { ...fields, failures, error },
          );
        }
        const cap = Math.min(this.#maxRetryDelayMs, this.#heartbeatMs);
        await sleep(backoff(failures, Math.min(this.#initialRetryDelayMs, cap), cap), signal);
      }
    }
    report(false);
  }

  async #stop(entry: Registration, remove: boolean): Promise<void> {
    entry.stopping.abort();
    await Promise.all(entry.loops);
    if (!remove) return;
    const fields = this.#describe(entry.instance);
    await Promise.all(this.#urls.map(async (registry) => {
      try {
        const answer = await this.#call("DELETE", this.#instanceUrl(registry, entry.instance), {
          timeoutMs: Math.min(this.#requestTimeoutMs, DEREGISTER_TIMEOUT_MS),
        });
        if (answer.status === 204) {
          this.#logger.info("Deregistered {service} instance {instanceId} from {registry}", {
            ...fields,
            registry,
          });
        } else if (answer.status !== 404) {
          throw new RegistryResponseError("deregister", answer.status, answer.text);
        }
      } catch (error) {
        this.#logger.warn(
          "Cannot deregister {service} instance {instanceId} from {registry}; it expires there",
          { ...fields, registry, error },
        );
      }
    }));
  }

  #watch(service: string): Watch {
    let watch = this.#watches.get(service);
    if (watch === undefined) {
      const created: Watch = {
        service,
        view: undefined,
        carried: new Map(),
        listeners: new Set(),
        settled: Promise.withResolvers(),
        loop: Promise.resolve(),
      };
      created.loop = this.#follow(created);
      this.#watches.set(service, created);
      watch = created;
    }
    return watch;
  }

  /** Follows the service's watch stream, failing over between registries, until closed. */
  async #follow(watch: Watch): Promise<void> {
    const signal = this.#closing.signal;
    const { service } = watch;
    let index = 0;
    let failed = 0;
    let rounds = 0;
    while (!signal.aborted) {
      const registry = this.#urls[index]!;
      let received = false;
      try {
        await this.#stream(registry, watch, () => {
          if (!received && rounds > 0) {
            this.#logger.info("Following {service} on {registry} again", { service, registry });
          }
          received = true;
        });
        if (!signal.aborted) {
          this.#logger.info("Registry {registry} ended the watch of {service}; reconnecting", {
            service,
            registry,
          });
        }
      } catch (error) {
        if (signal.aborted) break;
        const level = received ? "warn" : "debug";
        this.#logger[level]("Lost the watch of {service} on {registry}", {
          service,
          registry,
          error,
        });
      }
      if (signal.aborted) break;
      if (received) {
        failed = 0;
        rounds = 0;
        await sleep(this.#initialRetryDelayMs, signal);
        continue;
      }
      failed += 1;
      index = (index + 1) % this.#urls.length;
      if (failed % this.#urls.length !== 0) continue;
      rounds += 1;
      watch.settled.resolve();
      if (isPowerOfTwo(rounds)) {
        this.#logger.warn(
          "Cannot follow {service} on any registry ({registries}); keeping the last known view " +
            "of {count} instances",
          { service, registries: this.#urls.join(", "), count: watch.view?.length ?? 0 },
        );
      }
      await sleep(backoff(rounds, this.#initialRetryDelayMs, this.#maxRetryDelayMs), signal);
    }
    watch.settled.resolve();
  }

  /** One watch stream: resolves when the registry ends it, rejects when it fails. */
  async #stream(registry: string, watch: Watch, received: () => void): Promise<void> {
    const connection = new AbortController();
    const close = () => connection.abort(this.#closing.signal.reason);
    this.#closing.signal.addEventListener("abort", close, { once: true });
    let timer = setTimeout(
      () => connection.abort(new Error(`no answer within ${this.#requestTimeoutMs} ms`)),
      this.#requestTimeoutMs,
    );
    const resetIdle = () => {
      clearTimeout(timer);
      timer = setTimeout(
        () => connection.abort(new Error(`no data for ${this.#watchIdleTimeoutMs} ms`)),
        this.#watchIdleTimeoutMs,
      );
    };
    try {
      const response = await this.#authorized(
        `${registry}${API_PATH}/${encodeURIComponent(watch.service)}/watch`,
        { headers: { accept: "text/event-stream" }, signal: connection.signal },
      );
      const type = response.headers.get("content-type") ?? "";
      if (response.status !== 200 || !type.startsWith("text/event-stream")) {
        throw new RegistryResponseError("watch", response.status, await response.text());
      }
      if (response.body === null) throw new RegistryResponseError("watch", response.status, "");
      resetIdle();
      let first = true;
      for await (const event of readServerSentEvents(response.body, resetIdle)) {
        if (event.event !== "instances") continue;
        this.#apply(watch, event.data, first);
        first = false;
        received();
      }
    } finally {
      clearTimeout(timer);
      this.#closing.signal.removeEventListener("abort", close);
    }
  }

  /** Takes a snapshot from the registry into the view, telling listeners when it changed. */
  #apply(watch: Watch, data: string, first: boolean): void {
    const body: unknown = JSON.parse(data);
    if (!isRecord(body) || !Array.isArray(body.instances)) {
      throw new Error(`Cannot read the instances of ${watch.service}: unexpected payload`);
    }
    const received: ServiceInstance[] = [];
    for (const item of body.instances) {
      const instance = instanceOf(item, watch.service);
      if (instance === undefined) {
        this.#logger.warn("Ignoring a malformed instance of {service} from the registry", {
          service: watch.service,
        });
      } else {
        received.push(instance);
      }
    }
    // A registry warming up may not know every live instance yet: the ones
    // known before it answered are carried until it shows them (from then on
    // it knows them, and their removal is real) or until it has warmed up.
    if (body.warmingUp !== true) {
      watch.carried.clear();
    } else {
      if (first) {
        watch.carried.clear();
        for (const instance of watch.view ?? []) watch.carried.set(instance.instanceId, instance);
      }
      for (const instance of received) watch.carried.delete(instance.instanceId);
    }
    const merged = new Map(watch.carried);
    for (const instance of received) merged.set(instance.instanceId, instance);
    const view = [...merged.values()].sort(compareIds);
    const changed = watch.view === undefined || JSON.stringify(view) !== JSON.stringify(watch.view);
    watch.view = view;
    watch.settled.resolve();
    if (!changed) return;
    for (const listener of [...watch.listeners]) {
      try {
        listener(view);
      } catch (error) {
        this.#logger.error("A listener of {service} failed", { service: watch.service, error });
      }
    }
  }
}
