import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import { portBlocked } from './processes.js';
import { portError, StackError, stackUp } from './stack.js';

function stackConfig(kafkaPort: number) {
  return { stackDir: mkdtempSync(path.join(tmpdir(), 'dlog-stack-port-')), kafkaPort, kafkaControllerPort: kafkaPort + 1, registryPort: 1, stackStartTimeoutMs: 1_000 };
}

describe('stack ports', () => {
  it('tells a port held by another process from one that may not be listened on', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const held = (server.address() as net.AddressInfo).port;
    try {
      assert.equal(await portBlocked(held), 'EADDRINUSE');
      // 192.0.2.1 (TEST-NET-1) is no address of this machine; one that lets programs bind any
      // address (net.ipv4.ip_nonlocal_bind, in some containers) lets it be listened on.
      const nonlocal = (() => {
        try {
          return readFileSync('/proc/sys/net/ipv4/ip_nonlocal_bind', 'utf8').trim() === '1';
        } catch {
          return false;
        }
      })();
      assert.equal(await portBlocked(held, '192.0.2.1'), nonlocal ? undefined : 'EADDRNOTAVAIL');
      await assert.rejects(stackUp(stackConfig(held), pino({ level: 'silent' })), (err: unknown) => {
        assert.ok(err instanceof StackError);
        assert.match(err.message, new RegExp(`^Port ${held} on 127\\.0\\.0\\.1 is already taken by another process.*DLOG_KAFKA_PORT=<port>`));
        return true;
      });
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    assert.equal(await portBlocked(held), undefined);
  });

  it('says a privileged port is privileged, not taken, and names the setting that moves it', () => {
    // Before, every listen error read "already taken by another process". (Whether this machine
    // refuses a low port depends on the user and on ip_unprivileged_port_start, so the message is
    // checked for the code the listen error carries.)
    const message = portError('kafka', { env: 'DLOG_KAFKA_PORT', port: 1023 }, 'EACCES').message;
    assert.equal(message, 'Port 1023 on 127.0.0.1 is privileged: only root may listen on ports below 1024 (EACCES), so kafka cannot start. Pick a port from 1024 up with DLOG_KAFKA_PORT=<port>.');
    assert.match(portError('kafka', { env: 'DLOG_KAFKA_PORT', port: 19092 }, 'EACCES').message, /may not be listened on by this user \(EACCES/);
  });

  it('says an address the machine lacks is not a port to move, and what to change instead', () => {
    const message = portError('kafka', { env: 'DLOG_KAFKA_PORT', port: 19092 }, 'EADDRNOTAVAIL').message;
    assert.match(message, /^kafka cannot listen on port 19092 on 127\.0\.0\.1: 127\.0\.0\.1 is not an address of this machine \(EADDRNOTAVAIL/);
    assert.match(message, /no port setting \(DLOG_KAFKA_PORT\) changes that/);
    assert.match(message, /KAFKA_BROKERS and SCHEMA_REGISTRY_URL and run dlog up --no-stack/);
    assert.doesNotMatch(message, /taken by another process/);
  });
});
