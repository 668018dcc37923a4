/**
 * A service's own access token, by the OAuth 2 client-credentials grant
 * (RFC 6749 section 4.4) at the issuer's token endpoint, which the issuer's
 * discovery document names. The token is cached until shortly before it
 * expires; callers waiting for a new one share one request.
 */

export interface ClientCredentialsOptions {
  /** The issuer, without a trailing slash: `http://127.0.0.1:8090/realms/twitterapi`. */
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /**
   * A token is renewed this long before it expires (half-way through a
   * lifetime shorter than twice this). @default 30_000
   */
  readonly refreshBeforeMs?: number;
  /** Per request to the issuer. @default 5_000 */
  readonly timeoutMs?: number;
  /** @default globalThis.fetch */
  readonly fetch?: typeof fetch;
  /** Epoch milliseconds. @default Date.now */
  readonly now?: () => number;
}

export class TokenSourceError extends Error {
  readonly code = "token-source";
  constructor(detail: string, options?: ErrorOptions) {
    super(`Cannot get an access token: ${detail}`, options);
    this.name = "TokenSourceError";
  }
}

/** Gives a valid access token of the client's service account. */
export interface TokenSource {
  /** A cached token, or a new one; rejects with `TokenSourceError`. */
  token(): Promise<string>;
  /** Drops the cached token (say, after an upstream refused it with 401). */
  invalidate(): void;
}

export class ClientCredentialsTokenSource implements TokenSource {
  readonly #options: Required<Omit<ClientCredentialsOptions, "fetch" | "now">>;
  readonly #fetch: typeof fetch;
  readonly #now: () => number;
  #tokenEndpoint: string | undefined;
  #cached: { token: string; renewAt: number } | undefined;
  #pending: Promise<string> | undefined;

  constructor(options: ClientCredentialsOptions) {
    this.#options = {
      issuer: options.issuer,
      clientId: options.clientId,
      clientSecret: options.clientSecret,
      refreshBeforeMs: options.refreshBeforeMs ?? 30_000,
      timeoutMs: options.timeoutMs ?? 5_000,
    };
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.#now = options.now ?? Date.now;
  }

  token(): Promise<string> {
    const cached = this.#cached;
    if (cached !== undefined && this.#now() < cached.renewAt) return Promise.resolve(cached.token);
    this.#pending ??= this.#request().finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }

  invalidate(): void {
    this.#cached = undefined;
  }

  async #request(): Promise<string> {
    const endpoint = this.#tokenEndpoint ?? await this.#discoverTokenEndpoint();
    const { clientId, clientSecret } = this.#options;
    const requestedAt = this.#now();
    const body = await this.#json(endpoint, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        authorization: `Basic ${
          btoa(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`)
        }`,
      },
      body: new URLSearchParams({ grant_type: "client_credentials" }).toString(),
    });
    const { access_token: token, expires_in: expiresIn } = body;
    if (typeof token !== "string" || token === "") {
      throw new TokenSourceError(`the token endpoint ${endpoint} answered no access_token`);
    }
    // Without expires_in the token is used once.
    const lifetimeMs = typeof expiresIn === "number" && expiresIn > 0 ? expiresIn * 1000 : 0;
    // Renewed refreshBeforeMs before expiry, or half-way through a shorter lifetime.
    const marginMs = Math.min(this.#options.refreshBeforeMs, lifetimeMs / 2);
    const renewAt = requestedAt + lifetimeMs - marginMs;
    this.#cached = { token, renewAt };
    return token;
  }

  async #discoverTokenEndpoint(): Promise<string> {
    const url = `${this.#options.issuer}/.well-known/openid-configuration`;
    const document = await this.#json(url, {});
    if (typeof document.token_endpoint !== "string") {
      throw new TokenSourceError(`the discovery document ${url} names no token_endpoint`);
    }
    this.#tokenEndpoint = document.token_endpoint;
    return document.token_endpoint;
  }

  async #json(url: string, init: RequestInit): Promise<Record<string, unknown>> {
    let response: Response;
    try {
      response = await this.#fetch(url, {
        ...init,
        signal: AbortSignal.timeout(this.#options.timeoutMs),
      });
    } catch (cause) {
      throw new TokenSourceError(
        `${url} did not answer: ${cause instanceof Error ? cause.message : String(cause)}`,
        { cause },
      );
    }
    const text = await response.text();
    if (!response.ok) {
      throw new TokenSourceError(`${url} answered ${response.status}: ${text.slice(0, 300)}`);
    }
    try {
      const body: unknown = JSON.parse(text);
      if (typeof body === "object" && body !== null && !Array.isArray(body)) {
        return body as Record<string, unknown>;
      }
    } catch {
      // Reported below, like any other body that is not a JSON object.
    }
    throw new TokenSourceError(`${url} answered a body that is not a JSON object`);
  }
}
