#!/usr/bin/env node
// The `mlm` command. Registers the TypeScript loader, then runs the CLI.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('./cli.ts');
await main(process.argv.slice(2));
