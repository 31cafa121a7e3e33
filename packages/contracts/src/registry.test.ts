import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { test } from 'node:test';
import http from 'node:http';
import { createRegistry, registerAvro, registryEndpoint, setCompatibility } from './registry.js';

test('registry credentials leave the URL and become a Basic authorization', () => {
  const e = registryEndpoint('https://api%20key:p%40ss%3Aw%2Frd@registry.example/apis/ccompat/v7/');
  assert.equal(e.base, 'https://registry.example/apis/ccompat/v7');
  assert.deepEqual(e.auth, { username: 'api key', password: 'p@ss:w/rd' });
  assert.equal(Buffer.from(e.headers.authorization!.replace(/^Basic /, ''), 'base64').toString(), 'api key:p@ss:w/rd');
});

test('a URL without credentials is used as it is, without a trailing slash', () => {
  assert.deepEqual(registryEndpoint('http://127.0.0.1:8081/apis/ccompat/v7/'), { base: 'http://127.0.0.1:8081/apis/ccompat/v7', headers: {} });
});

test('an unreachable registry is named, without its credentials, with what to do', async () => {
  // A port nothing listens on: bound, noted, closed again.
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  await assert.rejects(setCompatibility(`http://user:s3cret-pw@127.0.0.1:${port}/apis/ccompat/v7`, 'x-value', 'BACKWARD'), (err: unknown) => {
    const m = (err as Error).message;
    assert.ok(m.startsWith(`The schema registry at http://127.0.0.1:${port}/apis/ccompat/v7 did not answer (ECONNREFUSED). Start the local stack (npm run dlog -- stack up), or set SCHEMA_REGISTRY_URL`), m);
    assert.ok(!m.includes('s3cret'), m);
    return true;
  });
});

test('a registry that takes the request and never answers fails the registration after its deadline', async () => {
  // Answers the compatibility rule, then holds the schema registration open for ever.
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    if (req.method === 'PUT') res.writeHead(200, { 'content-type': 'application/json' }).end('{"compatibility":"BACKWARD"}');
    else held.push(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const started = Date.now();
    await assert.rejects(
      registerAvro(createRegistry(url), url, 't-value', { type: 'record', name: 'R', fields: [] }, 'BACKWARD', 300),
      /did not answer registering t-value within 0\.3 s/,
    );
    assert.ok(Date.now() - started < 10_000);
  } finally {
    for (const r of held) r.destroy();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});
