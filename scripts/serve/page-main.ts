// The fill-mask page's script (bundled by scripts/serve/server.ts for `mlm serve`): loads the tfjs
// export served at ./model/ with the browser entry, then fills the masks of the typed sentence.
// `?backend=cpu` picks TF.js's backend (default webgl, cpu where webgl cannot start).
// window.mlmFill(text, k) runs the same thing for scripted use (the browser test).
import * as tf from '@tensorflow/tfjs';
import { fillMaskTopK, loadTfjsModel, type BrowserCandidate } from '../../browser.ts';

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;

async function main(): Promise<void> {
  const status = $('status');
  const wanted = new URLSearchParams(location.search).get('backend') ?? 'webgl';
  if (!(await tf.setBackend(wanted).catch(() => false))) await tf.setBackend('cpu');
  await tf.ready();
  const model = await loadTfjsModel(tf, new URL('model/', location.href).href);
  const input = $<HTMLInputElement>('text');
  if (!input.value) input.value = `Paris is the ${model.tokenizer.maskToken} of France.`;
  $('mask').textContent = model.tokenizer.maskToken;
  status.textContent = `ready: ${model.config.model_type}, ${model.config.num_hidden_layers} layers, backend ${tf.getBackend()}`;
  status.dataset.backend = tf.getBackend();

  const render = (result: BrowserCandidate[] | BrowserCandidate[][]): void => {
    const lists = Array.isArray(result[0]) ? (result as BrowserCandidate[][]) : [result as BrowserCandidate[]];
    const out = $('results');
    out.replaceChildren();
    lists.forEach((list, i) => {
      // Text only, never markup: the mask token and the candidates come from the model's files,
      // which may be anyone's (mlm serve takes Hub ids).
      const table = document.createElement('table');
      table.createCaption().textContent = `${model.tokenizer.maskToken} ${i + 1}`;
      const header = table.insertRow();
      for (const name of ['#', 'token', 'score', 'sequence']) {
        const th = document.createElement('th');
        th.textContent = name;
        header.append(th);
      }
      list.forEach((c, j) => {
        const row = table.insertRow();
        row.className = 'candidate';
        row.dataset.token = String(c.token);
        row.dataset.score = String(c.score);
        for (const v of [String(j + 1), c.token_str, c.score.toFixed(4), c.sequence]) row.insertCell().textContent = v;
      });
      out.append(table);
    });
  };
  const fill = async (text: string, k: number): Promise<BrowserCandidate[] | BrowserCandidate[][]> => {
    const result = await fillMaskTopK(model, text, k);
    render(result);
    return result;
  };
  (window as unknown as { mlmFill: typeof fill }).mlmFill = fill;
  $('form').addEventListener('submit', (e) => {
    e.preventDefault();
    fill(input.value, Number($<HTMLInputElement>('k').value) || 5).catch((err: Error) => { $('results').textContent = err.message; });
  });
  status.dataset.ready = 'true';
}

main().catch((err: Error) => { $('status').textContent = `error: ${err.message}`; });
