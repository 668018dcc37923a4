/**
 * Every engine version, pinned in one place. The Elasticsearch client in
 * deno.json has the same major as the server here.
 */
export const VERSIONS = {
  kafka: "TBD",
  elasticsearch: "TBD",
  redis: "Debian 12 redis-server 7.0",
  postgres: "Debian 12 postgresql 15",
  zipkin: "TBD",
  keycloak: "TBD",
} as const;
