// The --progress switch, which every command takes (so that a wrapper can pass --no-progress to
// any of them): a bar on stderr where the command has one, accepted without effect where not.
export const PROGRESS_OPTION = { type: 'boolean', default: true, describe: 'progress on stderr (--no-progress to silence)' } as const;
export const NO_BAR_PROGRESS_OPTION = { type: 'boolean', default: true, describe: 'accepted for uniformity; this command shows no progress bar' } as const;
