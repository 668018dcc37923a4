import assert from "node:assert/strict";
import type { InstancesListener } from "./registry_client.ts";
import type { ServiceInstance } from "./service_discovery.ts";
import { followInstanceCount } from "./instance_count.ts";

function instance(id: string): ServiceInstance {
  return {
    service: "gateway",
    instanceId: id,
    baseUrl: "http://127.0.0.1:1",
    version: "t",
    metadata: {},
  };
}

Deno.test("the instance count follows the registry's view and is at least 1", async () => {
  let listener: InstancesListener | undefined;
  let unsubscribed = false;
  const counted = followInstanceCount({
    instances: () => Promise.resolve([instance("a")]),
    onChange: (_service, onChange) => {
      listener = onChange;
      return () => void (unsubscribed = true);
    },
  }, "gateway");
  await Promise.resolve();
  assert.equal(counted.count(), 1);
  listener!([instance("a"), instance("b")]);
  assert.equal(counted.count(), 2);
  listener!([]);
  assert.equal(counted.count(), 1, "this instance counts before the registry lists it");
  counted.close();
  assert.ok(unsubscribed);
});
