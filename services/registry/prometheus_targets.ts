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

/** The target group of one instance; undefined when its base URL is not http(s). */
export function targetGroup(instance: ServiceInstance): TargetGroup | undefined {
  let url: URL;
  try {
    url = new URL(instance.baseUrl);
  } catch {
    return undefined;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return undefined;
  const labels: Record<string, string> = {
    service: instance.service,
    instance: instance.instanceId,
    __scheme__: url.protocol.slice(0, -1),
    __metrics_path__: `${url.pathname.replace(/\/$/, "")}/metrics`,
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
