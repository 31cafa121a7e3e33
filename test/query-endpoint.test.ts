import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, symlinkSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { createStore, queryTokenFile, queryViaEndpoint, querySignature, QueryEndpointError, startQueryServer } from '@dlog/store';
import { freePort, log, tempDir } from './helpers.js';

describe('the query endpoint: only the pipeline that holds the token answers, and the token never crosses', () => {
  it('answers a signed query, refuses a replayed or unsigned one', async () => {
    const dataDir = path.join(tempDir('qe'), 'clickhouse');
    const store = await createStore({ dataDir, database: 'dlog', createDatabase: true });
    const server = await startQueryServer({ store, port: await freePort(), dataDir, log });
    try {
      const res = await queryViaEndpoint({ port: server.port, dataDir, sql: 'SELECT 41 + 1 AS n' });
      assert.deepEqual(res?.rows, [{ n: 42 }]);
      // The engine's text crosses as it is, 64-bit integers as bare numbers: read, for analysts, with every digit.
      const wide = "SELECT cityHash64('a') AS h, toInt64(9007199254740993) AS i, 7 AS n";
      assert.deepEqual((await queryViaEndpoint({ port: server.port, dataDir, sql: wide, exactIntegers: true }))?.rows, [{ h: 2603192927274642682n, i: 9007199254740993n, n: 7 }]);
      assert.equal(typeof (await queryViaEndpoint({ port: server.port, dataDir, sql: wide }))?.rows[0]?.h, 'number');
      // Columns in the engine's order, which a row object loses for integer-like names.
      const ordered = await queryViaEndpoint({ port: server.port, dataDir, sql: "SELECT 'x' AS b, 1 AS `1`, [map('k', 'v')] AS `a,\"q` , 0 AS `0`" });
      assert.deepEqual(ordered?.columns, ['b', '1', 'a,"q', '0']);
      assert.deepEqual(Object.keys(ordered?.rows[0] ?? {}), ['0', '1', 'b', 'a,"q'], 'what the columns are for');
      // Decimals as written, every digit (as a JSON number a double rounded them).
      assert.deepEqual((await queryViaEndpoint({ port: server.port, dataDir, sql: "SELECT toDecimal128('12345678901234567.89', 2) AS d" }))?.rows, [{ d: '12345678901234567.89' }]);
      // The engine's error code comes along, so the CLI tells the mistake as it does without the pipeline.
      await assert.rejects(queryViaEndpoint({ port: server.port, dataDir, sql: 'SELECT {x:String}' }), (err: unknown) => err instanceof QueryEndpointError && err.code === 456);

      const token = readFileSync(queryTokenFile(dataDir), 'utf8').trim();
      const body = JSON.stringify({ sql: 'SELECT 1 AS n' });
      const post = (headers: Record<string, string>) =>
        fetch(`http://127.0.0.1:${server.port}/query`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body }).then((r) => r.status);
      const nonce = `${Date.now()}:${'ab'.repeat(16)}`;
      assert.equal(await post({ 'x-dlog-nonce': nonce, 'x-dlog-signature': querySignature(token, 'request', nonce, body, dataDir) }), 200);
      assert.equal(await post({ 'x-dlog-nonce': nonce, 'x-dlog-signature': querySignature(token, 'request', nonce, body, dataDir) }), 401, 'a nonce is good once');
      // Captured while the pipeline was down and sent a minute later: refused, whatever it has seen.
      const stale = `${Date.now() - 60_000}:${'ef'.repeat(16)}`;
      assert.equal(await post({ 'x-dlog-nonce': stale, 'x-dlog-signature': querySignature(token, 'request', stale, body, dataDir) }), 401, 'a request is good only near its time');
      // Copies sent side by side: one answered.
      const twin = `${Date.now()}:${'12'.repeat(16)}`;
      const copies = await Promise.all(Array.from({ length: 5 }, () => post({ 'x-dlog-nonce': twin, 'x-dlog-signature': querySignature(token, 'request', twin, body, dataDir) })));
      assert.deepEqual(copies.sort(), [200, 401, 401, 401, 401]);
      assert.equal(await post({ authorization: `Bearer ${token}` }), 401, 'the token itself is not how to ask');
      const other = `${Date.now()}:${'cd'.repeat(16)}`;
      assert.equal(await post({ 'x-dlog-nonce': other, 'x-dlog-signature': querySignature('not-the-token', 'request', other, body, dataDir) }), 401);
    } finally {
      await server.close();
      await store.close();
    }
  });

  it('answers only for its own data directory, even where another store shares the parent or a copy of the token', async () => {
    // Every store under one parent shared one token file (/tmp/query-token): dlog query for an
    // empty directory printed another pipeline's rows.
    const parent = tempDir('qe-two');
    const mine = path.join(parent, 'clickhouse');
    const other = path.join(parent, 'clickhouse-2');
    const store = await createStore({ dataDir: mine, database: 'dlog', createDatabase: true });
    const server = await startQueryServer({ store, port: await freePort(), dataDir: mine, log });
    try {
      assert.notEqual(queryTokenFile(mine), queryTokenFile(other));
      const answer = (dataDir: string) => queryViaEndpoint({ port: server.port, dataDir, sql: 'SELECT 1 AS n' });
      assert.deepEqual((await answer(mine))?.rows, [{ n: 1 }]);
      await assert.rejects(answer(other), (err: unknown) => err instanceof QueryEndpointError && err.message.includes(`not the pipeline that owns ${other}`));
      copyFileSync(queryTokenFile(mine), queryTokenFile(other));
      await assert.rejects(answer(other), (err: unknown) => err instanceof QueryEndpointError && err.message.includes(`not the pipeline that owns ${other}`));
      // The same directory through a symlink (a release directory) is the same store.
      const linked = `${parent}-current`;
      symlinkSync(parent, linked);
      assert.deepEqual((await answer(path.join(linked, 'clickhouse')))?.rows, [{ n: 1 }]);
    } finally {
      await server.close();
      await store.close();
    }
  });

  it('a process squatting the port gets no token, and its answer is refused', async () => {
    const dataDir = path.join(tempDir('qe-squat'), 'clickhouse');
    const store = await createStore({ dataDir, database: 'dlog', createDatabase: true });
    // The pipeline ran once (the token file exists), and is down now.
    const once = await startQueryServer({ store, port: await freePort(), dataDir, log });
    await once.close();
    await store.close();
    const token = readFileSync(queryTokenFile(dataDir), 'utf8').trim();
    const heard: string[] = [];
    const squatter = http.createServer((req, res) => {
      heard.push(JSON.stringify(req.headers));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ rows: [{ answer: 'forged' }], truncated: false, elapsedMs: 1 }));
    });
    await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
    try {
      const port = (squatter.address() as { port: number }).port;
      await assert.rejects(queryViaEndpoint({ port, dataDir, sql: 'SELECT 1' }), (err: unknown) => err instanceof QueryEndpointError && /not the pipeline/.test(err.message));
      assert.equal(heard.length, 1);
      assert.ok(!heard[0]!.includes(token), 'the token did not cross the socket');
    } finally {
      await new Promise<void>((resolve) => squatter.close(() => resolve()));
    }
  });

  it('a client that never finishes its request does not hold a stop (it held one 300 s, with no token)', async () => {
    const dataDir = path.join(tempDir('qe-slow'), 'clickhouse');
    const store = await createStore({ dataDir, database: 'dlog', createDatabase: true });
    const server = await startQueryServer({ store, port: await freePort(), dataDir, log });
    const socket = net.connect(server.port, '127.0.0.1');
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.on('error', () => undefined);
    socket.write('POST /query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n{"sql":');
    try {
      const closed = await Promise.race([server.close().then(() => 'closed'), new Promise((r) => setTimeout(() => r('still waiting'), 30_000))]);
      assert.equal(closed, 'closed');
    } finally {
      socket.destroy();
      await store.close();
    }
  });

  it('a request over the limit hears why, and a listener that closes the connection is named instead of ending the CLI without a word', async () => {
    const dataDir = path.join(tempDir('qe-big'), 'clickhouse');
    const store = await createStore({ dataDir, database: 'dlog', createDatabase: true });
    const server = await startQueryServer({ store, port: await freePort(), dataDir, log });
    const closer = net.createServer((s) => s.destroy());
    await new Promise<void>((resolve) => closer.listen(0, '127.0.0.1', resolve));
    try {
      // Cut off mid-send, the client heard only "fetch failed".
      const big = 'x'.repeat(1_100_000);
      // With no pipeline listening the caller opens the store itself, which takes it.
      assert.equal(await queryViaEndpoint({ port: await freePort(), dataDir, sql: 'SELECT {a:String} AS a', params: { a: big } }), undefined);
      await assert.rejects(
        queryViaEndpoint({ port: server.port, dataDir, sql: 'SELECT {a:String} AS a', params: { a: big } }),
        (err: unknown) => err instanceof QueryEndpointError && err.status === 413 && /bind fewer or shorter parameters/.test(err.message),
      );
      // Another client sending it anyway gets the same answer from the endpoint.
      const token = readFileSync(queryTokenFile(dataDir), 'utf8').trim();
      const body = JSON.stringify({ sql: 'SELECT {a:String} AS a', params: { a: big } });
      const nonce = `${Date.now()}:${'9a'.repeat(16)}`;
      const res = await fetch(`http://127.0.0.1:${server.port}/query`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-dlog-nonce': nonce, 'x-dlog-signature': querySignature(token, 'request', nonce, body, dataDir) },
        body,
      });
      assert.equal(res.status, 413);
      assert.match(((await res.json()) as { error: string }).error, /over the 1000000 the query endpoint takes/);
      // A small query still goes through afterwards.
      assert.deepEqual((await queryViaEndpoint({ port: server.port, dataDir, sql: 'SELECT 1 AS n' }))?.rows, [{ n: 1 }]);

      // undici's fetch never settled against such a listener: the CLI exited 13 with no output.
      const port = (closer.address() as { port: number }).port;
      await assert.rejects(
        queryViaEndpoint({ port, dataDir, sql: 'SELECT 1' }),
        (err: unknown) => err instanceof QueryEndpointError && new RegExp(`127\\.0\\.0\\.1:${port} failed \\(ECONNRESET\\).*DLOG_QUERY_PORT`).test(err.message),
      );
    } finally {
      await new Promise<void>((resolve) => closer.close(() => resolve()));
      await server.close();
      await store.close();
    }
  });
});

