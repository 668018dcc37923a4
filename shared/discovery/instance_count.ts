/**
 * How many instances of a service the registry lists, kept current as they
 * come and go: the gateway divides its rate limits by the number of
 * gateways while Redis is down.
 */
import type { InstancesListener } from "./registry_client.ts";
import type { ServiceInstance } from "./service_discovery.ts";

/** The part of `RegistryClient` followed. */
export interface FollowedDiscovery {
  instances(service: string): Promise<readonly ServiceInstance[]>;
  onChange(service: string, listener: InstancesListener): () => void;
}

export interface InstanceCount {
  /** The instances listed now; at least 1 (this one, before the registry lists it). */
  count(): number;
  /** Stops following. */
  close(): void;
}

export function followInstanceCount(
  discovery: FollowedDiscovery,
  service: string,
): InstanceCount {
  let listed = 0;
  const unsubscribe = discovery.onChange(service, (instances) => listed = instances.length);
  // The view the client already has, should no change follow soon.
  discovery.instances(service).then(
    (instances) => listed = instances.length,
    () => {}, // the client reports unreachable registries itself
  );
  return { count: () => Math.max(1, listed), close: unsubscribe };
}
