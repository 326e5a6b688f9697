// The package version, read once from package.json: one folder up from this file in the sources
// (common/version.ts), two up once compiled (dist/common/version.js).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

function readVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = require(rel) as { name?: string; version?: string };
      if (pkg.name === 'mlmkit' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not there: try the next one
    }
  }
  return '0.0.0';
}

export const VERSION: string = readVersion();
