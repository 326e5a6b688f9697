// `train()`: masked-language-model pretraining (random init from a config) and domain adaptation
// (from a checkpoint), one readable loop (docs/architecture.md, "Training"):
//
//   for each step: draw grad_accum masked batches -> lr at step -> forward + loss + gradients
//   (tf.variableGrads, per micro-batch, summed) -> read loss and gradient norm (one read; on
//   webgpu one step late, after the next step is queued: training/pending-step.ts) ->
//   stop on NaN/Inf -> clip by global norm -> AdamW -> log -> evaluate every N -> checkpoint every N
//
// Loss. The model's `maskedLossSum` runs the MLM head on the masked positions only (cramming's
// sparse prediction; equal to the full-logits loss, tests/training/models/bert.test.ts). Each
// micro-batch's SUM is divided by the masked-token count of the WHOLE accumulated batch, and the
// gradients are summed, so a step over 4 micro-batches equals one step over the 4x batch.
//
// Exact resume. Everything a step depends on is either saved or a function of (seed, step):
// weights and AdamW moments (float32, bit-exact), the data position and masking RNG
// (MaskedBatches.getState, restored, not replayed), the learning rate (a function of the step) and
// the dropout masks (seeded from (seed, step, micro-batch)). A resumed run therefore computes the
// same losses at every later step as the uninterrupted run, on the same backend.
//
// The run folder (--out; its rules in training/run-folder.ts): checkpoint-STEP/ (a Hugging Face
// model folder + trainer_state.json + optimizer.safetensors, written atomically by checkpoint.ts),
// metrics.jsonl, run.json, and at the end report.md with its charts (training/report.ts). A run
// that finishes (not interrupted) also gets, as transformers' output_dir, the final model at its
// root (the last checkpoint's model files, or the best checkpoint's with --load-best-at-end) and
// train_results.json, eval_results.json and all_results.json (training/run-end.ts). A resumed run
// that trains on removes the root model first. A folder holding anything else is refused. The
// folder is locked for the run (data/lock.ts), and a model too large for the machine's memory is
// refused before anything is allocated (`checkTrainingMemory`, training/passes.ts).
//
// Around the loop: the options and their one validation (training/train-options.ts), the model
// the run starts from (training/starting-point.ts), one step in pieces (training/train-step.ts),
// a step read one step late on webgpu (training/pending-step.ts).
//
// Stopping. `signal` (SIGINT in the CLI) ends the run after the current step, with a checkpoint.
// --early-stopping-patience ends it after that many evaluations without improvement of
// --metric-for-best (training/best-model.ts), with a checkpoint; the counter is recomputed from the
// metric history on --resume, so a resumed run stops at the same step.
// A NaN or infinite loss or gradient norm stops the run before the update is applied, naming the
// step and the last good checkpoint (nothing is saved from the broken state); with --precision
// fp16 an overflow skips the step and lowers the loss scale, and an overflow at the scale's floor
// stops the run the same way. So does divergence
// (`divergence`, training/train-step.ts): a non-finite evaluation loss, or a training or evaluation loss above
// 3 x ln(vocab_size), three times the loss of guessing uniformly over the vocabulary.
//
// References: transformers `Trainer` (its step order, logging and checkpoint layout, trainer_state
// keys), `run_mlm.py`; PyTorch `clip_grad_norm_` (coefficient max_norm / (norm + 1e-6), capped at 1).
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { writeFileAtomic } from '../common/atomic.ts';
import { TrainingError } from '../common/errors.ts';
import { MaskedBatches, RowStream } from '../data/batches.ts';
import { acquireLock } from '../data/lock.ts';
import { refuseOutputOverInputs } from '../data/paths.ts';
import type { MlmBatch } from '../data/masking.ts';
import { Progress } from '../data/progress.ts';
import { readManifest, SplitReader } from '../data/shards.ts';
import { capabilitiesOf, type Tf } from './backend.ts';
import { afterEvaluation, bestOfHistory, earlyStoppingState, greaterIsBetter, improves, parseBestMetric } from './best-model.ts';
import { writeModelFolder } from './checkpoint.ts';
import { describeTokenizer, evaluateMasked, maskingFor, type EvalResult } from './evaluate.ts';
import { createAdamW } from './flat-adamw.ts';
import { unigramLogPrior } from './init-bias.ts';
import { DynamicLossScale } from './loss-scale.ts';
import type { ModelCapabilities } from './models/ops.ts';
import { createMaskedLM } from './models/roberta.ts';
import { decayedParameters, exportWeights } from './models/weights.ts';
import { checkTrainingMemory, planPasses, splitBatch } from './passes.ts';
import { PendingStep } from './pending-step.ts';
import { describePrecision, resolvePrecision, withPrecision } from './precision.ts';
import { appendMetrics, writeMetrics, type EvalLogEntry, type MetricsEntry, type TrainLogEntry } from './report.ts';
import { finishRun, type TrainResult } from './run-end.ts';
import { adviseOnDamage, checkRunFolder, removeCheckpointTemps, saveError, unpublishFinalModel } from './run-folder.ts';
import { makeSchedule } from './schedule.ts';
import { startingPoint } from './starting-point.ts';
import { argsRecord, baseModelOf, checkTrainOptions, type TrainOptions } from './train-options.ts';
import {
  checkpointName, listCheckpoints, optimizerLayout, pruneCheckpoints, readOptimizerState, STATE_FORMAT, STATE_VERSION, writeTrainerState, type TrainerState, type Window,
} from './train-state.ts';
import { divergedError, divergence, issueOptimizerStep, lossScaleFloorError, type StepResult } from './train-step.ts';

export { TrainingError };
export { TRAIN_DEFAULTS, type TrainOptions } from './train-options.ts';
export type { TrainResult };

export interface StepInfo {
  step: number;
  loss: number;
  gradNorm: number;
  lr: number;
  seconds: number;
  /** Masked (scored) tokens in the step's batch. */
  masked: number;
}

export interface TrainContext {
  tf: Tf;
  /** `capabilities`: what the model's ops may use (BackendInfo's); by default `capabilitiesOf(tf, name)`. */
  backend: { name: string; device: string; capabilities?: ModelCapabilities };
  /** mlmkit's version, recorded in checkpoints. */
  version: string;
  /** Notes and warnings (stderr in the CLI). */
  log: (line: string) => void;
  progress: boolean;
  /** Aborting ends the run after the current step, with a checkpoint (SIGINT in the CLI). */
  signal?: AbortSignal;
  /** Called after every step (tests and benchmarks). */
  onStep?: (info: StepInfo) => void;
  /** The command that started the run, recorded in run.json (the model card shows it). */
  commandLine?: string;
}


const emptyWindow = (): Window => ({ steps: 0, loss_sum: 0, masked_tokens: 0, tokens: 0, seconds: 0 });

// -------------------------------------------------------------------------------------------------
// The run

export async function train(o: TrainOptions, ctx: TrainContext): Promise<TrainResult> {
  checkTrainOptions(o);
  // The run folder may not be, contain or lie inside an input: finishing a run replaces the model
  // files at its root, and checkpoints rotate away.
  refuseOutputOverInputs(o.out, [
    { path: o.data, flag: '--data' },
    ...(o.from !== undefined && fs.existsSync(o.from) ? [{ path: o.from, flag: '--from' }] : []),
    ...(o.config !== undefined && fs.existsSync(o.config) ? [{ path: o.config, flag: '--config' }] : []),
  ]);
  // One run per folder at a time (data/lock.ts): a second `mlm train --out` on it is refused.
  const release = acquireLock(o.out, 'run folder', ctx.log);
  try {
    return await runLocked(o, ctx);
  } finally {
    release();
  }
}

async function runLocked(o: TrainOptions, ctx: TrainContext): Promise<TrainResult> {
  const { tf } = ctx;
  const runStart = performance.now();
  let bar: Progress | null = null;
  let evalBar: Progress | null = null; // an evaluation's own bar, while it runs
  // Notes and evaluation lines erase the progress bars' line first (data/progress.ts).
  const log = (line: string): void => {
    (evalBar as Progress | null)?.clear();
    bar?.clear();
    ctx.log(line);
  };

  // 1. The run folder (training/run-folder.ts) and 2. what the run starts from (training/starting-point.ts).
  const resumeFrom = checkRunFolder(o.out, o.resume, log, o.config !== undefined || o.from !== undefined);
  const manifest = await readManifest(o.data);
  const start = await startingPoint(o, manifest, resumeFrom, log);
  const { config, tokenizer, init, state, modelLabel } = start;
  o = start.options; // on --resume: the run's own length and starting model unless given
  checkTrainingMemory(tf, config, manifest.seq_len, ctx.backend.name, modelLabel);
  // The model the run adapts (null: pretrained from a config), kept in every checkpoint for --resume.
  const baseModel = state !== null ? baseModelOf(state) : o.from !== undefined ? modelLabel : null;
  const wallSeconds = () => (state?.wall_seconds ?? 0) + (performance.now() - runStart) / 1000;

  // 3. Batches (seeded order and masks), the model, the schedule, the optimizer.
  const trainReader = new SplitReader(o.data, manifest, 'train');
  const validReader = manifest.splits.validation.rows > 0 ? new SplitReader(o.data, manifest, 'validation') : null;
  if (validReader === null) log(`note: ${o.data} has no validation split; the run is not evaluated`);
  const masking = maskingFor(tokenizer, o.mlmProbability, o.wholeWordMask, o.wholeWordSelection);
  const batches = new MaskedBatches(
    new RowStream(trainReader, { batchSize: o.batchSize, seed: o.seed, shuffle: true, dropLast: true }),
    masking.options, masking.padId, masking.specials, o.seed,
  );
  const perEpoch = batches.rows.batchesPerEpoch; // micro-batches per epoch
  const totalSteps = o.steps ?? Math.max(1, Math.ceil(((o.epochs ?? 1) * perEpoch) / o.gradAccum));
  const schedule = makeSchedule(o.schedule, o.lr, o.warmup, totalSteps);
  const precision = await resolvePrecision(tf, ctx.backend.name, o.precision ?? 'fp32', log);
  const lossScale = precision.name === 'fp16' ? new DynamicLossScale({}, state?.loss_scale ?? undefined) : undefined;
  const capabilities = withPrecision(ctx.backend.capabilities ?? capabilitiesOf(tf, ctx.backend.name), precision);
  const model = createMaskedLM(tf, config, { ...init, capabilities });
  if (o.initBias === 'unigram' && state === null && o.from === undefined) {
    const prior = unigramLogPrior(trainReader, config.vocab_size, masking.specials);
    tf.tidy(() => model.variables.get(model.outputBiasName)!.assign(tf.tensor1d(prior)));
    log(`init: ${model.outputBiasName} = log unigram frequencies of the training tokens (--init-bias unigram)`);
  }
  const { trainRows, evalRows } = planPasses(config, manifest.seq_len, ctx.backend.name, o.rowsPerPass);
  if (trainRows < o.batchSize) {
    const passes = Math.ceil(o.batchSize / trainRows);
    log(`note: each batch of ${o.batchSize} rows runs as ${passes} passes of up to ${Math.ceil(o.batchSize / passes)} rows to fit the ${ctx.backend.name} backend's memory (same loss and gradients; --rows-per-pass sets it)`);
  }
  const optimizer = createAdamW(tf, model.variables, decayedParameters(config), { beta1: o.adamBeta1, beta2: o.adamBeta2, epsilon: o.adamEpsilon, weightDecay: o.weightDecay }, ctx.backend.name);
  const layout = optimizerLayout(tf, config);
  const epochAt = (s: number) => (s * o.gradAccum) / perEpoch;
  let interrupted = false;
  let sessionTokens = 0;
  let sessionSeconds = 0;
  let step = 0;
  let history: MetricsEntry[] = [];
  let totals = emptyWindow();
  // The best checkpoint by --metric-for-best, and the early-stopping counter (training/best-model.ts).
  const metric = parseBestMetric(o.metricForBest ?? 'eval_loss');
  const greater = greaterIsBetter(metric);
  const patience = o.earlyStoppingPatience ?? 0;
  const threshold = o.earlyStoppingThreshold ?? 0;
  let best: { value: number; step: number; checkpoint: string } | null = null;
  let stopping = { best: null as number | null, counter: 0 };
  let stoppedEarlyAt: number | null = null;
  let loopSeconds = 0;
  let sessionSteps = 0;
  let sessionRows = 0;
  let lastCheckpoint: string | null = null;
  let lastEval: EvalResult | null = null;
  let nothingToDo = false; // a resume that finds the run trained
  try {
    // Run state: restored from the checkpoint, or fresh.
    let window = emptyWindow();
    await fsp.mkdir(o.out, { recursive: true });
    if (state !== null) {
      optimizer.setState(layout.fromFile(await adviseOnDamage(resumeFrom!, () => readOptimizerState(resumeFrom!))), layout.tensor);
      batches.setState(state.data_state);
      step = state.global_step;
      history = state.log_history;
      window = state.log_window;
      totals = state.totals;
      // A checkpoint of the run is this run's of that step, or (a run continued in a new --out) the
      // one beside the checkpoint resumed from: the path the state file records (relative to where
      // the run started, as transformers writes it) is never followed.
      const checkpointAt = (s: number): string | null => {
        const name = checkpointName(s);
        return [path.join(o.out, name), path.join(path.dirname(path.resolve(resumeFrom!)), name)].find((d) => fs.existsSync(path.join(d, 'config.json'))) ?? null;
      };
      const recordedMetric = parseBestMetric(typeof state.args.metric_for_best === 'string' ? state.args.metric_for_best : 'eval_loss');
      if (recordedMetric !== metric) {
        // The recorded best is a value of the other metric: chosen again from the evaluations.
        best = bestOfHistory(history, metric, checkpointAt);
        log(`note: --metric-for-best ${metric} (was ${recordedMetric}): the best checkpoint so far is chosen again by it, ${best !== null ? `${path.basename(best.checkpoint)} (${metric} ${best.value.toFixed(4)})` : 'none: no evaluated checkpoint is left'}`);
      } else if (state.best_step !== null && state.best_metric !== null && state.best_model_checkpoint !== null) {
        const found = checkpointAt(state.best_step);
        if (found !== null) best = { value: state.best_metric, step: state.best_step, checkpoint: found };
        else log(`note: the best checkpoint so far (${checkpointName(state.best_step)}) is not in ${o.out} or beside ${resumeFrom}; the best model is chosen among the checkpoints from here on`);
      }
      // The base model's evaluation (step 0) is left out, as in-step evaluations alone count (see `evaluate`).
      stopping = earlyStoppingState(history.filter((e) => e.step > 0), metric, threshold);
      if (patience > 0 && stopping.counter >= patience) stoppedEarlyAt = step;
      lastCheckpoint = path.join(o.out, checkpointName(step));
      if (!fs.existsSync(lastCheckpoint)) lastCheckpoint = resumeFrom;
      await removeCheckpointTemps(o.out);
      const later = listCheckpoints(o.out).filter((c) => c.step > step).map((c) => path.basename(c.dir));
      if (later.length > 0) log(`note: resuming at step ${step}; ${later.join(', ')} in ${o.out} (a later point of the run) are left as they are, and replaced where this run saves the same step`);
    }
    await writeMetrics(o.out, history); // a resumed run continues the history of its checkpoint
    const startStep = step;
    let lastSavedStep = state !== null ? step : -1;
    // A resume with nothing to do leaves the run's record as it is (its total_steps would read the
    // --steps of this call, fewer than the model has trained).
    nothingToDo = stoppedEarlyAt !== null || startStep >= totalSteps;
    if (!(nothingToDo && fs.existsSync(path.join(o.out, 'run.json')))) await writeFileAtomic(path.join(o.out, 'run.json'), [Buffer.from(JSON.stringify({
      args: argsRecord(o), model: modelLabel, base_model: baseModel, config_vocab_size: config.vocab_size, total_steps: totalSteps,
      resumed_from: resumeFrom, start_step: startStep, backend: ctx.backend.name, device: ctx.backend.device, mlmkit_version: ctx.version,
      ...(ctx.commandLine !== undefined ? { command_line: ctx.commandLine } : {}),
    }, null, 2) + '\n', 'utf8')]);

    const evaluate = async (at: number): Promise<void> => {
      if (validReader === null) return;
      bar?.clear(); // the evaluation's bar takes the line; its result line erases it (data/progress.ts, transient)
      const r = await evaluateMasked(tf, model, validReader, masking, {
        batchSize: o.batchSize, seed: o.seed, maxBatches: o.evalBatches || undefined, rowsPerPass: evalRows,
        onProgress: (done, total) => (evalBar ??= new Progress({ label: `eval at step ${at}`, total, enabled: ctx.progress, transient: true })).update(done, 'rows'),
      });
      evalBar?.complete('rows');
      const diverged = divergence('evaluation loss', r.loss, config.vocab_size);
      if (diverged !== null) throw divergedError(diverged, at, lastCheckpoint); // before anything of this state is written
      lastEval = r;
      const entry: EvalLogEntry = {
        step: at, epoch: epochAt(at), eval_loss: r.loss, eval_perplexity: r.perplexity, eval_accuracy: r.accuracy, eval_masked_tokens: r.masked_tokens,
      };
      history.push(entry);
      // Early stopping counts the evaluations of the run's steps, not the base model's (step 0):
      // transformers' eval_on_start evaluation sets no best metric, so its EarlyStoppingCallback
      // compares the first evaluation after a step with nothing and never counts it as a miss.
      if (at > 0) stopping = afterEvaluation(stopping, entry[metric], greater, threshold);
      await appendMetrics(o.out, entry);
      log(`eval at step ${at}: loss ${r.loss.toFixed(4)}, perplexity ${r.perplexity.toFixed(2)}, accuracy ${(100 * r.accuracy).toFixed(1)}% (${r.masked_tokens} masked tokens)`);
      evalBar = null;
    };

    const save = async (at: number, evaluatedHere: boolean): Promise<void> => {
      const dir = path.join(o.out, checkpointName(at));
      const ev = lastEval as EvalResult | null;
      const evEntry = history[history.length - 1] as EvalLogEntry | undefined;
      if (evaluatedHere && ev !== null && evEntry?.step === at && 'eval_loss' in evEntry && improves(evEntry[metric], best?.value ?? null, greater)) {
        best = { value: evEntry[metric], step: at, checkpoint: dir };
      }
      const trainerState: TrainerState = {
        format: STATE_FORMAT,
        version: STATE_VERSION,
        global_step: at,
        epoch: epochAt(at),
        max_steps: totalSteps,
        data_state: batches.getState(),
        best_metric: best?.value ?? null,
        best_step: best?.step ?? null,
        best_model_checkpoint: best?.checkpoint ?? null,
        log_history: history,
        log_window: window,
        totals,
        args: argsRecord(o),
        data: { dir: o.data, tokenizer_sha256: manifest.tokenizer.sha256, seq_len: manifest.seq_len, train_rows: manifest.splits.train.rows },
        mlmkit_version: ctx.version,
        backend: ctx.backend.name,
        device: ctx.backend.device,
        loss_scale: lossScale?.getState() ?? null,
        base_model: baseModel,
        wall_seconds: wallSeconds(),
      };
      try {
        const weights = await exportWeights(model);
        const optimizerState = layout.toFile(await optimizer.getState());
        await writeModelFolder(dir, { config, weights, tokenizer, extra: (tmp) => writeTrainerState(tmp, trainerState, optimizerState) });
      } catch (err) {
        throw saveError(err, dir, o.out, lastCheckpoint);
      }
      lastCheckpoint = dir;
      lastSavedStep = at;
      await pruneCheckpoints(o.out, o.saveTotalLimit, best?.step ?? null, at);
    };

    // 4. The loop.
    bar = new Progress({ label: startStep > 0 ? `train (from step ${startStep})` : 'train', total: totalSteps - startStep, enabled: ctx.progress });
    if (stoppedEarlyAt !== null) {
      log(`${resumeFrom} stopped early at step ${step} (--early-stopping-patience ${patience}); nothing to do`);
    } else if (nothingToDo) {
      log(`${resumeFrom} has already trained ${startStep === totalSteps ? `${startStep} of ${totalSteps}` : `${startStep} steps, more than the ${totalSteps} asked for`}; nothing to do`);
    } else {
      await unpublishFinalModel(o.out); // training goes on: the root holds no final model until the end
      // Step 0: the base model's scores, the "before" of the report (not on --resume: the history has them).
      if (state === null && (o.evalOnStart ?? o.from !== undefined)) await evaluate(0);
    }
    // Issues step s: grad_accum batches, each cut into passes that fit in memory; one dropout seed per pass.
    type Issued = PendingStep<StepResult, { micro: MlmBatch[]; lr: number }>;
    const issueStep = async (s: number): Promise<Issued> => {
      const micro: MlmBatch[] = [];
      for (let i = 0; i < o.gradAccum; i++) micro.push(...splitBatch(batches.next()!, trainRows)); // training streams never end
      const lr = schedule.lr(s - 1);
      return PendingStep.start({ micro, lr }, () => issueOptimizerStep(tf, model, optimizer, micro, { seed: o.seed, step: s, lr, maxGradNorm: o.maxGradNorm, lossScale }));
    };
    // Steps whose weights are used at once (evaluation, checkpoint, end, interrupt): nothing is issued ahead of them.
    const usesWeights = (s: number) => s === totalSteps || (o.saveEvery > 0 && s % o.saveEvery === 0)
      || (validReader !== null && o.evalEvery > 0 && s % o.evalEvery === 0) || ctx.signal?.aborted === true;
    let ahead: Issued | null = null;
    const loopStart = performance.now();
    while (step < totalSteps && stoppedEarlyAt === null) {
      const t0 = performance.now();
      step++;
      const current: Issued = ahead ?? (await issueStep(step));
      const { micro, lr } = current.info;
      // Read one step late where that overlaps (training/pending-step.ts): step + 1 is queued first.
      ahead = current.late && !usesWeights(step) ? await issueStep(step + 1) : null;
      const result = await current.read();
      // An overflow at the loss scale's floor cannot be scaled away (training/loss-scale.ts): stop.
      if (result.overflow && lossScale!.atFloor(result.scale!)) throw lossScaleFloorError(result.scale!, step, lastCheckpoint);
      if (result.overflow) await ahead?.reissue(); // the GPU held step + 1 back: run it at the lowered scale
      const { loss: lossValue, norm: normValue, masked, applied, overflow } = result;
      if (overflow) {
        log(`step ${step}: gradients overflowed at loss scale ${result.scale}; step skipped, loss scale now ${lossScale!.scale}`);
      } else if (!applied) {
        throw divergedError(Number.isFinite(lossValue) ? `gradient norm became ${normValue}` : `loss became ${lossValue}`, step, lastCheckpoint);
      }
      const diverged = divergence('loss', lossValue, config.vocab_size);
      if (diverged !== null) throw divergedError(diverged, step, lastCheckpoint);
      if (masked === 0) log(`warning: step ${step} drew no masked token; the weights were not updated`);
      const seconds = (performance.now() - t0) / 1000;

      const tokens = micro.reduce((a, b) => a + b.inputIds.length, 0);
      for (const w of [window, totals]) {
        w.steps++;
        w.loss_sum += lossValue;
        w.masked_tokens += masked;
        w.tokens += tokens;
        w.seconds += seconds;
      }
      sessionTokens += tokens;
      sessionSeconds += seconds;
      sessionSteps++;
      sessionRows += o.batchSize * o.gradAccum;
      ctx.onStep?.({ step, loss: lossValue, gradNorm: normValue, lr, seconds, masked });
      bar.update(step - startStep, `step ${step}/${totalSteps}  loss ${lossValue.toFixed(4)}  lr ${lr.toExponential(2)}  ${Math.round(window.tokens / Math.max(window.seconds, 1e-9))} tok/s`);

      const last = step === totalSteps;
      if (step % o.logEvery === 0 || last) {
        const entry: TrainLogEntry = {
          step, epoch: epochAt(step), loss: window.loss_sum / window.steps, lr, grad_norm: normValue,
          tokens_per_second: window.tokens / Math.max(window.seconds, 1e-9), masked_tokens: window.masked_tokens, tokens: window.tokens,
        };
        history.push(entry);
        await appendMetrics(o.out, entry);
        window = emptyWindow();
      }
      const evalNow = validReader !== null && ((o.evalEvery > 0 && step % o.evalEvery === 0) || last);
      if (evalNow) await evaluate(step);
      if ((o.saveEvery > 0 && step % o.saveEvery === 0) || last) await save(step, evalNow);
      if (evalNow && patience > 0 && stopping.counter >= patience && !last) {
        stoppedEarlyAt = step;
        log(`early stopping at step ${step}: ${metric} has not improved by more than ${threshold} for ${patience} evaluations (best ${stopping.best})`);
        if (lastSavedStep !== step) await save(step, evalNow);
        break;
      }

      // Let a pending SIGINT reach its handler, then stop after this step if asked.
      await new Promise((resolve) => setImmediate(resolve));
      if (ctx.signal?.aborted && !last && ahead === null) { // with a step ahead, stop after that one
        interrupted = true;
        log(`interrupted: saving a checkpoint at step ${step}`);
        if (lastSavedStep !== step) await save(step, evalNow);
        break;
      }
    }
    loopSeconds = (performance.now() - loopStart) / 1000;
  } finally {
    (evalBar as Progress | null)?.clear();
    if (step >= totalSteps) bar?.complete(`step ${step}/${totalSteps}`);
    else bar?.finish(`step ${step}/${totalSteps}${stoppedEarlyAt !== null ? ' (stopped early)' : ''}`);
    optimizer.dispose();
    model.dispose();
    trainReader.close();
    validReader?.close();
  }

  // 5. The final model at the root, the results, the report (training/run-end.ts).
  return finishRun(o, log, {
    interrupted, step, totalSteps, epochAt, lastCheckpoint, best, metric, history, totals, stoppedEarlyAt, nothingToDo,
    session: { tokens: sessionTokens, seconds: sessionSeconds, steps: sessionSteps, rows: sessionRows, loopSeconds, startedAt: runStart },
    wallSeconds: wallSeconds(),
    notes: [
      `model: ${baseModel !== null ? `adapted from ${baseModel}` : `pretrained from scratch (${state?.args.config ?? modelLabel})`}${resumeFrom !== null ? ` (resumed from ${resumeFrom})` : ''}, ${config.model_type}, hidden ${config.hidden_size}, ${config.num_hidden_layers} layers, vocab ${config.vocab_size}`,
      `data: ${o.data} (${manifest.splits.train.rows} training rows of ${manifest.seq_len} tokens; tokenizer ${describeTokenizer(manifest.tokenizer.source, manifest.tokenizer.sha256)})`,
      `backend: ${ctx.backend.name} (${ctx.backend.device}), ${describePrecision(precision)}; mlmkit ${ctx.version}`,
    ],
  });
}
