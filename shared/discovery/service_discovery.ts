/**
 * Where clients find the instances of a service: the seam between the
 * registry client (heartbeat-based discovery) and the load-balanced HTTP
 * client that calls services by name.
 */

export interface ServiceInstance {
  /** The service's name, e.g. `query`. */
  readonly service: string;
  /** Unique among the service's instances, stable for the life of the process. */
  readonly instanceId: string;
  /** Where the instance answers, without a trailing slash: `http://127.0.0.1:8183`. */
  readonly baseUrl: string;
  readonly version: string;
  readonly metadata: Readonly<Record<string, string>>;
}

export interface ServiceDiscovery {
  /**
   * The healthy instances of `service` as known now. A discovery that lost
   * its registry answers with the last view it had rather than nothing.
   */
  instances(service: string): Promise<readonly ServiceInstance[]>;
}

/** A fixed set of instances: for tests and for deployments without a registry. */
export class StaticDiscovery implements ServiceDiscovery {
  readonly #byService = new Map<string, readonly ServiceInstance[]>();

  constructor(instances: readonly ServiceInstance[]) {
    for (const instance of instances) {
      this.#byService.set(instance.service, [
        ...(this.#byService.get(instance.service) ?? []),
        instance,
      ]);
    }
  }

  instances(service: string): Promise<readonly ServiceInstance[]> {
    return Promise.resolve(this.#byService.get(service) ?? []);
  }
}
