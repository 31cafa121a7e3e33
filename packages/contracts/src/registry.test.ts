import assert from 'node:assert/strict';
import { test } from 'node:test';
import { registryEndpoint } from './registry.js';

test('registry credentials leave the URL and become a Basic authorization', () => {
  const e = registryEndpoint('https://api%20key:p%40ss%3Aw%2Frd@registry.example/apis/ccompat/v7/');
  assert.equal(e.base, 'https://registry.example/apis/ccompat/v7');
  assert.deepEqual(e.auth, { username: 'api key', password: 'p@ss:w/rd' });
  assert.equal(Buffer.from(e.headers.authorization!.replace(/^Basic /, ''), 'base64').toString(), 'api key:p@ss:w/rd');
});

test('a URL without credentials is used as it is, without a trailing slash', () => {
  assert.deepEqual(registryEndpoint('http://127.0.0.1:8081/apis/ccompat/v7/'), { base: 'http://127.0.0.1:8081/apis/ccompat/v7', headers: {} });
});
