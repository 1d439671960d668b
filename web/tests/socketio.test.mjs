// socket.io live progress as the original web client sees it, against a running
// `deepemotion serve --dev` (DEEPEMOTION_BASE_URL): a socket must present a valid token, and
// hears `processing_update` only for its own user's videos.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHmac, randomUUID } from 'node:crypto';
import { io } from 'socket.io-client';

const BASE_URL = process.env.DEEPEMOTION_BASE_URL;
const VIDEO = process.env.DEEPEMOTION_VIDEO ?? '/work/shared/data/videos/WolfgangLanger_Pexels.mp4';
const API = `${BASE_URL}/api/v2`;

async function call(method, path, token, body) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(`${API}${path}`, { method, headers, body: body && JSON.stringify(body) });
  const text = await r.text();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function user(name) {
  const id = `${name}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  const email = `${id}@example.com`;
  await call('POST', '/auth/register', null, { username: id, email, password: 'password123' });
  return (await call('POST', '/auth/login', null, { email, password: 'password123' })).access_token;
}

/** Connects and resolves with the socket, or rejects with the server's connect_error. */
function connect(options) {
  return new Promise((resolve, reject) => {
    const socket = io(BASE_URL, { reconnection: false, timeout: 10_000, ...options });
    socket.on('connect', () => resolve(socket));
    socket.on('connect_error', (e) => {
      socket.close();
      reject(e);
    });
  });
}

test('an invalid or missing token cannot subscribe', { timeout: 30_000 }, async () => {
  assert.ok(BASE_URL, 'set DEEPEMOTION_BASE_URL to a running `deepemotion serve --dev`');
  for (const options of [{}, { auth: { token: 'not-a-token' } }, { query: { token: 'x.y.z' } }]) {
    await assert.rejects(connect(options), /valid token/, JSON.stringify(options));
  }
});

test('a validly signed token of a user that does not exist cannot subscribe', { timeout: 30_000 }, async () => {
  const dataDir = process.env.DEEPEMOTION_DATA_DIR;
  assert.ok(dataDir, 'set DEEPEMOTION_DATA_DIR to the server\'s --data-dir (its dev secret signs the token)');
  const secret = readFileSync(`${dataDir}/dev-jwt-secret`, 'utf8').trim();
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({
    sub: randomUUID(), iat: now, exp: now + 600, iss: 'deepemotion', aud: 'deepemotion-api',
  })}`;
  const token = `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
  // the same token is accepted as a signature but names nobody: 401 on the API too
  const r = await fetch(`${API}/videos/`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(r.status, 401);
  await assert.rejects(connect({ auth: { token } }), /valid token/);
});

test("a user hears their own video's progress and never another user's", { timeout: 120_000 }, async (t) => {
  assert.ok(BASE_URL, 'set DEEPEMOTION_BASE_URL to a running `deepemotion serve --dev`');
  const [ann, bob] = [await user('ann'), await user('bob')];
  // the three ways a client can present its token
  const annSocket = await connect({ auth: { token: ann } });
  const annByQuery = await connect({ query: { token: ann }, transports: ['polling'] });
  const bobSocket = await connect({ extraHeaders: { Authorization: `Bearer ${bob}` }, transports: ['polling'] });
  t.after(() => [annSocket, annByQuery, bobSocket].forEach((s) => s.close()));
  const heard = { ann: [], annByQuery: [], bob: [] };
  annSocket.on('processing_update', (u) => heard.ann.push(u));
  annByQuery.on('processing_update', (u) => heard.annByQuery.push(u));
  bobSocket.on('processing_update', (u) => heard.bob.push(u));

  const init = await call('POST', '/videos/upload/initialize', ann, { filename: 'clip.mp4', title: 'clip' });
  const put = await fetch(init.upload_url, {
    method: 'PUT', headers: init.headers, body: readFileSync(VIDEO),
  });
  assert.equal(put.status, 200);

  const done = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no COMPLETED update: ${JSON.stringify(heard.ann)}`)), 100_000);
    annSocket.on('processing_update', (u) => {
      if (u.video_id === init.video_id && (u.status === 'COMPLETED' || u.status === 'FAILED')) {
        clearTimeout(timer);
        resolve(u);
      }
    });
  });
  assert.deepEqual(done, { video_id: init.video_id, status: 'COMPLETED', progress: 100 });
  const mine = heard.ann.filter((u) => u.video_id === init.video_id);
  assert.ok(mine.some((u) => u.status === 'PROCESSING'), JSON.stringify(mine));
  const progress = mine.map((u) => u.progress);
  assert.deepEqual(progress, [...progress].sort((a, b) => a - b), 'progress never goes back');
  await new Promise((r) => setTimeout(r, 500)); // let the other sockets' copies arrive
  assert.ok(heard.annByQuery.some((u) => u.video_id === init.video_id && u.status === 'COMPLETED'));
  assert.deepEqual(heard.bob, [], "bob hears nothing of ann's video");
});
