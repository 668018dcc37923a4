/**
 * Development grants for the realm's demo users, written at start-up when
 * `QUERY_SEED_DEV_GRANTS` is true: app_user may read the tweets of the first
 * mock authors, app_admin administers everything, app_super_user needs none
 * (its role bypasses permissions). Writing them again is harmless; a changed
 * level of one of them is set back at the next start.
 */
import realm from "../../shared/auth/twitterapi-realm.json" with { type: "json" };
import { mockUserId } from "../../shared/events/mock_users.ts";
import type { Grant, PermissionStore } from "./permissions.ts";

/** Mock authors (by index) whose tweets app_user may read. */
export const DEV_READABLE_AUTHORS = 5;

/** The realm file's id (the token `sub`) of a user. */
export function realmUserId(username: string): string {
  const user = realm.users.find((candidate) => candidate.username === username);
  if (user === undefined) throw new Error(`The realm file has no user ${username}`);
  return user.id;
}

export function devGrants(): Grant[] {
  const appUser = realmUserId("app_user");
  return [
    ...Array.from({ length: DEV_READABLE_AUTHORS }, (_, index): Grant => ({
      userId: appUser,
      scope: "author",
      target: mockUserId(index).toString(),
      level: "READ",
    })),
    { userId: realmUserId("app_admin"), scope: "all", target: "", level: "ADMIN" },
  ];
}

/** Writes the development grants; resolves to the users whose grants changed. */
export async function seedDevGrants(store: PermissionStore): Promise<Set<string>> {
  const changed = new Set<string>();
  for (const grant of devGrants()) {
    if (await store.grant(grant)) changed.add(grant.userId);
  }
  return changed;
}
