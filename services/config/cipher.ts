/**
 * `{cipher}` secrets: AES-256-GCM under one of several keys, each with an id,
 * so that keys can be rotated (new secrets under the active key, old ones
 * still readable under theirs). The encrypted text names its key as Spring
 * Cloud Config does, `{key:<id>}<base64>`; the base64 part is a format byte,
 * a 4-byte fingerprint of the key, the 12-byte IV, then the ciphertext and
 * its tag. The key id and fingerprint are authenticated data, and the
 * fingerprint tells a wrong key (same id, other key) apart from a tampered
 * ciphertext, which GCM alone cannot.
 */

/** `unknown-key`, `wrong-key`, `tampered`, `malformed`: each a caller's mistake (4xx). */
export type CipherErrorCode = "unknown-key" | "wrong-key" | "tampered" | "malformed";

export class CipherError extends Error {
  constructor(readonly code: CipherErrorCode, message: string) {
    super(message);
    this.name = "CipherError";
  }
}

/** The `{cipher}` prefix of an encrypted value in a repository file. */
export const CIPHER_PREFIX = "{cipher}";
const FORMAT = 1;
const KEY_ID = /^[A-Za-z0-9._-]{1,64}$/;

interface Key {
  readonly id: string;
  readonly key: CryptoKey;
  readonly fingerprint: Uint8Array;
}

function base64Decode(text: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) return undefined;
  return Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
}

function base64Encode(bytes: Uint8Array): string {
  return btoa(Array.from(bytes, (byte) => String.fromCharCode(byte)).join(""));
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function additionalData(id: string, fingerprint: Uint8Array): Uint8Array<ArrayBuffer> {
  const idBytes = new TextEncoder().encode(id);
  const data = new Uint8Array(idBytes.length + 1 + fingerprint.length);
  data.set(idBytes);
  data[idBytes.length] = 0;
  data.set(fingerprint, idBytes.length + 1);
  return data;
}

/**
 * Parses `id:base64key` items (32-byte keys); throws `RangeError` naming the
 * bad item without its key material.
 */
export function parseKeyItems(
  items: readonly string[],
): { readonly id: string; readonly bytes: Uint8Array }[] {
  const seen = new Set<string>();
  return items.map((item, index) => {
    const colon = item.indexOf(":");
    const id = colon < 0 ? "" : item.slice(0, colon);
    if (!KEY_ID.test(id)) {
      throw new RangeError(
        `item ${index + 1} must be <key id>:<base64 key> with a key id of letters, digits, '.', ` +
          `'_', '-'`,
      );
    }
    if (seen.has(id)) throw new RangeError(`key id '${id}' appears twice`);
    seen.add(id);
    const bytes = base64Decode(item.slice(colon + 1));
    if (bytes === undefined || bytes.length !== 32) {
      throw new RangeError(`key '${id}' must be 32 bytes in base64 (openssl rand -base64 32)`);
    }
    return { id, bytes };
  });
}

export interface SecretCipherOptions {
  /** Every key that may have encrypted a secret, by id. */
  readonly keys: readonly { readonly id: string; readonly bytes: Uint8Array }[];
  /** The key new secrets are encrypted under. */
  readonly activeKeyId: string;
}

/** Encrypts and decrypts `{cipher}` values with WebCrypto. */
export class SecretCipher {
  readonly #keys: ReadonlyMap<string, Key>;
  readonly activeKeyId: string;

  private constructor(keys: ReadonlyMap<string, Key>, activeKeyId: string) {
    this.#keys = keys;
    this.activeKeyId = activeKeyId;
  }

  static async create(options: SecretCipherOptions): Promise<SecretCipher> {
    if (!options.keys.some((key) => key.id === options.activeKeyId)) {
      throw new RangeError(
        `Cannot use encryption key '${options.activeKeyId}' as the active key: it is not among ` +
          `the keys (${options.keys.map((key) => key.id).join(", ") || "none"})`,
      );
    }
    const keys = new Map<string, Key>();
    for (const { id, bytes } of options.keys) {
      const key = await crypto.subtle.importKey("raw", bytes as BufferSource, "AES-GCM", false, [
        "encrypt",
        "decrypt",
      ]);
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as BufferSource));
      keys.set(id, { id, key, fingerprint: digest.slice(0, 4) });
    }
    return new SecretCipher(keys, options.activeKeyId);
  }

  /** The key ids known, for `/ready` and logs (never the keys). */
  get keyIds(): string[] {
    return [...this.#keys.keys()];
  }

  /** `{key:<active id>}<base64>`, to be written after `{cipher}` in a file. */
  async encrypt(plaintext: string): Promise<string> {
    const key = this.#keys.get(this.activeKeyId)!;
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: additionalData(key.id, key.fingerprint) },
        key.key,
        new TextEncoder().encode(plaintext),
      ),
    );
    const out = new Uint8Array(1 + 4 + 12 + sealed.length);
    out[0] = FORMAT;
    out.set(key.fingerprint, 1);
    out.set(iv, 5);
    out.set(sealed, 17);
    return `{key:${key.id}}${base64Encode(out)}`;
  }

  /** Decrypts what `encrypt` returned, with or without `{cipher}`; throws `CipherError`. */
  async decrypt(encrypted: string): Promise<string> {
    const text = encrypted.trim().startsWith(CIPHER_PREFIX)
      ? encrypted.trim().slice(CIPHER_PREFIX.length)
      : encrypted.trim();
    const match = /^\{key:([^}]*)\}(.*)$/s.exec(text);
    if (match === null) {
      throw new CipherError(
        "malformed",
        "Cannot decrypt: the text must be {key:<key id>}<base64>, as POST /encrypt returns it",
      );
    }
    const id = match[1]!;
    const key = this.#keys.get(id);
    if (key === undefined) {
      throw new CipherError(
        "unknown-key",
        `Cannot decrypt: the secret was encrypted under key id '${id}', which this server does ` +
          `not have (it has ${this.keyIds.join(", ")}); add it to CONFIG_ENCRYPT_KEYS`,
      );
    }
    const bytes = base64Decode(match[2]!.trim());
    if (bytes === undefined || bytes.length < 1 + 4 + 12 + 16 || bytes[0] !== FORMAT) {
      throw new CipherError(
        "malformed",
        "Cannot decrypt: the text after {key:...} is not a secret of this format (base64 of " +
          "format 1, key fingerprint, IV, ciphertext and tag)",
      );
    }
    const fingerprint = bytes.slice(1, 5);
    if (hex(fingerprint) !== hex(key.fingerprint)) {
      throw new CipherError(
        "wrong-key",
        `Cannot decrypt: the secret was encrypted with another key under the id '${id}' ` +
          `(fingerprint ${hex(fingerprint)}, this server's key ${hex(key.fingerprint)})`,
      );
    }
    try {
      const plain = await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: bytes.slice(5, 17),
          additionalData: additionalData(id, fingerprint),
        },
        key.key,
        bytes.slice(17),
      );
      return new TextDecoder("utf-8", { fatal: true }).decode(plain);
    } catch {
      throw new CipherError(
        "tampered",
        `Cannot decrypt: the secret under key '${id}' fails its integrity check: it was altered ` +
          "or truncated",
      );
    }
  }
}
