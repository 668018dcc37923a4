/**
 * Per-document read permissions (seed: elastic-query-service's ACL tables,
 * SPEC section 2.4, section 8 items 5, 10-13). A grant gives one user (the token's `sub`)
 * a level on one tweet, on every tweet of one author, or on everything.
 * Levels are ordered: ADMIN includes WRITE, which includes READ. Grants live
 * in the query service's own schema, the same on PGlite and PostgreSQL.
 */
import type { SqlDatabase } from "../../shared/database/database.ts";
import type { Migration } from "../../shared/database/migrations.ts";
import type { Visibility } from "../../shared/search_index/search_index.ts";

export const LEVELS = ["READ", "WRITE", "ADMIN"] as const;
export type Level = typeof LEVELS[number];

export const SCOPES = ["tweet", "author", "all"] as const;
export type Scope = typeof SCOPES[number];

/** Whether a grant of `granted` allows what `required` allows. */
export function allows(granted: Level, required: Level): boolean {
  return LEVELS.indexOf(granted) >= LEVELS.indexOf(required);
}

/** What a grant applies to: `target` is the tweet id or author id, "" for `all`. */
export interface GrantKey {
  readonly userId: string;
  readonly scope: Scope;
  readonly target: string;
}

export interface Grant extends GrantKey {
  readonly level: Level;
}

export interface StoredGrant extends Grant {
  readonly grantedAt: Date;
}

export const PERMISSION_MIGRATIONS: readonly Migration[] = [{
  id: "0001_grants",
  sql: `
    CREATE TABLE grants (
      user_id text NOT NULL,
      scope text NOT NULL CHECK (scope IN ('tweet', 'author', 'all')),
      target text NOT NULL,
      level text NOT NULL CHECK (level IN ('READ', 'WRITE', 'ADMIN')),
      granted_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (user_id, scope, target),
      CHECK ((scope = 'all') = (target = ''))
    );
  `,
}];

/**
 * The grants table of one schema (`query` in production, a unique one in
 * tests). Every change notifies the user id on `channel`, when it commits, so
 * every instance drops that user's cached visibility.
 */
export class PermissionStore {
  /** The notification channel of grant changes: `<schema>_grants`. */
  readonly channel: string;

  constructor(readonly db: SqlDatabase, readonly schema: string) {
    this.channel = `${schema}_grants`;
  }

  /**
   * Calls `changed` with the user id of every grant change, made by any
   * instance; `resync` whenever changes may have been missed (after the
   * listening connection was lost). Resolves to the function that stops.
   */
  watch(changed: (userId: string) => void, resync: () => void): Promise<() => Promise<void>> {
    let established = false;
    return this.db.listen(this.channel, changed, () => {
      if (established) resync();
      established = true;
    });
  }

  /**
   * Grants `level`, replacing the level of an existing grant with the same
   * key. Resolves to whether anything changed (false: the same grant existed).
   */
  async grant(grant: Grant): Promise<boolean> {
    const rows = await this.db.query<{ user_id: string }>(
      `WITH changed AS (
         INSERT INTO ${this.schema}.grants (user_id, scope, target, level)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id, scope, target) DO UPDATE
         SET level = excluded.level, granted_at = now()
         WHERE grants.level <> excluded.level
         RETURNING user_id
       )
       SELECT user_id, pg_notify($5, user_id) FROM changed`,
      [grant.userId, grant.scope, grant.target, grant.level, this.channel],
    );
    return rows.length > 0;
  }

  /** Removes the grant with this key; resolves to whether there was one. */
  async revoke(key: GrantKey): Promise<boolean> {
    const rows = await this.db.query<{ user_id: string }>(
      `WITH changed AS (
         DELETE FROM ${this.schema}.grants WHERE user_id = $1 AND scope = $2 AND target = $3
         RETURNING user_id
       )
       SELECT user_id, pg_notify($4, user_id) FROM changed`,
      [key.userId, key.scope, key.target, this.channel],
    );
    return rows.length > 0;
  }

  /** The user's grants, in scope and target order. */
  async grantsOf(userId: string): Promise<StoredGrant[]> {
    const rows = await this.db.query<
      { scope: Scope; target: string; level: Level; granted_at: Date }
    >(
      `SELECT scope, target, level, granted_at FROM ${this.schema}.grants
       WHERE user_id = $1 ORDER BY scope, target`,
      [userId],
    );
    return rows.map((row) => ({
      userId,
      scope: row.scope,
      target: row.target,
      level: row.level,
      grantedAt: row.granted_at,
    }));
  }

  /** What the user may read: every grant allows READ. */
  async visibilityOf(userId: string): Promise<Visibility> {
    return visibilityFrom(await this.grantsOf(userId));
  }
}

export function visibilityFrom(grants: readonly Grant[]): Visibility {
  const readable = grants.filter((grant) => allows(grant.level, "READ"));
  return {
    all: readable.some((grant) => grant.scope === "all"),
    tweetIds: readable.filter((grant) => grant.scope === "tweet").map((grant) => grant.target),
    authorIds: readable.filter((grant) => grant.scope === "author").map((grant) => grant.target),
  };
}

export interface VisibilityCacheOptions {
  /** Loads a user's visibility from the store. */
  readonly load: (userId: string) => Promise<Visibility>;
  /** Users kept at most; the least recently used is dropped beyond it. */
  readonly maxUsers: number;
  /** How long a cached visibility is used at most. */
  readonly ttlMs: number;
  /** Milliseconds, monotonic. @default performance.now */
  readonly now?: () => number;
}

/**
 * Each user's visibility, cached so a search costs no database query. The
 * owner invalidates a user's entry when their grants change (at once on the
 * instance that changed them, on notification elsewhere); `ttlMs` bounds the
 * age of an entry should a notification be lost. Concurrent misses for one
 * user share one load.
 */
export class VisibilityCache {
  readonly #options: VisibilityCacheOptions;
  #ttlMs: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, { visibility: Visibility; loadedAt: number }>();
  readonly #loading = new Map<string, Promise<Visibility>>();
  /** Bumped per user on invalidation, so a load that started before it is not cached. */
  readonly #generations = new Map<string, number>();

  constructor(options: VisibilityCacheOptions) {
    this.#options = options;
    this.#ttlMs = options.ttlMs;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Changes the longest age of an entry, for entries cached already too. */
  setTtlMs(ttlMs: number): void {
    this.#ttlMs = ttlMs;
  }

  get size(): number {
    return this.#entries.size;
  }

  async visibilityOf(userId: string): Promise<Visibility> {
    const entry = this.#entries.get(userId);
    if (entry !== undefined && this.#now() - entry.loadedAt < this.#ttlMs) {
      // Re-inserting keeps the map in least-recently-used order.
      this.#entries.delete(userId);
      this.#entries.set(userId, entry);
      return entry.visibility;
    }
    let loading = this.#loading.get(userId);
    if (loading === undefined) {
      loading = this.#load(userId);
      this.#loading.set(userId, loading);
    }
    return await loading;
  }

  /** Drops every user's entry. */
  clear(): void {
    for (const userId of [...this.#entries.keys(), ...this.#loading.keys()]) {
      this.invalidate(userId);
    }
  }

  invalidate(userId: string): void {
    this.#entries.delete(userId);
    this.#loading.delete(userId);
    this.#generations.set(userId, (this.#generations.get(userId) ?? 0) + 1);
  }

  async #load(userId: string): Promise<Visibility> {
    const generation = this.#generations.get(userId) ?? 0;
    const loadedAt = this.#now();
    try {
      const visibility = await this.#options.load(userId);
      if ((this.#generations.get(userId) ?? 0) === generation) {
        this.#entries.delete(userId);
        this.#entries.set(userId, { visibility, loadedAt });
        while (this.#entries.size > this.#options.maxUsers) {
          this.#entries.delete(this.#entries.keys().next().value!);
        }
      }
      return visibility;
    } finally {
      if ((this.#generations.get(userId) ?? 0) === generation) this.#loading.delete(userId);
    }
  }
}
