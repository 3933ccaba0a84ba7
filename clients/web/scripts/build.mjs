// Builds the three files the server embeds: dist/index.html, dist/app.js, dist/app.css.
// Deterministic (no timestamps, no sourcemaps): building twice gives identical bytes, so the
// committed bundle can be checked against a fresh build.

import { readFile, writeFile, mkdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const dist = `${root}dist`;

await mkdir(dist, { recursive: true });
await build({
  absWorkingDir: root,
  entryPoints: [
    { in: "src/main.ts", out: "app" },
    { in: "src/app.css", out: "app" },
  ],
  outdir: "dist",
  bundle: true,
  minify: true,
  format: "iife",
  target: ["chrome111", "firefox113", "safari16.4"],
  legalComments: "none",
  charset: "utf8",
  // The SDK from its TypeScript source: no separate SDK build step, one minified bundle.
  alias: { "livechat-client": "../typescript/src/index.ts" },
  logLevel: "warning",
});

// The page shell: whitespace between tags dropped. The dev-mode tag must stay byte-exact:
// the server swaps content="0" for content="1" under `serve --dev`.
const html = (await readFile(`${root}src/index.html`, "utf8"))
  .split("\n")
  .map((line) => line.trim())
  .join("");
for (const needed of ['<meta name="livechat-dev" content="0">', 'href="/app.css"', 'src="/app.js"']) {
  if (!html.includes(needed)) throw new Error(`index.html lost ${needed}`);
}
await writeFile(`${dist}/index.html`, `${html}\n`);
