import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, describeConfig, knownEnvNames, loadConfig } from './index.js';

function configError(env: NodeJS.ProcessEnv): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected loadConfig to throw');
}

describe('loadConfig', () => {
  it('defaults point at the local stack and embedded ClickHouse', () => {
    const c = loadConfig({});
    assert.deepEqual(c.kafkaBrokers, ['127.0.0.1:9092']);
    assert.equal(c.schemaRegistryUrl, 'http://127.0.0.1:8081/apis/ccompat/v7');
    assert.equal(c.clickhouseUrl, undefined);
    assert.equal(c.clickhouseDataDir, path.resolve('.data/clickhouse'));
    assert.equal(c.kafkaPort, 9092);
  });

  it('parses lists and numbers', () => {
    const c = loadConfig({ KAFKA_BROKERS: 'a:1, b:2', DLOG_KAFKA_PORT: '19092', CLICKHOUSE_URL: 'http://ch:8123' });
    assert.deepEqual(c.kafkaBrokers, ['a:1', 'b:2']);
    assert.equal(c.kafkaPort, 19092);
    assert.equal(c.clickhouseUrl, 'http://ch:8123');
  });

  it('points the default brokers and registry at the local stack wherever its ports were moved', () => {
    const moved = loadConfig({ DLOG_KAFKA_PORT: '19092', DLOG_KAFKA_CONTROLLER_PORT: '19093', DLOG_REGISTRY_PORT: '18081' });
    assert.deepEqual(moved.kafkaBrokers, ['127.0.0.1:19092']);
    assert.equal(moved.schemaRegistryUrl, 'http://127.0.0.1:18081/apis/ccompat/v7');
    const given = loadConfig({ DLOG_KAFKA_PORT: '19092', DLOG_KAFKA_CONTROLLER_PORT: '19093', KAFKA_BROKERS: 'kafka:9092' });
    assert.deepEqual(given.kafkaBrokers, ['kafka:9092'], 'an explicit KAFKA_BROKERS wins');
    const bad = configError({ DLOG_KAFKA_PORT: 'ninety' });
    assert.equal(bad.field, 'DLOG_KAFKA_PORT', 'a bad port is reported as itself, not as a bad broker list');
  });

  it('names the wrong field, the value, and an example', () => {
    const err = configError({ KAFKA_BROKERS: 'localhost' });
    assert.equal(err.field, 'KAFKA_BROKERS');
    assert.match(err.message, /KAFKA_BROKERS="localhost"/);
    assert.match(err.message, /for example KAFKA_BROKERS=127\.0\.0\.1:9092/);

    assert.equal(configError({ DLOG_REGISTRY_PORT: '70000' }).field, 'DLOG_REGISTRY_PORT');
    assert.equal(configError({ CLICKHOUSE_URL: 'ftp://x' }).field, 'CLICKHOUSE_URL');
    assert.equal(configError({ LOG_LEVEL: 'loud' }).field, 'LOG_LEVEL');
  });

  it('refuses unknown DLOG_ settings and suggests the closest', () => {
    const err = configError({ DLOG_KAFAK_PORT: '1' });
    assert.equal(err.field, 'DLOG_KAFAK_PORT');
    assert.match(err.message, /Did you mean DLOG_KAFKA_PORT\?/);
  });

  it('checks related fields together', () => {
    const err = configError({ DLOG_KAFKA_PORT: '9100', DLOG_KAFKA_CONTROLLER_PORT: '9100' });
    assert.equal(err.field, 'DLOG_KAFKA_CONTROLLER_PORT');
  });

  it('reads secrets from a file and never prints them', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-config-'));
    const file = path.join(dir, 'pw');
    writeFileSync(file, 's3cret-value\n');
    const c = loadConfig({ CLICKHOUSE_PASSWORD_FILE: file });
    assert.equal(c.clickhousePassword, 's3cret-value');
    assert.equal(describeConfig(c).clickhousePassword, '<secret>');
    assert.ok(!JSON.stringify(describeConfig(c)).includes('s3cret'));
    assert.ok(knownEnvNames().includes('CLICKHOUSE_PASSWORD_FILE'));

    const both = configError({ CLICKHOUSE_PASSWORD: 'x', CLICKHOUSE_PASSWORD_FILE: file });
    assert.equal(both.field, 'CLICKHOUSE_PASSWORD');
    const missing = configError({ CLICKHOUSE_PASSWORD_FILE: path.join(dir, 'nope') });
    assert.equal(missing.field, 'CLICKHOUSE_PASSWORD_FILE');
    assert.ok(!missing.message.includes('s3cret'));
  });
});
