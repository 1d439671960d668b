// Bundles the page into dist/: index.html, app.js and app.css (uPlot's CSS included).
// dist/ is committed and embedded by the Rust binary, so the output must not vary between runs.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';

const dist = new URL('./dist/', import.meta.url);
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);

await build({
  entryPoints: [new URL('./src/main.ts', import.meta.url).pathname],
  outfile: new URL('app.js', dist).pathname, // the imported CSS lands beside it as app.css
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2022'],
  legalComments: 'none',
  charset: 'utf8',
  logLevel: 'warning',
}).catch(() => process.exit(1)); // esbuild has printed the errors
copyFileSync(new URL('./index.html', import.meta.url), new URL('index.html', dist));
