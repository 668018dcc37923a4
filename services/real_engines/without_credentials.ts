/** A URL fit for logs: its user and password masked. */
export function withoutCredentials(url: string): string {
  return url.replace(/\/\/[^@/]*@/, "//***@");
}
