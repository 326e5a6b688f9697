// `mlm serve`: a fill-mask page on 127.0.0.1 for a model, run in the browser by TF.js
// (scripts/serve/server.ts). --model is a `mlm export --format tfjs` folder, or any model folder or Hub
// id, which is exported to tfjs into a temporary folder first (removed when the server stops).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { InputError, requireInteger } from '../../common/errors.ts';
import { exportModel } from '../../training/export-model.ts';
import { servePage } from '../serve/server.ts';
import { VERSION } from '../../common/version.ts';
import { NO_BAR_PROGRESS_OPTION } from './progress-option.ts';

interface ServeArgs {
  model: string;
  revision?: string;
  port: number;
  json: boolean;
}

export const serveCommand: CommandModule<object, ServeArgs> = {
  command: 'serve',
  describe: 'Serve a fill-mask web page for a model on 127.0.0.1 (runs in the browser with TF.js)',
  builder: (y: Argv) =>
    y
      .option('model', { type: 'string', demandOption: true, describe: 'a tfjs export folder, a model folder or a Hugging Face Hub id' })
      .option('revision', { type: 'string', describe: 'Hub branch, tag or commit (default main)' })
      .option('port', { type: 'number', default: 8080, describe: 'port on 127.0.0.1 (0: any free port)' })
      .option('json', { type: 'boolean', default: false, describe: 'print {url, model, export} as one JSON line on stdout once serving (for scripts: the port --port 0 chose)' })
      .option('progress', NO_BAR_PROGRESS_OPTION)
      .example('$0 serve --model web/model/', 'a tfjs export: open the printed address') as unknown as Argv<ServeArgs>,
  handler: async (args: ArgumentsCamelCase<ServeArgs>) => {
    requireInteger(args.port, 'port', 0);
    if (args.port > 65535) throw new InputError(`--port must be at most 65535, got ${args.port}`);
    const log = (line: string) => process.stderr.write(line + '\n');
    let exportDir = args.model;
    let temp: string | null = null;
    const removeTemp = () => {
      if (temp) fs.rmSync(temp, { recursive: true, force: true });
      temp = null;
    };
    // Ctrl-C, kill and a closed terminal stop the server; the temporary export goes however the
    // command ends: a signal while exporting, a second Ctrl-C while stopping, a model that fails
    // to export, a port in use.
    let serving = false;
    let stop: () => void = () => {};
    const stopped = new Promise<void>((resolve) => { stop = resolve; });
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      signals++;
      if (serving && signals === 1) return stop();
      removeTemp();
      process.exit(128 + (os.constants.signals[signal] ?? 2));
    };
    const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    for (const s of SIGNALS) process.on(s, onSignal);
    try {
      if (!fs.existsSync(path.join(args.model, 'model.json'))) {
        temp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-serve-'));
        exportDir = path.join(temp, 'tfjs');
        await exportModel({ model: args.model, revision: args.revision, out: exportDir, format: 'tfjs', generatedBy: `mlmkit ${VERSION}`, log });
      }
      const server = await servePage({ exportDir, port: args.port });
      serving = true;
      if (args.json) process.stdout.write(JSON.stringify({ url: server.url, model: args.model, export: exportDir }) + '\n');
      else process.stdout.write(`serving ${args.model} at ${server.url} (Ctrl-C to stop)\n`);
      await stopped;
      await server.close();
    } finally {
      removeTemp();
      for (const s of SIGNALS) process.off(s, onSignal);
    }
  },
};
