// Builds the console into dist/: app.js (TypeScript bundled and minified by
// esbuild), app.css and index.html. Output depends only on the sources and
// the pinned esbuild, so `make ui` on a clean tree reproduces the committed
// dist/ byte for byte (make test checks this).
//
//   node build.mjs                 build dist/
//   node build.mjs --layout-bench  time the layout on a synthetic 500-service
//                                  topology in Node (no browser)
import * as esbuild from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");
const common = { bundle: true, minify: true, legalComments: "none", charset: "utf8", logLevel: "warning" };

if (process.argv.includes("--layout-bench")) {
  const out = join(root, "node_modules", ".cache", "layout-bench.mjs");
  await esbuild.build({ ...common, minify: false, entryPoints: [join(root, "bench", "layout-bench.ts")], outfile: out, format: "esm", platform: "node" });
  await import(out);
} else {
  rmSync(dist, { recursive: true, force: true });
  mkdirSync(dist, { recursive: true });
  await esbuild.build({ ...common, entryPoints: [join(root, "src", "main.ts")], outfile: join(dist, "app.js"), format: "iife", target: "es2020" });
  await esbuild.build({ ...common, entryPoints: [join(root, "src", "style.css")], outfile: join(dist, "app.css") });
  copyFileSync(join(root, "src", "index.html"), join(dist, "index.html"));
}
