/**
 * User sessions at the issuer, as Keycloak keeps them: a session starts with
 * a user's grant (authorization code or password), holds one refresh token at
 * a time (each refresh replaces it, so a stolen older one is useless), idles
 * out after `ssoSessionIdleTimeout` and ends after `ssoSessionMaxLifespan` or
 * at logout (the end-session endpoint), after which its refresh token is
 * refused.
 */
import { base64url } from "jose";
import type { GrantedScopes } from "./realm.ts";

export interface UserSession {
  readonly id: string;
  readonly clientId: string;
  readonly username: string;
  readonly scopes: GrantedScopes;
  /** Epoch milliseconds. */
  readonly startedAt: number;
  /** Epoch milliseconds: idle expiry, moved on by every refresh, capped by the maximum. */
  expiresAt: number;
  refreshToken: string;
}

/** Most sessions kept at once; beyond it the oldest is dropped. */
const MAX_SESSIONS = 10_000;

function randomToken(): string {
  return base64url.encode(crypto.getRandomValues(new Uint8Array(32)));
}

export class UserSessions {
  readonly #sessions = new Map<string, UserSession>();
  readonly #byRefreshToken = new Map<string, string>();

  constructor(
    private readonly idleSeconds: number,
    private readonly maxSeconds: number,
  ) {}

  #expiry(session: Pick<UserSession, "startedAt">, now: number): number {
    return Math.min(now + this.idleSeconds * 1000, session.startedAt + this.maxSeconds * 1000);
  }

  /** Seconds the current refresh token of `session` stays valid. */
  refreshExpiresIn(session: UserSession, now: number): number {
    return Math.max(0, Math.floor((session.expiresAt - now) / 1000));
  }

  start(
    grant: Pick<UserSession, "clientId" | "username" | "scopes">,
    now: number,
  ): UserSession {
    for (const [id, session] of this.#sessions) {
      if (session.expiresAt <= now) this.end(id);
    }
    if (this.#sessions.size >= MAX_SESSIONS) this.end(this.#sessions.keys().next().value!);
    const session: UserSession = {
      ...grant,
      id: crypto.randomUUID(),
      startedAt: now,
      expiresAt: 0,
      refreshToken: randomToken(),
    };
    session.expiresAt = this.#expiry(session, now);
    this.#sessions.set(session.id, session);
    this.#byRefreshToken.set(session.refreshToken, session.id);
    return session;
  }

  /**
   * The session of a current refresh token, with a new refresh token and a
   * later idle expiry; undefined for an unknown, replaced or expired token.
   */
  refresh(refreshToken: string, now: number): UserSession | undefined {
    const id = this.#byRefreshToken.get(refreshToken);
    const session = id === undefined ? undefined : this.#sessions.get(id);
    if (session === undefined || session.refreshToken !== refreshToken) return undefined;
    if (session.expiresAt <= now) {
      this.end(session.id);
      return undefined;
    }
    this.#byRefreshToken.delete(refreshToken);
    session.refreshToken = randomToken();
    session.expiresAt = this.#expiry(session, now);
    this.#byRefreshToken.set(session.refreshToken, session.id);
    return session;
  }

  /** Ends a session; whether there was one. */
  end(id: string): boolean {
    const session = this.#sessions.get(id);
    if (session === undefined) return false;
    this.#byRefreshToken.delete(session.refreshToken);
    this.#sessions.delete(id);
    return true;
  }
}
