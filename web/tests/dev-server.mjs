// Serves web/dist and proxies everything else (/api, /uploads) to a running `deepemotion serve`,
// for work on the page with a server that does not serve it (yet):
//   node tests/dev-server.mjs [port=8090] [api=http://127.0.0.1:8081]
import { createServer, request } from 'node:http';
import { readFile } from 'node:fs/promises';

const port = Number(process.argv[2] ?? 8090);
const api = new URL(process.argv[3] ?? 'http://127.0.0.1:8081');
const dist = new URL('../dist/', import.meta.url);
const files = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/app.css': ['app.css', 'text/css; charset=utf-8'],
};

createServer(async (req, res) => {
  const file = files[new URL(req.url, 'http://x').pathname];
  if (file) {
    res.writeHead(200, { 'Content-Type': file[1], 'Cache-Control': 'no-cache' });
    return res.end(await readFile(new URL(file[0], dist)));
  }
  const upstream = request(
    { host: api.hostname, port: api.port, path: req.url, method: req.method, headers: { ...req.headers, host: api.host } },
    (up) => {
      res.writeHead(up.statusCode, up.headers);
      up.pipe(res); // streams Server-Sent Events as they come
    },
  );
  upstream.on('error', (e) => {
    res.writeHead(502, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: `proxy: ${e.message}` }));
  });
  req.pipe(upstream);
}).listen(port, '127.0.0.1', () => console.log(`http://127.0.0.1:${port} -> ${api.href}`));
