/**
 * The registry's table as Prometheus HTTP service discovery
 * (`http_sd_configs`): one target group per registered instance, so that
 * Prometheus scrapes every instance the registry knows, and a new one
 * within a refresh, without any file being edited.
 *
 * Target labels are `service` and `instance` (the instance id). The version,
 * base URL and metadata come as `__meta_registry_*` labels, which relabelling
 * may use and which are dropped afterwards: the version is in each service's
 * `service_info{version}` instead, as Prometheus advises for build labels
 * (a target label would restart every series on each deployment).
 */
import type { ServiceInstance } from "../../shared/discovery/service_discovery.ts";

/** One entry of the http_sd JSON: targets and the labels they share. */
export interface TargetGroup {
  readonly targets: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
}

/** Label names: [a-zA-Z_][a-zA-Z0-9_]*; metadata keys may hold '-' and '.'. */
function labelName(key: string): string {
  return key.replace(/[^a-zA-Z0-9_]/g, "_");
}

function defaultPort(protocol: string): string {
  return protocol === "https:" ? "443" : "80";
}

function httpUrl(text: string): URL | undefined {
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:" ? url : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The target group of one instance; undefined when its base URL is not
 * http(s). It is scraped at its metadata's `metricsUrl` when that is an
 * http(s) URL (the gateway's management port: its public port has no
 * `/metrics`), else at `<base URL>/metrics`.
 */
export function targetGroup(instance: ServiceInstance): TargetGroup | undefined {
  const base = httpUrl(instance.baseUrl);
  if (base === undefined) return undefined;
  const declared = instance.metadata.metricsUrl;
  const url = (declared === undefined ? undefined : httpUrl(declared)) ??
    new URL(`${base.pathname.replace(/\/$/, "")}/metrics`, base);
  const labels: Record<string, string> = {
    service: instance.service,
    instance: instance.instanceId,
    __scheme__: url.protocol.slice(0, -1),
    __metrics_path__: url.pathname,
    __meta_registry_version: instance.version,
    __meta_registry_base_url: instance.baseUrl,
  };
  for (const [key, value] of Object.entries(instance.metadata)) {
    labels[`__meta_registry_metadata_${labelName(key)}`] = value;
  }
  return { targets: [`${url.hostname}:${url.port || defaultPort(url.protocol)}`], labels };
}

/** Every instance's target group, in the order given. */
export function targetGroups(instances: Iterable<ServiceInstance>): TargetGroup[] {
  const groups: TargetGroup[] = [];
  for (const instance of instances) {
    const group = targetGroup(instance);
    if (group !== undefined) groups.push(group);
  }
  return groups;
}
