import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { knownEnvNames, loadConfig } from '@dlog/config';

const root = path.resolve(import.meta.dirname, '..');

interface ComposeService {
  build?: unknown;
  command?: string[];
  init?: boolean;
  stop_grace_period?: string;
  environment?: Record<string, string | number>;
  ports?: string[];
}

const compose = parse(readFileSync(path.join(root, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
  services: Record<string, ComposeService>;
};

describe('docker-compose.yml', () => {
  const ours = Object.entries(compose.services).filter(([, s]) => s.build !== undefined);

  it('has Kafka, a schema registry and a ClickHouse server', () => {
    for (const name of ['kafka', 'registry', 'clickhouse']) assert.ok(compose.services[name], `${name} missing`);
  });

  it('gives our services only env names the config module knows, and values it accepts', () => {
    assert.ok(ours.length > 0);
    const known = new Set(knownEnvNames());
    for (const [name, service] of ours) {
      const env = Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, String(v)]));
      for (const key of Object.keys(env)) assert.ok(known.has(key), `service ${name}: unknown env ${key}`);
      // Secrets come from files in compose (absent here); validate the rest.
      const rest = Object.fromEntries(Object.entries(env).filter(([k]) => !k.endsWith('_FILE')));
      assert.doesNotThrow(() => loadConfig(rest), `service ${name}: env is refused by the config module`);
      assert.ok(env.CLICKHOUSE_PASSWORD_FILE, `service ${name}: the ClickHouse password comes from a secret file`);
      assert.equal(env.CLICKHOUSE_PASSWORD, undefined, `service ${name}: no password in plain env`);
    }
  });

  it('points our services at the compose components', () => {
    for (const [name, service] of ours) {
      const c = loadConfig(Object.fromEntries(Object.entries(service.environment ?? {}).filter(([k]) => !k.endsWith('_FILE')).map(([k, v]) => [k, String(v)])));
      assert.deepEqual(c.kafkaBrokers, ['kafka:29092'], name);
      assert.match(c.schemaRegistryUrl, /^http:\/\/registry:8080\/apis\/ccompat\/v7$/, name);
      assert.equal(c.clickhouseUrl, 'http://clickhouse:8123', name);
    }
  });

  it('runs entry points that exist in the repo', () => {
    for (const [name, service] of ours) {
      const entry = service.command?.find((a) => a.endsWith('.ts'));
      assert.ok(entry && existsSync(path.join(root, entry)), `service ${name}: entry ${entry} missing`);
    }
  });

  it('runs each of our services as node itself under an init, so docker stop reaches its shutdown', () => {
    for (const [name, service] of ours) {
      assert.deepEqual(service.command?.slice(0, 3), ['node', '--import', 'tsx'], `service ${name}: ${service.command?.join(' ')}`);
      assert.equal(service.init, true, `service ${name} has no init: true`);
      // Longer than the shutdown's own limit (DLOG_SHUTDOWN_TIMEOUT_MS, 15 s by default).
      assert.match(service.stop_grace_period ?? '', /^(1[6-9]|[2-9]\d)s$/, `service ${name}: stop_grace_period ${service.stop_grace_period}`);
    }
  });

  it('advertises Kafka to the containers and, on the published port, to dlog on the host', () => {
    const env = compose.services.kafka?.environment ?? {};
    const listeners = new Map(String(env.KAFKA_LISTENERS).split(',').map((l) => [l.split('://')[0], Number(l.split(':').at(-1))]));
    const advertised = new Map(String(env.KAFKA_ADVERTISED_LISTENERS).split(',').map((l) => [l.split('://')[0], l.split('://')[1]]));
    for (const [name, service] of ours) {
      const broker = String(service.environment?.KAFKA_BROKERS);
      assert.ok([...advertised.values()].includes(broker), `service ${name}: ${broker} is not an advertised listener`);
    }
    const published = (compose.services.kafka?.ports ?? []).map((p) => p.split(':'));
    assert.ok(published.length > 0, 'Kafka publishes no port');
    for (const [, hostPort, containerPort] of published) {
      const listener = [...listeners].find(([, port]) => port === Number(containerPort))?.[0];
      assert.ok(listener, `published port ${containerPort} is no listener's`);
      // A client on the host is sent to the advertised address next: it must be the host's.
      assert.equal(advertised.get(listener), `127.0.0.1:${hostPort}`, `listener ${listener} advertises ${advertised.get(listener)}`);
    }
  });

  it('builds an image that installs the way CI does, with what the services run under', () => {
    const dockerfile = readFileSync(path.join(root, 'Dockerfile'), 'utf8');
    // npm ci refuses chdb's per-platform optional packages as an out-of-sync lock file.
    assert.doesNotMatch(dockerfile.replace(/#.*$/gm, ''), /npm ci\b/);
    const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    assert.ok(pkg.dependencies.tsx, 'tsx must be a runtime dependency: the services run as node --import tsx');
  });

  it('publishes ports on loopback only', () => {
    for (const [name, service] of Object.entries(compose.services)) {
      for (const p of service.ports ?? []) assert.match(p, /^127\.0\.0\.1:/, `${name} publishes ${p} beyond loopback`);
    }
  });
});
