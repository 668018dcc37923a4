/**
 * Every engine version, pinned in one place. The Elasticsearch client in
 * deno.json has the same major as the server here.
 */
export const VERSIONS = {
  kafka: "3.9.2",
  elasticsearch: "8.19.21",
  redis: "Debian 12 redis-server 5:7.0.15-1~deb12u10",
  postgres: "Debian 12 postgresql-15 15.18-0+deb12u1",
  zipkin: "3.6.1",
  keycloak: "26.7.3",
  prometheus: "Debian 12 prometheus 2.42.0+ds-5+deb12u1",
} as const;
