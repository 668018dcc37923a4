/**
 * The API reference at `/docs`: Swagger UI (the pinned `swagger-ui-dist`
 * package, its files served by the gateway itself, no CDN) showing the
 * gateway's merged `/openapi.json`. Its Authorize signs a developer in at
 * the issuer with the authorization code flow and PKCE, through a public
 * client whose redirect URI is `/docs/oauth2-redirect.html`, so that "Try
 * it out" calls the API with their token.
 *
 * Swagger UI rather than Scalar: its OAuth 2 support (PKCE, the redirect
 * page) ships in the package, and its bundle is one script and one style
 * sheet. The files are read as text imports, loaded on the first request
 * (the gateway's start does not pay for 1.7 MB of script) and embedded by
 * `deno compile` like any import.
 */
import type { OpenAPIHono } from "@hono/zod-openapi";
import { createRoute, z } from "../../shared/http/openapi.ts";

export interface DocsOptions {
  /** The public OAuth client the page signs in through. */
  readonly clientId: string;
}

type Loader = () => Promise<{ default: string }>;

const JS = "text/javascript; charset=utf-8";
const CSS = "text/css; charset=utf-8";
const HTML = "text/html; charset=utf-8";

/** The package's files the page needs, as the package names them. */
const PACKAGE_FILES: Readonly<Record<string, { type: string; load: Loader }>> = {
  "swagger-ui-bundle.js": {
    type: JS,
    load: () => import("swagger-ui-dist/swagger-ui-bundle.js", { with: { type: "text" } }),
  },
  "swagger-ui.css": {
    type: CSS,
    load: () => import("swagger-ui-dist/swagger-ui.css", { with: { type: "text" } }),
  },
  "oauth2-redirect.html": {
    type: HTML,
    load: () => import("swagger-ui-dist/oauth2-redirect.html", { with: { type: "text" } }),
  },
  "oauth2-redirect.js": {
    type: JS,
    load: () => import("swagger-ui-dist/oauth2-redirect.js", { with: { type: "text" } }),
  },
};

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>twitterapi API reference</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/swagger-initializer.js"></script>
</body>
</html>
`;

/** Swagger UI's configuration: the merged description, and sign-in with PKCE. */
function initializer(clientId: string): string {
  return `window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  // The browser's own origin: the redirect URI registered for the client is on it.
  oauth2RedirectUrl: new URL("/docs/oauth2-redirect.html", window.location.href).href,
});
window.ui.initOAuth({
  clientId: ${JSON.stringify(clientId)},
  usePkceWithAuthorizationCodeGrant: true,
  scopes: "openid",
});
`;
}

/** Package files are versioned with the package: a browser may keep them. */
const CACHED = "public, max-age=86400";

function fileRoute(file: string, type: string, summary: string) {
  return createRoute({
    method: "get",
    path: `/docs/${file}`,
    summary,
    tags: ["documentation"],
    responses: {
      200: { description: summary, content: { [type.split(";")[0]!]: { schema: z.string() } } },
    },
  });
}

/** Adds `/docs` and its files to the gateway's public app. */
export function registerDocs(app: OpenAPIHono, options: DocsOptions): void {
  app.openapi(
    createRoute({
      method: "get",
      path: "/docs",
      summary: "The API reference: every public operation, to read and try",
      tags: ["documentation"],
      responses: {
        200: {
          description: "The Swagger UI page",
          content: { "text/html": { schema: z.string() } },
        },
      },
    }),
    (c) => c.html(PAGE, 200),
  );
  const script = initializer(options.clientId);
  app.openapi(
    fileRoute("swagger-initializer.js", JS, "The page's Swagger UI configuration"),
    (c) => c.body(script, 200, { "content-type": JS }),
  );
  const loaded = new Map<string, Promise<string>>();
  for (const [file, { type, load }] of Object.entries(PACKAGE_FILES)) {
    app.openapi(
      fileRoute(file, type, `Swagger UI's ${file} (swagger-ui-dist)`),
      async (c) => {
        let text = loaded.get(file);
        if (text === undefined) {
          text = load().then((module) => module.default);
          loaded.set(file, text);
        }
        return c.body(await text, 200, { "content-type": type, "cache-control": CACHED });
      },
    );
  }
}
