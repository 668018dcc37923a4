/**
 * The signing keys: one active key per algorithm, generated in memory, and the
 * retired ones, which stay published until every token they signed has
 * expired. Rotation makes a new active key per algorithm; the JWKS lists the
 * active keys and the retired keys still within their retention.
 */
import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  SignJWT,
} from "jose";
import { SIGNING_ALGORITHMS, type SigningAlgorithm } from "./realm.ts";

export interface PublicJwk extends JWK {
  readonly kid: string;
  readonly alg: SigningAlgorithm;
  readonly use: "sig";
}

/** The private key type jose's `generateKeyPair` gives (Web Crypto's, or Node's under Node types). */
type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];

interface SigningKey {
  readonly alg: SigningAlgorithm;
  readonly kid: string;
  readonly privateKey: PrivateKey;
  readonly publicJwk: PublicJwk;
  /** Epoch milliseconds; undefined while the key signs. */
  retiredAt: number | undefined;
}

export interface KeyRingOptions {
  /**
   * How long a retired key stays published: at least the lifespan of the
   * longest-lived token it signed.
   */
  readonly retentionMs: number;
  /**
   * The clock.
   * @default Date.now
   */
  readonly now?: () => number;
  /**
   * Algorithms with a key.
   * @default ["RS256", "ES256"]
   */
  readonly algorithms?: readonly SigningAlgorithm[];
}

async function generateKey(alg: SigningAlgorithm): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: false });
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(jwk);
  return {
    alg,
    kid,
    privateKey,
    publicJwk: { ...jwk, kid, alg, use: "sig" },
    retiredAt: undefined,
  };
}

export class KeyRing {
  readonly #retentionMs: number;
  readonly #now: () => number;
  readonly #algorithms: readonly SigningAlgorithm[];
  #keys: SigningKey[];

  private constructor(options: KeyRingOptions, keys: SigningKey[]) {
    this.#retentionMs = options.retentionMs;
    this.#now = options.now ?? Date.now;
    this.#algorithms = options.algorithms ?? SIGNING_ALGORITHMS;
    this.#keys = keys;
  }

  /** A key ring with a fresh key for every algorithm. */
  static async create(options: KeyRingOptions): Promise<KeyRing> {
    const algorithms = options.algorithms ?? SIGNING_ALGORITHMS;
    return new KeyRing(options, await Promise.all(algorithms.map(generateKey)));
  }

  /** Retires the active keys (still published for the retention) and activates new ones. */
  async rotate(): Promise<string[]> {
    const fresh = await Promise.all(this.#algorithms.map(generateKey));
    const now = this.#now();
    for (const key of this.#keys) key.retiredAt ??= now;
    this.#keys = [...fresh, ...this.#keys];
    this.#prune(now);
    return fresh.map((key) => key.kid);
  }

  /** The published keys: active first, then retired ones still within their retention. */
  jwks(): { keys: PublicJwk[] } {
    this.#prune(this.#now());
    return { keys: this.#keys.map((key) => key.publicJwk) };
  }

  /** The kid of the key that signs with `alg` now. */
  activeKid(alg: SigningAlgorithm): string {
    return this.#active(alg).kid;
  }

  /** Signs a JWT with the active key of `alg`, its kid in the header. */
  sign(payload: JWTPayload, alg: SigningAlgorithm): Promise<string> {
    const key = this.#active(alg);
    return new SignJWT(payload)
      .setProtectedHeader({ alg, typ: "JWT", kid: key.kid })
      .sign(key.privateKey);
  }

  #active(alg: SigningAlgorithm): SigningKey {
    const key = this.#keys.find((candidate) =>
      candidate.alg === alg && candidate.retiredAt === undefined
    );
    if (key === undefined) throw new RangeError(`Cannot sign with ${alg}: the key ring has no key`);
    return key;
  }

  #prune(now: number): void {
    this.#keys = this.#keys.filter((key) =>
      key.retiredAt === undefined || now - key.retiredAt < this.#retentionMs
    );
  }
}
