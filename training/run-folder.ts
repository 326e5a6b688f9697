// The run folder (--out) of `mlm train` (docs/formats.md, "The run folder"): what it may hold,
// which checkpoint a run resumes from, the final model published at its root at the end (as
// transformers' output_dir), the *_results.json files, and the one-line errors about it.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { copyFileAtomic, restoreOrRemove, writeFileAtomic } from '../common/atomic.ts';
import { firstNames, InputError, TrainingError } from '../common/errors.ts';
import { CONFIG_FILE, loadModelFolder, TOKENIZER_FILES, WEIGHTS_FILE } from './checkpoint.ts';
import { CARD_MARKER } from './model-card.ts';
import { realPathOf, within } from '../data/paths.ts';
import type { EvalLogEntry } from './report.ts';
import { listCheckpoints, newestCheckpoint, readTrainerState, TRAINER_STATE, type TrainerState } from './train-state.ts';

/** The JSON results written at the run folder's root at the end, as transformers' Trainer names them. */
export const RESULT_FILES = ['train_results.json', 'eval_results.json', 'all_results.json'] as const;

/** The files of the final model at the run folder's root, config.json last (see `publishFinalModel`). */
export function finalModelFiles(): string[] {
  return [WEIGHTS_FILE, ...TOKENIZER_FILES, CONFIG_FILE];
}

/** Entries that a run folder may hold besides its checkpoints (and their temporary siblings). */
const RUN_ENTRY = new RegExp(
  '^(checkpoint-\\d+|\\.checkpoint-\\d+\\.ckpt-(tmp|old)-.*|' +
  `(metrics\\.jsonl|report\\.md|run\\.json|loss\\.svg|eval\\.svg|lr-grad-norm\\.svg|perplexity\\.svg|README\\.md|${[...RESULT_FILES, ...finalModelFiles()].map((f) => f.replace(/\./g, '\\.')).join('|')})(\\.tmp)?)$`,
);

/**
 * The final model at the run folder's root, as transformers' `output_dir`: the model files of the
 * checkpoint `from` are copied in, each under a temporary name then renamed, config.json last.
 * A folder with config.json at its root is a finished run (training/hub.ts `runFolderModel`); so a
 * crash part way leaves a run that still reads as unfinished, never a mix presented as final.
 */
export async function publishFinalModel(out: string, from: string): Promise<void> {
  for (const name of [CONFIG_FILE, WEIGHTS_FILE]) {
    if (!fs.existsSync(path.join(from, name))) throw new TrainingError(`cannot publish the final model at ${out}: ${from} has no ${name}; the run's checkpoints are in ${out}`);
  }
  await unpublishFinalModel(out);
  for (const name of finalModelFiles()) {
    const src = path.join(from, name);
    if (fs.existsSync(src)) await copyFileAtomic(src, path.join(out, name));
  }
}

/** Removes the final model from the run folder's root, config.json first (the run reads as unfinished). */
export async function unpublishFinalModel(out: string): Promise<void> {
  // The model card `mlm push` generated (training/model-card.ts) describes the model being removed.
  const card = path.join(out, 'README.md');
  if (fs.existsSync(card) && fs.readFileSync(card, 'utf8').includes(CARD_MARKER)) await fsp.rm(card, { force: true });
  for (const name of [...finalModelFiles()].reverse()) {
    await fsp.rm(path.join(out, name), { force: true });
    await fsp.rm(path.join(out, `${name}.tmp`), { force: true });
  }
}

/** Names in `out` that no training run wrote; throws when `out` is a file. */
function foreignEntries(out: string): { entries: string[]; foreign: string[] } {
  let st: fs.Stats;
  try {
    st = fs.statSync(out);
  } catch {
    return { entries: [], foreign: [] };
  }
  if (!st.isDirectory()) throw new InputError(`--out ${out} is a file; choose a folder for the run`);
  const entries = fs.readdirSync(out);
  return { entries, foreign: entries.filter((e) => !RUN_ENTRY.test(e)) };
}

/**
 * Runs `read` on checkpoint `dir`; when it finds the checkpoint damaged (an InputError), the error
 * names the previous complete checkpoint beside it, which `--resume` can use instead: resuming from
 * any complete checkpoint reproduces the run exactly (see the file header).
 */
export async function adviseOnDamage<T>(dir: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (!(err instanceof InputError)) throw err;
    const here = /^checkpoint-(\d+)$/.exec(path.basename(path.resolve(dir)));
    if (here === null) throw err;
    const previous = listCheckpoints(path.dirname(path.resolve(dir))).filter((c) => c.complete && c.step < Number(here[1])).pop();
    const why = err.message.replace(/[;:]? ?re-download or re-export the checkpoint\.?$/, '');
    const instead = previous
      ? `resume from the previous complete checkpoint instead: --resume ${path.join(path.dirname(dir), path.basename(previous.dir))}`
      : 'no earlier complete checkpoint is there: start the run again without --resume';
    throw new InputError(`the checkpoint ${dir} is damaged (${why}); ${instead}`);
  }
}

/** The model folder and trainer state of the checkpoint to resume from. */
export async function loadResumable(dir: string): Promise<{ folder: Awaited<ReturnType<typeof loadModelFolder>>; trainerState: TrainerState }> {
  return adviseOnDamage(dir, async () => ({ folder: await loadModelFolder(dir), trainerState: await readTrainerState(dir) }));
}

/** The TrainingError (exit 1) for a checkpoint that could not be written, saying what to do. */
export function saveError(err: unknown, dir: string, out: string, lastCheckpoint: string | null): TrainingError {
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === 'ENOSPC' || code === 'EDQUOT' ? 'no space left on the device' : (err as Error).message.split('\n')[0];
  const todo = code === 'ENOSPC' || code === 'EDQUOT' ? `free space at ${out}` : code === 'EROFS' || code === 'EACCES' || code === 'EPERM' ? `make ${out} writable` : `free space at ${out} or fix its permissions`;
  const previous = lastCheckpoint ? `the previous checkpoint ${lastCheckpoint} is intact` : 'no checkpoint was saved before it';
  return new TrainingError(`could not save ${dir} (${why}); ${previous}; ${todo}, then run again with --resume`);
}

/** Names only a training run writes: a folder holding one is a run folder. */
const RUN_MARK = /^(checkpoint-\d+|metrics\.jsonl|run\.json)$/;

/**
 * Refuses an output folder inside an `mlm train` run folder (an export beside the checkpoints,
 * say): a run folder holds only what training writes, so --resume would then refuse the run.
 */
export function refuseOutInsideRun(out: string, flag = '--out'): void {
  let dir = path.dirname(realPathOf(out));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'run.json')) && fs.existsSync(path.join(dir, 'metrics.jsonl'))) {
      throw new InputError(`${flag} ${out} lies inside the training run folder ${dir}, which holds only what mlm train writes (--resume would refuse it then); choose a folder outside it`);
    }
    const up = path.dirname(dir);
    if (up === dir) return;
    dir = up;
  }
}

/** The folder to resume from: `resume` as given (a checkpoint, or a run folder), or the newest in `out`. */
function resumeFolder(resume: boolean | string, out: string): string | null {
  if (resume === false) return null;
  if (resume === true) return newestCheckpoint(out)?.dir ?? null;
  if (fs.statSync(resume, { throwIfNoEntry: false })?.isFile()) {
    throw new InputError(`--resume ${resume} is a file; give the checkpoint-STEP folder that holds it (or the run folder)`);
  }
  if (fs.existsSync(path.join(resume, TRAINER_STATE))) return resume;
  const newest = newestCheckpoint(resume);
  if (newest) return newest.dir;
  throw new InputError(`--resume ${resume} is not a complete checkpoint (no ${TRAINER_STATE}) and holds none; give a checkpoint-STEP folder`);
}

/**
 * The run folder's rules before a run starts: `out` holds nothing but what training runs write,
 * and an earlier run's checkpoints only with --resume. Returns the checkpoint to resume from
 * (null: a new run, which needs `canStartFresh`: a --config or --from to start from).
 */
export function checkRunFolder(out: string, resume: boolean | string, log: (line: string) => void, canStartFresh = true): string | null {
  refuseOutInsideRun(out); // a run inside another run's folder
  const { entries, foreign } = foreignEntries(out);
  if (foreign.length > 0) {
    const isRun = entries.some((e) => RUN_MARK.test(e));
    throw new InputError(
      `--out ${out} holds files that are not from an mlm train run (${firstNames(foreign)}); ${isRun && resume !== false ? 'move them out of the run folder to resume it' : 'choose an empty or new folder'}`,
    );
  }
  const runMarks = entries.filter((e) => RUN_MARK.test(e));
  // A model or tokenizer folder (an export, `tokenizer train --out`, a Hub cache snapshot) holds
  // only names a run folder may hold too, but no run: training there would replace its files.
  const modelFiles = entries.filter((e) => finalModelFiles().includes(e) || e === 'README.md');
  if (runMarks.length === 0 && modelFiles.length > 0) {
    throw new InputError(`--out ${out} holds a model or tokenizer (${firstNames(modelFiles)}), not a training run; choose an empty or new folder for the run`);
  }
  const earlier = runMarks.length > 0;
  if (resume === false && earlier) {
    throw new InputError(`--out ${out} holds an earlier run; pass --resume to continue or choose another --out`);
  }
  const resumeFrom = resumeFolder(resume, out);
  if (resume === true && resumeFrom === null) {
    if (earlier) {
      throw new InputError(`--resume: ${out} holds an earlier run (${firstNames(runMarks)}) but no complete checkpoint to continue from; starting from scratch would replace it: choose a new --out, or remove that run to start over`);
    }
    if (!canStartFresh) throw new InputError(`--resume: ${out} holds no checkpoint to continue from; give --config FILE to pretrain from scratch or --from MODEL to adapt a checkpoint`);
    log(`note: --resume: no complete checkpoint in ${out}; starting from scratch`);
  }
  if (resumeFrom !== null && earlier && !within(realPathOf(resumeFrom), realPathOf(out))) {
    throw new InputError(`--out ${out} holds another run; continuing ${resumeFrom} there would replace it: give a new --out to branch from that checkpoint, or the checkpoint's own run folder`);
  }
  return resumeFrom;
}

/** Temporary folders of a checkpoint write that a killed run left in `out`. */
export async function removeCheckpointTemps(out: string): Promise<void> {
  const byCheckpoint = new Map<string, string[]>();
  for (const e of fs.readdirSync(out)) {
    const m = /^\.(checkpoint-\d+)\.ckpt-(tmp|old)-/.exec(e);
    if (m) byCheckpoint.set(m[1]!, [...(byCheckpoint.get(m[1]!) ?? []), path.join(out, e)]);
  }
  // A checkpoint whose rewrite was killed between its two renames is put back (common/atomic.ts).
  for (const [name, temps] of byCheckpoint) await restoreOrRemove(path.join(out, name), temps);
}

/** The figures of a finished run that train_results.json and all_results.json hold. */
export interface TrainResults {
  epoch: number;
  train_loss: number | null;
  train_runtime: number;
  train_samples_per_second: number | null;
  train_steps_per_second: number | null;
  tokens_per_second: number | null;
}

/**
 * train_results.json, eval_results.json (when evaluated) and all_results.json at the run folder's
 * root, as transformers' `Trainer.save_metrics` writes them (run_mlm.py adds `perplexity` to the
 * evaluation's; mlmkit logs it as eval_perplexity and writes both names there).
 */
export async function writeResults(out: string, r: TrainResults, ev: EvalLogEntry | null): Promise<void> {
  const trainResults = {
    epoch: r.epoch, train_loss: r.train_loss, train_runtime: r.train_runtime,
    train_samples_per_second: r.train_samples_per_second, train_steps_per_second: r.train_steps_per_second, tokens_per_second: r.tokens_per_second,
  };
  const evalResults = ev === null ? null : {
    epoch: ev.epoch, eval_loss: ev.eval_loss, eval_perplexity: ev.eval_perplexity, perplexity: ev.eval_perplexity,
    eval_accuracy: ev.eval_accuracy, eval_masked_tokens: ev.eval_masked_tokens, eval_step: ev.step,
  };
  const write = (name: string, obj: object) => writeFileAtomic(path.join(out, name), [Buffer.from(JSON.stringify(obj, null, 2) + '\n', 'utf8')]);
  await write('train_results.json', trainResults);
  if (evalResults !== null) await write('eval_results.json', evalResults);
  else await fsp.rm(path.join(out, 'eval_results.json'), { force: true });
  await write('all_results.json', { ...trainResults, ...(evalResults ?? {}) });
}
