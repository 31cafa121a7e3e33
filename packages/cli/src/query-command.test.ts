import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Command } from 'commander';
import { columnsOf, formatCsv, formatJsonLines, formatTable, QueryInputError, registerQueryCommand } from './query-command.js';

describe('dlog query output', () => {
  // As JSON.parse builds it from {"b":1,"1":2,"0":3}: integer-like keys first.
  const rows = [JSON.parse('{"b":"x","1":2,"0":3}') as Record<string, unknown>];
  const columns = ['b', '1', '0'];

  it('keeps the columns in the engine\'s order, names that look like integers too', () => {
    assert.deepEqual(Object.keys(rows[0]!), ['0', '1', 'b']);
    assert.match(formatTable(rows, columns), /^b  1  0\n-  -  -\nx  2  3\n$/);
    assert.equal(formatCsv(rows, columns), 'b,1,0\nx,2,3\n');
    assert.equal(formatJsonLines(rows, columns), '{"b":"x","1":2,"0":3}\n');
  });

  it('prints a multi-line or control-character value on its own line of the table, escaped', () => {
    const text = formatTable([{ d: 'approve\nwith conditions', e: 'bell\u0007\u001b[31m' }], ['d', 'e']);
    assert.equal(text.split('\n').length, 4, text);
    assert.match(text, /approve\\nwith conditions\s+bell\\u0007\\u001b\[31m/);
    // CSV keeps the value as it is (quoted), for the program that reads it.
    assert.equal(formatCsv([{ d: 'a\nb' }], ['d']), 'd\n"a\nb"\n');
  });

  it('a CSV of no rows still has its header', () => {
    assert.equal(formatCsv([], ['a', 'n']), 'a,n\n');
    assert.equal(formatJsonLines([], ['a']), '');
  });

  it('takes the columns from the answer when it names them, else from its first row', () => {
    assert.deepEqual(columnsOf({ rows, columns }), columns);
    assert.deepEqual(columnsOf({ rows: [], columns: ['a'] }), ['a']);
    assert.deepEqual(columnsOf({ rows: [{ a: 1, b: 2 }] }), ['a', 'b']);
    assert.deepEqual(columnsOf({ rows: [] }), []);
  });
});

describe('dlog query arguments', () => {
  /** What the query command's action is given for `args`, without running it. */
  function parse(args: string[]): { sql: string; extra: string[]; param: string[] } {
    const program = new Command().exitOverride();
    registerQueryCommand(program);
    const query = program.commands.find((c) => c.name() === 'query')!;
    query.exitOverride().configureOutput({ writeErr: () => undefined });
    let got: { sql: string; extra: string[]; param: string[] } | undefined;
    query.action((sql: string, extra: string[], opts: { param: string[] }) => {
      got = { sql, extra, param: opts.param };
    });
    program.parse(['query', ...args], { from: 'user' });
    return got!;
  }
  const sql = 'SELECT {m:String} AS m';

  it('takes -p before the SQL as after it, and -p repeated', () => {
    assert.deepEqual(parse(['-p', 'm=x', sql]), { sql, extra: [], param: ['m=x'] });
    assert.deepEqual(parse([sql, '-p', 'm=x']), { sql, extra: [], param: ['m=x'] });
    assert.deepEqual(parse(['-p', 'm=x', sql, '-p', 'n=y', '--param', 'o=z']), { sql, extra: [], param: ['m=x', 'n=y', 'o=z'] });
  });

  it('-p a=1 b=2 (as a variadic -p took it): says to repeat -p, before asking anything', async () => {
    const program = new Command().exitOverride();
    registerQueryCommand(program);
    await assert.rejects(
      program.parseAsync(['query', sql, '-p', 'a=1', 'b=2'], { from: 'user' }),
      (err: unknown) => err instanceof QueryInputError && /-p comes once for each parameter .* -p a=1 -p b=2$/.test(err.message),
    );
  });

  it('a data directory with no store in it is named, and not made into an empty store', async () => {
    const dir = path.join(mkdtempSync(path.join(tmpdir(), 'dlog-nostore-')), 'typo');
    const saved = { dir: process.env.CLICKHOUSE_DATA_DIR, port: process.env.DLOG_QUERY_PORT, url: process.env.CLICKHOUSE_URL };
    // Nothing listens on port 1, so no pipeline answers and the store would be opened here.
    Object.assign(process.env, { CLICKHOUSE_DATA_DIR: dir, DLOG_QUERY_PORT: '1' });
    delete process.env.CLICKHOUSE_URL;
    try {
      const program = new Command().exitOverride();
      registerQueryCommand(program);
      await assert.rejects(
        program.parseAsync(['query', 'SELECT 1'], { from: 'user' }),
        (err: unknown) => err instanceof QueryInputError && err.message.startsWith(`No store at ${dir}:`) && /npm start/.test(err.message),
      );
      assert.equal(existsSync(dir), false, 'the mistyped directory was not created');
    } finally {
      for (const [k, v] of [['CLICKHOUSE_DATA_DIR', saved.dir], ['DLOG_QUERY_PORT', saved.port], ['CLICKHOUSE_URL', saved.url]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});

