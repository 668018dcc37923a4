/**
 * The signing keys: one active key per algorithm, and the retired ones, which
 * stay published until every token they signed has expired. Rotation makes a
 * new active key per algorithm; the JWKS lists the active keys and the
 * retired keys still within their retention.
 *
 * With a key file the keys outlive the process: read at start and written at
 * every rotation, so a restart signs with the same keys (no RSA key
 * generation, a second or more of CPU) and the tokens it issued before stay
 * valid.
 */
import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWTPayload,
  SignJWT,
} from "jose";
import { writeFileAtomically } from "../../shared/files/write_file_atomically.ts";
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
  /** The private key as a JWK, for the key file; undefined without one (not extractable). */
  readonly privateJwk: JWK | undefined;
  readonly publicJwk: PublicJwk;
  /** Epoch milliseconds; undefined while the key signs. */
  retiredAt: number | undefined;
}

/** The key file cannot be read, written, or holds something else than signing keys. */
export class KeyFileError extends Error {
  readonly code = "key-file";
  constructor(message: string, options?: { cause: unknown }) {
    super(message, options);
    this.name = "KeyFileError";
  }
}

/** Where the keys are kept between starts. */
export interface KeyFile {
  /** A JSON file with the private keys (mode 0600), written atomically; its folder is created. */
  readonly path: string;
  /**
   * Called when the keys cannot be written there (a read-only folder, no
   * permission): they keep signing, in this process only.
   */
  readonly onWriteError: (error: KeyFileError) => void;
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
  /**
   * Keeps the keys between starts.
   * @default undefined (in memory only)
   */
  readonly file?: KeyFile;
}

/** A key as the key file holds it. */
interface StoredKey {
  readonly alg: SigningAlgorithm;
  readonly privateJwk: JWK;
  readonly retiredAt: number | null;
}

/** The private members of RSA and EC JWKs: what a public JWK leaves out. */
const PRIVATE_MEMBERS: ReadonlySet<string> = new Set(["d", "p", "q", "dp", "dq", "qi", "oth"]);

function publicOf(privateJwk: JWK): JWK {
  return Object.fromEntries(
    Object.entries(privateJwk).filter(([member]) => !PRIVATE_MEMBERS.has(member)),
  ) as JWK;
}

async function signingKey(
  alg: SigningAlgorithm,
  privateKey: PrivateKey,
  keys: { publicJwk: JWK; privateJwk: JWK | undefined },
  retiredAt: number | undefined,
): Promise<SigningKey> {
  const kid = await calculateJwkThumbprint(keys.publicJwk);
  return {
    alg,
    kid,
    privateKey,
    privateJwk: keys.privateJwk,
    publicJwk: { ...keys.publicJwk, kid, alg, use: "sig" },
    retiredAt,
  };
}

/** A fresh key; its private half extractable only when it goes to a key file. */
async function generateKey(alg: SigningAlgorithm, extractable: boolean): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable });
  return await signingKey(alg, privateKey, {
    publicJwk: await exportJWK(publicKey),
    privateJwk: extractable ? await exportJWK(privateKey) : undefined,
  }, undefined);
}

function isStoredKey(value: unknown, algorithms: readonly SigningAlgorithm[]): value is StoredKey {
  if (typeof value !== "object" || value === null) return false;
  const { alg, privateJwk, retiredAt } = value as Record<string, unknown>;
  return algorithms.includes(alg as SigningAlgorithm) &&
    typeof privateJwk === "object" && privateJwk !== null &&
    typeof (privateJwk as JWK).d === "string" &&
    (retiredAt === null || typeof retiredAt === "number");
}

/** The keys of the file; undefined when there is no file yet. */
async function readKeyFile(
  path: string,
  algorithms: readonly SigningAlgorithm[],
): Promise<SigningKey[] | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    // No file, or not even its folder: none written yet (writing will say why it cannot).
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) {
      return undefined;
    }
    throw new KeyFileError(`Cannot read the signing keys from ${path}: ${error}`, {
      cause: error,
    });
  }
  const unusable = (reason: string, cause: unknown) =>
    new KeyFileError(
      `Cannot use the signing keys in ${path}: ${reason}; delete the file to start with new keys`,
      { cause },
    );
  let stored: unknown;
  try {
    stored = JSON.parse(text);
  } catch (error) {
    throw unusable("it is not JSON", error);
  }
  const keys = (stored as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || !keys.every((key) => isStoredKey(key, algorithms))) {
    throw unusable(`it is not a list of private ${algorithms.join(" or ")} keys`, undefined);
  }
  try {
    return await Promise.all(keys.map(async (key) =>
      await signingKey(
        key.alg,
        await importJWK(key.privateJwk, key.alg, { extractable: false }) as PrivateKey,
        { publicJwk: publicOf(key.privateJwk), privateJwk: key.privateJwk },
        key.retiredAt ?? undefined,
      )
    ));
  } catch (error) {
    throw unusable(`a key does not import (${error})`, error);
  }
}

/** Writes the keys atomically (a reader sees the old file or the new one), mode 0600. */
async function writeKeyFile(path: string, keys: readonly SigningKey[]): Promise<void> {
  const stored: StoredKey[] = keys.flatMap((key) =>
    key.privateJwk === undefined
      ? []
      : [{ alg: key.alg, privateJwk: key.privateJwk, retiredAt: key.retiredAt ?? null }]
  );
  try {
    await writeFileAtomically(path, JSON.stringify({ keys: stored }, null, 2) + "\n", {
      mode: 0o600,
      folderMode: 0o700,
    });
  } catch (error) {
    throw new KeyFileError(`Cannot write the signing keys to ${path}: ${error}`, { cause: error });
  }
}

export class KeyRing {
  readonly #retentionMs: number;
  readonly #now: () => number;
  readonly #algorithms: readonly SigningAlgorithm[];
  readonly #file: KeyFile | undefined;
  #keys: SigningKey[];

  private constructor(options: KeyRingOptions, keys: SigningKey[]) {
    this.#retentionMs = options.retentionMs;
    this.#now = options.now ?? Date.now;
    this.#algorithms = options.algorithms ?? SIGNING_ALGORITHMS;
    this.#file = options.file;
    this.#keys = keys;
  }

  /**
   * A key ring with the keys of the key file, if there is one: retired keys
   * past their retention are dropped, and an algorithm without an active key
   * gets a fresh one (then the file is written). Without a file (or a key
   * file not written yet) every algorithm gets a fresh key.
   *
   * @throws {KeyFileError} when the key file exists but cannot be read or used
   */
  static async create(options: KeyRingOptions): Promise<KeyRing> {
    const algorithms = options.algorithms ?? SIGNING_ALGORITHMS;
    const file = options.file;
    const stored = file === undefined ? [] : await readKeyFile(file.path, algorithms) ?? [];
    const missing = algorithms.filter((alg) =>
      !stored.some((key) => key.alg === alg && key.retiredAt === undefined)
    );
    const fresh = await Promise.all(
      missing.map((alg) => generateKey(alg, file !== undefined)),
    );
    const ring = new KeyRing(options, [...fresh, ...stored]);
    ring.#prune(ring.#now());
    if (fresh.length > 0) await ring.#save();
    return ring;
  }

  /** Retires the active keys (still published for the retention) and activates new ones. */
  async rotate(): Promise<string[]> {
    const fresh = await Promise.all(
      this.#algorithms.map((alg) => generateKey(alg, this.#file !== undefined)),
    );
    const now = this.#now();
    for (const key of this.#keys) key.retiredAt ??= now;
    this.#keys = [...fresh, ...this.#keys];
    this.#prune(now);
    await this.#save();
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

  /** Writes the keys to the key file, if any; a failure is reported, the keys still sign. */
  async #save(): Promise<void> {
    if (this.#file === undefined) return;
    try {
      await writeKeyFile(this.#file.path, this.#keys);
    } catch (error) {
      if (!(error instanceof KeyFileError)) throw error;
      this.#file.onWriteError(error);
    }
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
