/**
 * The console's server-side sessions: the browser holds only a random id in
 * an httpOnly, SameSite=Lax cookie; the tokens stay here. Bounded (the least
 * recently used session goes first) and idle-expiring.
 */
import { encodeBase64Url } from "./encoding.ts";

export interface SignedInUser {
  readonly subject: string;
  readonly username: string;
  readonly roles: readonly string[];
}

export interface SessionTokens {
  readonly accessToken: string;
  readonly refreshToken: string | undefined;
  readonly idToken: string | undefined;
  /** Epoch milliseconds. */
  readonly expiresAt: number;
}

/** A sign-in under way: what the callback must see again (RFC 7636, OIDC `state` and `nonce`). */
export interface PendingSignIn {
  readonly state: string;
  readonly verifier: string;
  readonly nonce: string;
  readonly returnTo: string;
}

export interface ConsoleSession {
  readonly id: string;
  /** Every form of the session carries it; a POST without it is refused. */
  readonly csrfToken: string;
  user?: SignedInUser;
  tokens?: SessionTokens;
  pending?: PendingSignIn;
  lastSeen: number;
}

export function randomToken(bytes = 32): string {
  return encodeBase64Url(crypto.getRandomValues(new Uint8Array(bytes)));
}

export class SessionStore {
  // A Map keeps insertion order: re-inserting on use makes the first entry the least recent.
  readonly #sessions = new Map<string, ConsoleSession>();

  constructor(
    private readonly idleMs: number,
    private readonly maxSessions: number,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.#sessions.size;
  }

  /** The live session of `id`, marked used; undefined when unknown or idle too long. */
  get(id: string | undefined): ConsoleSession | undefined {
    if (id === undefined) return undefined;
    const session = this.#sessions.get(id);
    if (session === undefined) return undefined;
    this.#sessions.delete(id);
    if (this.now() - session.lastSeen > this.idleMs) return undefined;
    session.lastSeen = this.now();
    this.#sessions.set(id, session);
    return session;
  }

  /** A new empty session (a new id: signing in never keeps an id chosen before it). */
  create(): ConsoleSession {
    const now = this.now();
    for (const [id, session] of this.#sessions) {
      if (now - session.lastSeen <= this.idleMs) break;
      this.#sessions.delete(id);
    }
    while (this.#sessions.size >= this.maxSessions) {
      this.#sessions.delete(this.#sessions.keys().next().value!);
    }
    const session: ConsoleSession = { id: randomToken(), csrfToken: randomToken(), lastSeen: now };
    this.#sessions.set(session.id, session);
    return session;
  }

  delete(id: string): void {
    this.#sessions.delete(id);
  }
}
