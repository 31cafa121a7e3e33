import type { Command } from 'commander';
import { AuditInputError, configQuery } from './audit-query.js';
import { cliContext } from './context.js';
import { formatDot, formatLineageTree, formatMermaid, lineageGraph } from './lineage.js';
import { OutputFile } from './output-file.js';

export function registerLineageCommand(program: Command): void {
  program
    .command('lineage')
    .description('upstream and downstream graph of an artifact, as a text tree, Mermaid or Graphviz DOT')
    .argument('<ref>', 'artifact ref, e.g. registry://models/loan-approver:2.5.0 or registry://datasets/loan-applications:v5')
    .option('--format <format>', 'text | mermaid | dot', 'text')
    .option('--out <file>', 'write the picture to a file (open .mmd at mermaid.live, render .dot with `dot -Tsvg`)')
    .action(async (ref: string, opts: { format: string; out?: string }) => {
      if (!['text', 'mermaid', 'dot'].includes(opts.format)) throw new AuditInputError(`--format is text, mermaid or dot (got ${JSON.stringify(opts.format)}), e.g. --format mermaid --out lineage.mmd`);
      // A path that cannot be written fails now, before the store is asked anything.
      const file = opts.out !== undefined ? await OutputFile.open(opts.out, '--out') : undefined;
      const { config } = cliContext();
      const g = await lineageGraph(configQuery(config), ref).catch(async (err: unknown) => {
        await file?.discard();
        throw err;
      });
      const text = opts.format === 'mermaid' ? formatMermaid(g) : opts.format === 'dot' ? formatDot(g) : formatLineageTree(g);
      if (file) {
        await (await file.writer())(text);
        await file.close();
        process.stderr.write(`wrote ${opts.out} (${g.nodes.size} artifacts, ${g.edges.length} edges)${opts.format === 'dot' ? `; render: dot -Tsvg ${opts.out} -o lineage.svg` : opts.format === 'mermaid' ? '; open it at https://mermaid.live or in any Markdown viewer with Mermaid' : ''}\n`);
      } else {
        process.stdout.write(text);
      }
    });
}
