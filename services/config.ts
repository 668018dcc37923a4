/**
 * Every setting of every service, with its environment variable and default:
 * the one place to look. `deno task settings` prints this table.
 */
import { LOG_LEVELS } from "../shared/log/log.ts";
import {
  boolean,
  ConfigError,
  type ConfigOf,
  decimal,
  instant,
  integer,
  list,
  listSettings,
  loadSettings,
  oneOf,
  text,
} from "../shared/config/setting.ts";
import { parseKeyItems } from "./config/cipher.ts";
import { parseRouteText, RouteTableError } from "./gateway/routes.ts";

const PORT = { min: 0, max: 65535 } as const;
const TOPIC_NAME = {
  pattern: /^[a-zA-Z0-9._-]{1,249}$/,
  patternDescription: "a Kafka topic name (letters, digits, '.', '_', '-')",
} as const;

/**
 * The development key of `{cipher}` secrets in services/config/repository:
 * public, so those secrets are development secrets only. Replace it (and
 * re-encrypt) for anything else; see README.
 */
const DEV_ENCRYPT_KEY = "dev-only:NLHd+z0zQ5iffcOCbtmCzIc/+/lN8uAEV1RYo5z4QKg=";

/**
 * The OAuth client a service authenticates as, by client credentials:
 * `<SERVICE>_CLIENT_ID` and `<SERVICE>_CLIENT_SECRET`. Its token registers the
 * service's instances (the registry admits a client only for the service its
 * `service:<name>` role names) and reads the registry.
 */
function serviceClient(service: string, uses: string) {
  const prefix = service.toUpperCase();
  return {
    clientId: text(`${prefix}_CLIENT_ID`, {
      default: `${service}-service`,
      doc: `${service}: OAuth client of the service's own token (client credentials): ${uses}`,
    }),
    clientSecret: text(`${prefix}_CLIENT_SECRET`, {
      default: `dev-only-${service}-service-secret`,
      doc: `${service}: secret of ${prefix}_CLIENT_ID; the default is the realm file's ` +
        "development secret",
    }),
  };
}

export const settings = {
  process: {
    host: text("HTTP_HOST", {
      default: "127.0.0.1",
      doc: "Address every service listens on (0.0.0.0 in containers)",
    }),
    instanceId: text("INSTANCE_ID", {
      default: "",
      doc:
        "Instance id in logs and metrics; empty: <service>-<hostname>-<pid>. A stable one also makes Kafka consumers static members (KAFKA_CLIENT=platformatic): <group>-<id>",
    }),
    logLevel: oneOf("LOG_LEVEL", LOG_LEVELS, { default: "info", doc: "Lowest level logged" }),
    bodyLimitBytes: integer("HTTP_BODY_LIMIT_BYTES", {
      default: 1_048_576,
      min: 1,
      doc: "Largest request body any service accepts",
    }),
    pgliteTemplateFile: text("PGLITE_TEMPLATE_FILE", {
      default: ".data/pglite/cluster-0.5.16.tar",
      allowEmpty: true,
      doc: "Embedded PGlite: an empty cluster saved on first start and copied into memory on " +
        "later ones (initdb once); empty: initdb on every start",
    }),
  },
  tracing: {
    zipkinUrl: text("ZIPKIN_URL", {
      default: "",
      doc: "Zipkin base URL every service exports spans to (`/api/v2/spans`) and traces are read " +
        "from; empty: no export, the last TRACE_MEMORY_MAX_SPANS spans stay in memory",
      pattern: /^https?:\/\/[^\s/]+\/?$/,
      patternDescription: "an http(s) URL without a path, like http://127.0.0.1:9411",
    }),
    sampleRatio: decimal("TRACE_SAMPLE_RATIO", {
      default: 1,
      min: 0,
      max: 1,
      doc: "Share of new traces recorded (0 to 1); a request with a `traceparent` follows its " +
        "caller's decision",
    }),
    maxNewTracesPerSecond: integer("TRACE_MAX_NEW_TRACES_PER_SECOND", {
      default: 100,
      min: 0,
      max: 1_000_000,
      doc: "Most new traces each service records per second, of those TRACE_SAMPLE_RATIO " +
        "picks (0: no limit); a busy pipeline would otherwise spend about as much on its spans " +
        "as on its work",
    }),
    exportBatchSize: integer("TRACE_EXPORT_BATCH_SIZE", {
      default: 512,
      min: 1,
      max: 100_000,
      doc: "Spans per export request at most (a full batch leaves at once)",
    }),
    exportIntervalMs: integer("TRACE_EXPORT_INTERVAL_MS", {
      default: 1000,
      min: 10,
      max: 60_000,
      doc: "Longest a finished span waits for its batch to be exported",
    }),
    exportQueueSize: integer("TRACE_EXPORT_QUEUE_SIZE", {
      default: 2048,
      min: 1,
      max: 1_000_000,
      doc: "Spans waiting for export per service at most; beyond it spans are dropped and " +
        "counted (tracing_spans_dropped_total)",
    }),
    exportTimeoutMs: integer("TRACE_EXPORT_TIMEOUT_MS", {
      default: 10_000,
      min: 100,
      max: 600_000,
      doc: "An export unanswered for this long fails and its spans are counted lost",
    }),
    memoryMaxSpans: integer("TRACE_MEMORY_MAX_SPANS", {
      default: 10_000,
      min: 1,
      max: 10_000_000,
      doc: "Without ZIPKIN_URL: spans kept in memory for reading (the oldest are forgotten)",
    }),
  },
  logging: {
    format: oneOf("LOG_FORMAT", ["auto", "json", "pretty"], {
      default: "auto",
      doc: "stdout lines: readable (pretty) or JSON; auto: pretty when stdout is a terminal",
    }),
    shipping: oneOf("LOG_SHIPPING", ["memory", "elasticsearch"], {
      default: "memory",
      doc: "Log aggregation: recent lines kept in process, or every line shipped to " +
        "Elasticsearch (stdout gets every line either way)",
    }),
    elasticsearchUrl: text("LOG_SHIPPING_ELASTICSEARCH_URL", {
      default: "",
      doc: "Log shipping: Elasticsearch base URL; empty: ELASTICSEARCH_URL",
      pattern: /^(https?:\/\/[^\s/]+(\/.*)?)?$/,
      patternDescription: "empty or an http(s) URL",
    }),
    indexPrefix: text("LOG_SHIPPING_INDEX_PREFIX", {
      default: "logs-twitterapi",
      doc: "Log shipping: lines go to daily indices <prefix>-YYYY.MM.DD",
      pattern: /^[a-z0-9][a-z0-9._-]{0,200}$/,
      patternDescription: "an index name prefix (lower-case letters, digits, '.', '_', '-')",
    }),
    retentionDays: integer("LOG_SHIPPING_RETENTION_DAYS", {
      default: 7,
      min: 1,
      max: 3650,
      doc: "Log shipping: days of daily indices kept (today's and the days before); the " +
        "shipping process deletes older ones at start and every hour",
    }),
    batchSize: integer("LOG_SHIPPING_BATCH_SIZE", {
      default: 500,
      min: 1,
      max: 100_000,
      doc: "Log shipping: most lines per bulk request",
    }),
    flushIntervalMs: integer("LOG_SHIPPING_FLUSH_INTERVAL_MS", {
      default: 1000,
      min: 1,
      max: 60_000,
      doc: "Log shipping: longest a line waits for its batch to fill",
    }),
    queueSize: integer("LOG_SHIPPING_QUEUE_SIZE", {
      default: 10_000,
      min: 1,
      max: 10_000_000,
      doc: "Log shipping: lines kept while Elasticsearch is down or slow; beyond it lines are " +
        "dropped and counted (log_records_dropped_total)",
    }),
    memoryMaxLines: integer("LOG_MEMORY_MAX_LINES", {
      default: 10_000,
      min: 1,
      max: 10_000_000,
      doc: "In-process log store (LOG_SHIPPING=memory): recent lines kept for log search",
    }),
  },
  eventLog: {
    adapter: oneOf("EVENT_LOG", ["memory", "kafka"], {
      default: "memory",
      doc: "Event log engine: the in-process log or Apache Kafka",
    }),
    kafkaBrokers: list("KAFKA_BROKERS", {
      default: ["127.0.0.1:19092"],
      doc: "Kafka: bootstrap brokers, host:port",
    }),
    kafkaClient: oneOf("KAFKA_CLIENT", ["platformatic", "kafkajs"], {
      default: "platformatic",
      doc:
        "Kafka: client library (@platformatic/kafka: every compression, static membership with INSTANCE_ID; kafkajs: gzip or none, dynamic membership)",
    }),
    kafkaCompression: oneOf("KAFKA_COMPRESSION", ["none", "lz4", "zstd", "snappy", "gzip"], {
      default: "none",
      // None by default: see the README's Kafka adapters for what LZ4 cost the pipeline.
      doc: "Kafka: compression of produced record batches (kafkajs: none or gzip only)",
    }),
    kafkaClientId: text("KAFKA_CLIENT_ID", {
      default: "twitterapi",
      doc: "Kafka: client id of this process's connections",
    }),
    memoryRetentionRecords: integer("EVENT_LOG_MEMORY_RETENTION_RECORDS", {
      default: 100_000,
      min: 1,
      doc: "In-process log: records kept per partition",
    }),
    memoryRetentionMs: integer("EVENT_LOG_MEMORY_RETENTION_MS", {
      default: 3_600_000,
      doc: "In-process log: age after which records are dropped (0: no age limit)",
    }),
  },
  searchIndex: {
    adapter: oneOf("SEARCH_INDEX", ["memory", "elasticsearch"], {
      default: "memory",
      doc: "Search index engine: the in-process index or Elasticsearch",
    }),
    elasticsearchUrl: text("ELASTICSEARCH_URL", {
      default: "http://127.0.0.1:9200",
      doc: "Elasticsearch: base URL",
      pattern: /^https?:\/\/[^\s/]+(\/.*)?$/,
      patternDescription: "an http(s) URL",
    }),
    elasticsearchIndex: text("ELASTICSEARCH_INDEX", {
      default: "twitter-index",
      doc: "Elasticsearch: index of tweets",
      pattern: /^[a-z0-9][a-z0-9._-]{0,254}$/,
      patternDescription: "an index name (lower-case letters, digits, '.', '_', '-')",
    }),
    elasticsearchRefreshIntervalMs: integer("ELASTICSEARCH_REFRESH_INTERVAL_MS", {
      default: 500,
      min: 1,
      max: 3_600_000,
      doc: "Elasticsearch: the index's refresh interval, set whenever a service opens it: the " +
        "longest an indexed tweet waits to be searchable (shorter: more, smaller segments)",
    }),
    memoryMaxDocuments: integer("SEARCH_INDEX_MEMORY_MAX_DOCUMENTS", {
      default: 1_000_000,
      min: 1,
      doc: "In-process index: documents kept (the oldest are evicted beyond it)",
    }),
  },
  rateLimit: {
    store: oneOf("RATE_LIMIT_STORE", ["memory", "redis"], {
      default: "memory",
      doc: "Where rate-limit windows are kept: in process or in Redis (shared by every gateway)",
    }),
    redisUrl: text("REDIS_URL", {
      default: "redis://127.0.0.1:6379",
      doc: "Redis: URL",
      pattern: /^rediss?:\/\/\S+$/,
      patternDescription: "a redis:// URL",
    }),
  },
  discovery: {
    registryUrls: list("REGISTRY_URLS", {
      default: ["http://127.0.0.1:8761"],
      doc: "Registries: every service registers with each and discovers through the first " +
        "that answers",
    }),
    heartbeatMs: integer("DISCOVERY_HEARTBEAT_MS", {
      default: 1000,
      min: 50,
      max: 60_000,
      doc: "How often a service renews its registration",
    }),
    advertiseHost: text("ADVERTISE_HOST", {
      default: "",
      doc: "Host other services reach this process at; empty: HTTP_HOST, or the hostname when " +
        "HTTP_HOST is 0.0.0.0",
    }),
  },
  auth: {
    oidcIssuer: text("OIDC_ISSUER", {
      default: "http://127.0.0.1:8090/realms/twitterapi",
      doc: "Issuer whose access tokens the gateway and every service accept",
      pattern: /^https?:\/\/[^\s/]+(\/\S*[^/\s])?$/,
      patternDescription: "an http(s) URL without a trailing '/'",
    }),
  },
  registry: {
    port: integer("REGISTRY_PORT", { default: 8761, ...PORT, doc: "registry: HTTP port" }),
    ttlMs: integer("REGISTRY_TTL_MS", {
      default: 3000,
      min: 100,
      max: 600_000,
      doc: "registry: an instance without a heartbeat for this long is evicted",
    }),
  },
  identity: {
    port: integer("IDENTITY_PORT", { default: 8090, ...PORT, doc: "identity: HTTP port" }),
    ...serviceClient("identity", "its registrations"),
    publicUrl: text("IDENTITY_PUBLIC_URL", {
      default: "",
      doc: "identity: base URL of the issuer `<url>/realms/<realm>`; empty: the URL each request " +
        "came to, as Keycloak does",
      pattern: /^https?:\/\/[^\s/]+(\/\S*[^/\s])?$/,
      patternDescription: "an http(s) URL without a trailing '/'",
    }),
    realmFile: text("IDENTITY_REALM_FILE", {
      default: "",
      doc: "identity: Keycloak realm export with the users, roles and clients; empty: the " +
        "built-in shared/auth/twitterapi-realm.json",
    }),
    signingKeysFile: text("IDENTITY_SIGNING_KEYS_FILE", {
      default: ".data/identity/signing-keys.json",
      allowEmpty: true,
      doc: "identity: the signing keys, private halves included (JSON, mode 0600), kept between " +
        "starts so a restart signs with the same keys and its tokens stay valid; empty: new keys " +
        "in memory at every start",
    }),
    keyRotationMs: integer("IDENTITY_KEY_ROTATION_MS", {
      default: 86_400_000,
      doc: "identity: how often new signing keys replace the active ones (0: never); a retired " +
        "key stays published for the realm's access-token lifespan",
    }),
    devPasswords: list("IDENTITY_DEV_PASSWORDS", {
      default: [],
      doc: "identity: `user:password` items replacing the realm file's development passwords",
    }),
    clientSecrets: list("IDENTITY_CLIENT_SECRETS", {
      default: [],
      doc: "identity: `clientId:secret` items replacing the realm file's development client " +
        "secrets",
    }),
    autoApproveLoginHint: boolean("IDENTITY_AUTO_APPROVE_LOGIN_HINT", {
      default: false,
      doc: "identity: the code flow signs in the realm user named by `login_hint` without a " +
        "password (development only)",
    }),
  },
  configServer: {
    port: integer("CONFIG_PORT", { default: 8888, ...PORT, doc: "config: HTTP port" }),
    ...serviceClient("config", "its registrations"),
    repository: text("CONFIG_REPOSITORY", {
      default: "",
      doc: "config: folder of `application.*`, `{application}.*` and `{application}-{profile}.*` " +
        "YAML or JSON files; empty: services/config/repository",
    }),
    encryptKeys: list("CONFIG_ENCRYPT_KEYS", {
      default: [DEV_ENCRYPT_KEY],
      doc: "config: AES-256 keys of `{cipher}` secrets, `<key id>:<base64 of 32 bytes>` items; " +
        "the default is the development key (replace it, see README)",
    }),
    encryptActiveKey: text("CONFIG_ENCRYPT_ACTIVE_KEY", {
      default: "",
      doc: "config: key id `POST /encrypt` uses; empty: the first of CONFIG_ENCRYPT_KEYS",
    }),
  },
  configClient: {
    url: text("CONFIG_URL", {
      default: "",
      doc: "Config service every service (but registry, identity and config) loads its " +
        "settings from at start and follows; empty: the environment only",
      pattern: /^(https?:\/\/[^\s/]+(\/\S*[^/\s])?)?$/,
      patternDescription: "empty or an http(s) URL without a trailing '/'",
    }),
    applications: list("CONFIG_APPLICATIONS", {
      default: [],
      doc: "Services that load their settings from CONFIG_URL; empty: every service but " +
        "registry, identity and config",
    }),
    profile: text("CONFIG_PROFILE", {
      default: "default",
      doc: "Profiles the services ask the config service for (comma-separated, the last wins)",
      pattern: /^[a-z0-9][a-z0-9_-]*(,[a-z0-9][a-z0-9_-]*)*$/,
      patternDescription: "comma-separated profile names (lower-case letters, digits, '_', '-')",
    }),
    startTimeoutMs: integer("CONFIG_START_TIMEOUT_MS", {
      default: 20_000,
      min: 0,
      max: 600_000,
      doc: "How long a service retries an unreachable config service at start before it starts " +
        "from its cached copy, or stops without one",
    }),
    pollMs: integer("CONFIG_POLL_MS", {
      default: 1_000,
      min: 100,
      max: 600_000,
      doc: "While the config service's watch stream is down, how often a service polls it (with " +
        "If-None-Match)",
    }),
    cacheDir: text("CONFIG_CACHE_DIR", {
      default: ".data/config-cache",
      doc: "Where each service keeps the last configuration it applied, for a start while the " +
        "config service is down",
    }),
  },
  gateway: {
    port: integer("GATEWAY_PORT", { default: 9092, ...PORT, doc: "gateway: HTTP port" }),
    managementPort: integer("GATEWAY_MANAGEMENT_PORT", {
      default: 9093,
      ...PORT,
      doc: "gateway: management port, the only one serving its `/ready` and `/metrics` (the " +
        "public port serves `/health` and the API); 0 picks a free port",
    }),
    ...serviceClient("gateway", "its registrations and its reads of the registry"),
    routesFile: text("GATEWAY_ROUTES_FILE", {
      default: "",
      doc: "gateway: JSON route table replacing the built-in routes (see " +
        "services/gateway/routes.ts); empty: the built-in routes",
    }),
    routes: text("GATEWAY_ROUTES", {
      default: "",
      doc: "gateway: the route table itself, JSON or YAML in the same shape as " +
        "GATEWAY_ROUTES_FILE's, replacing the file and the built-in routes; for the config " +
        "service's repository (refreshable: routes, timeouts, retries and breaker options)",
    }),
    rateLimits: list("GATEWAY_RATE_LIMITS", {
      default: [],
      doc:
        "gateway: `<policy>=<limit>/<window ms>` items overriding the route table's rate-limit " +
        "policies (refreshable)",
    }),
    docsClientId: text("GATEWAY_DOCS_CLIENT_ID", {
      default: "api-docs",
      doc: "gateway: public OAuth client of the API reference at `/docs` (authorization code " +
        "with PKCE; its redirect URI is the gateway's `/docs/oauth2-redirect.html`)",
      pattern: /^\S+$/,
      patternDescription: "a client id",
    }),
    trustForwardedFor: boolean("GATEWAY_TRUST_FORWARDED_FOR", {
      default: false,
      doc: "gateway: take the client address from the last X-Forwarded-For entry (only behind " +
        "exactly one trusted proxy)",
    }),
  },
  tweets: {
    topic: text("TWEET_TOPIC", {
      default: "twitter-topic",
      doc: "Topic of tweet events",
      ...TOPIC_NAME,
    }),
    partitions: integer("TWEET_TOPIC_PARTITIONS", {
      default: 3,
      min: 1,
      max: 1000,
      doc: "Partitions of the tweet topic",
    }),
  },
  wordCounts: {
    topic: text("WORD_COUNT_TOPIC", {
      default: "twitter-analytics-topic",
      doc: "Topic of word-count updates (wordcount writes, analytics reads)",
      ...TOPIC_NAME,
    }),
    partitions: integer("WORD_COUNT_TOPIC_PARTITIONS", {
      default: 3,
      min: 1,
      max: 1000,
      doc: "Partitions of the word-count topic",
    }),
  },
  stream: {
    port: integer("STREAM_PORT", { default: 8181, ...PORT, doc: "stream: HTTP port" }),
    ...serviceClient("stream", "its registrations"),
    ratePerSecond: integer("STREAM_RATE_PER_SECOND", {
      default: 10,
      min: 1,
      max: 1_000_000,
      doc: "stream: tweets produced per second",
    }),
    // About what one process of `main.ts all` produces on the embedded engines of a busy
    // 2-core machine: above it the stream sheds, and GET /api/v1/stream says so.
    maxRatePerSecond: integer("STREAM_MAX_RATE_PER_SECOND", {
      default: 10_000,
      min: 1,
      doc: "stream: highest rate PUT /api/v1/stream/rate accepts",
    }),
    lingerMs: integer("STREAM_LINGER_MS", {
      default: 20,
      min: 0,
      max: 10_000,
      doc: "stream: least time between the starts of two sends; tweets due meanwhile leave " +
        "together (fewer, larger produce requests, fetches and bulk writes at low rates)",
    }),
    maxSendsInFlight: integer("STREAM_MAX_SENDS_IN_FLIGHT", {
      default: 3,
      min: 1,
      max: 100,
      doc: "stream: most sends waiting for Kafka's acknowledgement at once (the next batch is " +
        "made while they are on their way; tweets of different sends may be stored out of order)",
    }),
    count: integer("STREAM_COUNT", {
      default: 0,
      doc: "stream: stop after this many tweets (0: never stop)",
    }),
    autoStart: boolean("STREAM_AUTO_START", {
      default: true,
      doc: "stream: produce from start-up (false: start paused)",
    }),
    keywords: list("STREAM_KEYWORDS", {
      default: ["Java", "Microservices", "Spring", "Kafka", "Elasticsearch"],
      doc: "stream: one of these is inserted into every tweet",
    }),
    minWords: integer("STREAM_MIN_WORDS", {
      default: 5,
      min: 1,
      max: 280,
      doc: "stream: fewest vocabulary words per tweet (plus one keyword)",
    }),
    maxWords: integer("STREAM_MAX_WORDS", {
      default: 15,
      min: 1,
      max: 280,
      doc: "stream: most vocabulary words per tweet (plus one keyword)",
    }),
    users: integer("STREAM_USERS", {
      default: 1000,
      min: 1,
      doc: "stream: distinct mock authors",
    }),
    workerId: integer("STREAM_WORKER_ID", {
      default: -1,
      min: -1,
      max: 1023,
      doc: "stream: 10-bit worker id inside tweet ids (-1: random); unique per stream instance",
    }),
  },
  indexer: {
    port: integer("INDEXER_PORT", { default: 8182, ...PORT, doc: "indexer: HTTP port" }),
    ...serviceClient("indexer", "its registrations"),
    groupId: text("INDEXER_GROUP_ID", {
      default: "twitter-indexer",
      doc: "indexer: consumer group",
    }),
    deadLetterTopic: text("INDEXER_DEAD_LETTER_TOPIC", {
      default: "twitter-topic.dlq",
      doc: "indexer: topic for undecodable events",
      ...TOPIC_NAME,
    }),
    partitionConcurrency: integer("INDEXER_PARTITION_CONCURRENCY", {
      default: 3,
      min: 1,
      max: 1000,
      doc: "indexer: batches of different partitions written at the same time",
    }),
    maxBatchSize: integer("INDEXER_MAX_BATCH_SIZE", {
      default: 500,
      min: 1,
      max: 100_000,
      doc: "indexer: most events per bulk write",
    }),
  },
  wordcount: {
    port: integer("WORDCOUNT_PORT", { default: 8187, ...PORT, doc: "wordcount: HTTP port" }),
    ...serviceClient("wordcount", "its registrations and its reads of the registry"),
    groupId: text("WORDCOUNT_GROUP_ID", {
      default: "wordcount",
      doc: "wordcount: consumer group; with the instance id, also the transactional id",
    }),
    repartitionTopic: text("WORDCOUNT_REPARTITION_TOPIC", {
      default: "wordcount-repartition",
      doc: "wordcount: internal topic of word occurrences keyed by word",
      ...TOPIC_NAME,
    }),
    changelogTopic: text("WORDCOUNT_CHANGELOG_TOPIC", {
      default: "wordcount-changelog",
      doc: "wordcount: compacted topic the state stores are restored from",
      ...TOPIC_NAME,
    }),
    partitions: integer("WORDCOUNT_PARTITIONS", {
      default: 3,
      min: 1,
      max: 1000,
      doc: "wordcount: partitions of the repartition and changelog topics (the unit of " +
        "ownership and scaling); fixed once the topics exist",
    }),
    commitIntervalMs: integer("WORDCOUNT_COMMIT_INTERVAL_MS", {
      default: 1000,
      min: 10,
      max: 60_000,
      doc: "wordcount: how often counts, changelog and offsets commit together (and updates " +
        "are emitted, coalesced)",
    }),
    windows: list("WORDCOUNT_WINDOWS", {
      default: ["1m", "1h"],
      doc: "wordcount: tumbling window sizes counted besides all-time (<n>s, <n>m, <n>h, <n>d)",
    }),
    maxBatchSize: integer("WORDCOUNT_MAX_BATCH_SIZE", {
      default: 1000,
      min: 1,
      max: 100_000,
      doc: "wordcount: most events per handler call",
    }),
  },
  query: {
    port: integer("QUERY_PORT", { default: 8183, ...PORT, doc: "query: HTTP port" }),
    defaultPageSize: integer("QUERY_DEFAULT_PAGE_SIZE", {
      default: 20,
      min: 1,
      max: 1000,
      doc: "query: page size when `size` is not given",
    }),
    maxPageSize: integer("QUERY_MAX_PAGE_SIZE", {
      default: 100,
      min: 1,
      max: 10_000,
      doc: "query: largest accepted `size`",
    }),
    v1DeprecatedAt: instant("QUERY_V1_DEPRECATED_AT", {
      default: Date.UTC(2026, 10, 24),
      doc: "query: date announced in the v1 `Deprecation` header",
    }),
    databaseUrl: text("QUERY_DATABASE_URL", {
      default: "",
      doc: "query: PostgreSQL URL of the permission database (schema `query`); empty: embedded " +
        "PGlite in memory",
    }),
    seedDevGrants: boolean("QUERY_SEED_DEV_GRANTS", {
      default: true,
      doc: "query: grant the realm's demo users their development permissions at start-up",
    }),
    grantCacheTtlMs: integer("QUERY_GRANT_CACHE_TTL_MS", {
      default: 60_000,
      min: 0,
      max: 3_600_000,
      doc: "query: longest a user's grants stay cached (changes reach every instance at once by " +
        "database notification; this bounds a lost one)",
    }),
    grantCacheMaxUsers: integer("QUERY_GRANT_CACHE_MAX_USERS", {
      default: 10_000,
      min: 1,
      doc: "query: users whose grants are cached at most",
    }),
    wordCountsFrom: oneOf("QUERY_WORD_COUNTS_FROM", ["analytics", "wordcount"], {
      default: "analytics",
      doc: "query: where search responses take word counts from",
    }),
    wordCountsTimeoutMs: integer("QUERY_WORD_COUNTS_TIMEOUT_MS", {
      default: 1_000,
      min: 1,
      max: 60_000,
      doc: "query: the word counts of one search are unavailable after this long",
    }),
    ...serviceClient(
      "query",
      "its registrations, its reads of the registry and its calls to the word-count APIs",
    ),
  },
  analytics: {
    port: integer("ANALYTICS_PORT", { default: 8188, ...PORT, doc: "analytics: HTTP port" }),
    ...serviceClient("analytics", "its registrations"),
    databaseUrl: text("ANALYTICS_DATABASE_URL", {
      default: "",
      doc: "analytics: PostgreSQL URL of its database (schema `analytics`); empty: an embedded " +
        "PGlite in memory",
      pattern: /^(postgres(ql)?:\/\/\S+)?$/,
      patternDescription: "empty or a postgres:// URL",
    }),
    groupId: text("ANALYTICS_GROUP_ID", {
      default: "analytics",
      doc: "analytics: consumer group of the word-count topic",
    }),
    deadLetterTopic: text("ANALYTICS_DEAD_LETTER_TOPIC", {
      default: "twitter-analytics-topic.dlq",
      doc: "analytics: topic for undecodable or invalid word-count events",
      ...TOPIC_NAME,
    }),
    historyPerWord: integer("ANALYTICS_HISTORY_PER_WORD", {
      default: 100,
      min: 1,
      max: 100_000,
      doc: "analytics: count updates kept per word (the newest)",
    }),
    maxBatchSize: integer("ANALYTICS_MAX_BATCH_SIZE", {
      default: 500,
      min: 1,
      max: 100_000,
      doc: "analytics: most events per database transaction",
    }),
  },
  console: {
    port: integer("CONSOLE_PORT", { default: 8184, ...PORT, doc: "console: HTTP port" }),
    ...serviceClient("console", "its registrations and its reads of the registry"),
    browserClientId: text("CONSOLE_BROWSER_CLIENT_ID", {
      default: "twitterapi-console",
      doc: "console: public OAuth client people sign in through (authorization code with PKCE)",
    }),
    publicUrl: text("CONSOLE_PUBLIC_URL", {
      default: "",
      doc:
        "console: its address in the browser, for the redirect URIs; empty: the request's origin",
      pattern: /^(https?:\/\/[^\s/]+)?$/,
      patternDescription: "empty or an origin like https://console.example",
    }),
    sessionIdleMs: integer("CONSOLE_SESSION_IDLE_MS", {
      default: 1_800_000,
      min: 1000,
      doc: "console: a session without a request for this long is forgotten",
    }),
    maxSessions: integer("CONSOLE_MAX_SESSIONS", {
      default: 10_000,
      min: 1,
      doc: "console: sessions kept at most (the least recently used goes first)",
    }),
  },
};

export type AppConfig = ConfigOf<typeof settings>;

/** Every setting's variable name. */
export const SETTING_NAMES: readonly string[] = listSettings(settings).map((setting) =>
  setting.env
);

/**
 * Settings whose new value from the config service applies while running;
 * every other change is reported as "restart required".
 */
export const REFRESHABLE: ReadonlySet<string> = new Set([
  "LOG_LEVEL",
  "GATEWAY_RATE_LIMITS",
  "GATEWAY_ROUTES",
  "STREAM_RATE_PER_SECOND",
  "STREAM_KEYWORDS",
  "QUERY_DEFAULT_PAGE_SIZE",
  "QUERY_MAX_PAGE_SIZE",
  "QUERY_GRANT_CACHE_TTL_MS",
]);

/**
 * Settings the config service's repository must not set: they configure the
 * process (engines shared by its services, addresses, the config client
 * itself), so they come from the environment.
 */
export const ENVIRONMENT_ONLY: ReadonlySet<string> = new Set(
  [
    settings.process,
    settings.eventLog,
    settings.searchIndex,
    settings.rateLimit,
    settings.discovery,
    settings.auth,
    settings.configServer,
    settings.configClient,
  ].flatMap((group) => listSettings(group).map((setting) => setting.env))
    .filter((name) => name !== "LOG_LEVEL")
    // A service's own credentials read its configuration: they cannot come from it.
    .concat(SETTING_NAMES.filter((name) => /_CLIENT_(ID|SECRET)$/.test(name))),
);

/** `<policy>=<limit>/<window ms>` items of GATEWAY_RATE_LIMITS; throws `RangeError`. */
export function parseRateLimitOverrides(
  items: readonly string[],
): Map<string, { limit: number; windowMs: number }> {
  const overrides = new Map<string, { limit: number; windowMs: number }>();
  for (const item of items) {
    const match = /^([A-Za-z0-9._-]+)=([1-9][0-9]{0,9})\/([1-9][0-9]{0,8})$/.exec(item);
    if (match === null) {
      throw new RangeError(
        `must be <policy>=<limit>/<window ms> items like tweets=600/60000, got '${item}'`,
      );
    }
    if (overrides.has(match[1]!)) throw new RangeError(`names policy '${match[1]}' twice`);
    overrides.set(match[1]!, { limit: Number(match[2]), windowMs: Number(match[3]) });
  }
  return overrides;
}

/** The services that register with the registry, each as its own OAuth client. */
export const REGISTERING_SERVICES = [
  "identity",
  "config",
  "gateway",
  "stream",
  "indexer",
  "wordcount",
  "analytics",
  "query",
  "console",
] as const;
export type RegisteringService = typeof REGISTERING_SERVICES[number];

export function isRegisteringService(name: string): name is RegisteringService {
  return (REGISTERING_SERVICES as readonly string[]).includes(name);
}

/** The client id and secret a service authenticates with. */
export function serviceCredentials(
  config: AppConfig,
  service: RegisteringService,
): { readonly clientId: string; readonly clientSecret: string } {
  const { clientId, clientSecret } = service === "config" ? config.configServer : config[service];
  return { clientId, clientSecret };
}

/** The compressions kafkajs has built in. */
export function isKafkajsCompression(compression: string): compression is "none" | "gzip" {
  return compression === "none" || compression === "gzip";
}

/** Reads and validates the whole configuration; throws `ConfigError`. */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): AppConfig {
  const config = loadSettings(settings, env);
  if (config.stream.minWords > config.stream.maxWords) {
    throw new ConfigError([{
      env: "STREAM_MIN_WORDS",
      message:
        `must not exceed STREAM_MAX_WORDS (${config.stream.maxWords}), got ${config.stream.minWords}`,
    }]);
  }
  const { kafkaClient, kafkaCompression } = config.eventLog;
  if (kafkaClient === "kafkajs" && !isKafkajsCompression(kafkaCompression)) {
    throw new ConfigError([{
      env: "KAFKA_COMPRESSION",
      message: `must be none or gzip with KAFKA_CLIENT=kafkajs (@platformatic/kafka has lz4, ` +
        `zstd and snappy too), got '${kafkaCompression}'`,
    }]);
  }
  const badWindows = config.wordcount.windows.filter((window) =>
    !/^[1-9][0-9]{0,5}[smhd]$/.test(window)
  );
  if (badWindows.length > 0 || config.wordcount.windows.length === 0) {
    throw new ConfigError([{
      env: "WORDCOUNT_WINDOWS",
      message: `must be one or more sizes like 30s, 1m, 1h, 1d, got '${
        config.wordcount.windows.join(",")
      }'`,
    }]);
  }
  try {
    parseRateLimitOverrides(config.gateway.rateLimits);
  } catch (error) {
    throw new ConfigError([{ env: "GATEWAY_RATE_LIMITS", message: (error as Error).message }]);
  }
  if (config.gateway.routes !== "") {
    try {
      parseRouteText(config.gateway.routes, "GATEWAY_ROUTES");
    } catch (error) {
      if (!(error instanceof RouteTableError)) throw error;
      throw new ConfigError([{ env: "GATEWAY_ROUTES", message: error.issues.join("; ") }]);
    }
  }
  try {
    const keys = parseKeyItems(config.configServer.encryptKeys);
    const active = config.configServer.encryptActiveKey;
    if (active !== "" && !keys.some((key) => key.id === active)) {
      throw new RangeError(`names no key of CONFIG_ENCRYPT_KEYS, got '${active}'`);
    }
  } catch (error) {
    throw new ConfigError([{ env: "CONFIG_ENCRYPT_KEYS", message: (error as Error).message }]);
  }
  return config;
}
