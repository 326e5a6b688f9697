// The option reader of the repository's own scripts (demo.ts, bench-prepare.ts, profile-step.ts),
// which take a few `--name value` pairs without yargs. An option left without its value (the last
// word of the line, an empty string, or followed by another option) is refused in one line with
// exit 2, as `mlm` does (scripts/command-line.ts): read as a default or as '' it could point a script that
// replaces its outputs at the wrong folder.

/**
 * True when the token after an option cannot be its value: nothing (the end of the line), blank,
 * or another option (a negative number is a value). scripts/command-line.ts applies the same rule to mlm.
 */
export function lacksValue(next: string | undefined): boolean {
  return next === undefined || next.trim() === '' || (next.startsWith('-') && !Number.isFinite(Number(next)));
}

/** The value after `--name` in `argv`, or `fallback` when the option is absent. */
export function scriptOption(argv: readonly string[], name: string, fallback: string, program: string): string {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const value = argv[i + 1] ?? '';
  if (lacksValue(value)) {
    process.stderr.write(`${program}: --${name} was given no value; give a value or leave the option out\n`);
    process.exit(2);
  }
  return value;
}
