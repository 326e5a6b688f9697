// common/errors.ts: raw system errors become one line with the path, what to do and the right exit
// code (InputError = exit 2 for an output path that cannot be used; a plain Error = exit 1 for a full
// disk while running); non-regular files are refused before they are opened; an output folder is
// checked for writability before any work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { envSwitch, firstNames, InputError, MAX_SEED, requireRegularFile, requireSeed, requireWritableFolder, systemError } from '../../common/errors.ts';
import { Rng } from '../../common/rng.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-errors-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

/** An error shaped as node:fs rejects with. */
const errno = (code: string, p: string) => Object.assign(new Error(`${code}: raw message, open '${p}'`), { code, path: p });

test('systemError: bad output paths are exit 2, a full disk is exit 1, each with the path and what to do', () => {
  const cases: Array<[string, boolean, RegExp]> = [
    ['EEXIST', true, /^--out \/runs\/a: a file is in the way \(a part of the path is a file, not a folder\); choose another path or move the file$/],
    ['ENOTDIR', true, /^--out \/runs\/a: a file is in the way/],
    ['EROFS', true, /^--out \/runs\/a is on a read-only file system; choose an output path on a writable disk$/],
    ['EACCES', true, /^--out \/runs\/a: permission denied; choose a path you can write to, or fix its permissions$/],
    ['ENOSPC', false, /^no space left on the device while writing \/runs\/a; free space at \/runs\/a \(or choose another path\) and run again$/],
    ['ELOOP', true, /^--out \/runs\/a: too many levels of symbolic links \(a link that leads back to itself\?\); fix the link or choose another path$/],
  ];
  for (const [code, input, re] of cases) {
    const mapped = systemError(errno(code, '/runs/a'), { flag: '--out' });
    assert.ok(mapped, code);
    assert.equal(mapped instanceof InputError, input, code);
    assert.match(mapped.message, re);
  }
  // The path of the error itself when no other is given; unknown codes and plain errors pass through.
  assert.match(systemError(errno('ENOSPC', '/data/x/metrics.jsonl'))!.message, /free space at \/data\/x\/metrics\.jsonl/);
  assert.equal(systemError(errno('ECONNRESET', '/x')), null);
  // A path inside a write's hidden temporary is named as the folder given (it named
  // `/sys/.x.ckpt-tmp-22321-af5f30`); a full disk with no path says so without one.
  assert.match(systemError(errno('EACCES', '/sys/.x.ckpt-tmp-22321-af5f30'))!.message, /^\/sys\/x: permission denied;/);
  assert.match(systemError(errno('ENOSPC', '/r/.run.prepare-tmp-7-0a1b2c/train-00000.bin'))!.message, /while writing \/r\/run\/train-00000\.bin;/);
  const noPath = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  assert.equal(systemError(noPath)!.message, 'no space left on the device while writing the output; free space on the disk it goes to (or choose another output path) and run again');
  // ENOENT only from mkdir (a dangling link on the way); a missing input is left to its reader.
  const mkdir = Object.assign(errno('ENOENT', '/runs/a'), { syscall: 'mkdir' });
  assert.match(systemError(mkdir, { flag: '--out' })!.message, /^--out \/runs\/a cannot be created: a folder on its way is missing \(a link to a folder that is not there\?\); fix the link or choose another path$/);
  assert.equal(systemError(Object.assign(errno('ENOENT', '/data/a.txt'), { syscall: 'open' })), null);
  // A folder that cannot be listed is an input to make readable, not an output to make writable.
  assert.match(systemError(Object.assign(errno('EACCES', '/data/papers'), { syscall: 'scandir' }))!.message, /^\/data\/papers: permission denied, it cannot be read; fix its permissions$/);
  assert.equal(systemError(new Error('plain')), null);
  const oom = systemError(new RangeError('Invalid typed array length: 256000000000'))!;
  assert.ok(!(oom instanceof InputError));
  assert.match(oom.message, /^out of memory: Invalid typed array length: 256000000000; use a smaller model config or --batch-size, or a machine with more memory$/);
});

test('requireRegularFile refuses a FIFO without opening it (no hang); plain and missing files pass', () => {
  const fifo = path.join(tmp, 'model.safetensors');
  execFileSync('mkfifo', [fifo]);
  assert.throws(() => requireRegularFile(fifo, 'safetensors file'), (err: unknown) => {
    assert.ok(err instanceof InputError);
    assert.equal(err.message, `${fifo} is a named pipe (FIFO), not a regular file; the safetensors file must be a plain file: replace it with the real one`);
    return true;
  });
  assert.throws(() => requireRegularFile(tmp, 'model config'), /is a folder, not a regular file/);
  fs.writeFileSync(path.join(tmp, 'plain'), 'x');
  requireRegularFile(path.join(tmp, 'plain'), 'model config');
  requireRegularFile(path.join(tmp, 'missing'), 'model config');
});

test('requireWritableFolder: a file, a dangling link or a link loop in the path is refused before any work; a new folder under a writable one passes', () => {
  fs.writeFileSync(path.join(tmp, 'afile'), 'x');
  assert.throws(() => requireWritableFolder(path.join(tmp, 'afile', 'tok'), '--out'), (err: unknown) => {
    assert.ok(err instanceof InputError);
    assert.match(err.message, /^--out .*afile\/tok: a file is in the way/);
    return true;
  });
  requireWritableFolder(path.join(tmp, 'new', 'deeper'), '--out');
  assert.equal(fs.existsSync(path.join(tmp, 'new')), false); // checks only, creates nothing
  // A link to a folder that is not there (an unmounted disk), and a link loop, on the way.
  fs.symlinkSync(path.join(tmp, 'unmounted', 'disk'), path.join(tmp, 'dangling'));
  fs.symlinkSync(path.join(tmp, 'loop'), path.join(tmp, 'loop'));
  for (const [dir, re] of [[path.join(tmp, 'dangling'), /cannot be created: a folder on its way is missing/], [path.join(tmp, 'dangling', 'tok'), /cannot be created/], [path.join(tmp, 'loop', 'tok'), /too many levels of symbolic links/]] as const) {
    assert.throws(() => requireWritableFolder(dir, '--out'), (err: unknown) => err instanceof InputError && re.test(err.message), dir);
  }
});

test('requireSeed: the seeds that give distinct runs (0 to 2**32 - 1) pass; the rest would alias one of them and are refused', () => {
  for (const ok of [0, 1, 42, MAX_SEED]) assert.doesNotThrow(() => requireSeed(ok));
  for (const bad of [-1, MAX_SEED + 1, 1e30, 1.5, Number.NaN, Infinity]) {
    assert.throws(() => requireSeed(bad), (e) => e instanceof InputError && /^--seed must be an integer from 0 to 4294967295 \(seeds are 32-bit\), got /.test(e.message), String(bad));
  }
  assert.throws(() => requireSeed(-3, 'data-seed'), { message: /^--data-seed must be/ });
  // Why: the generator sees the seed as a 32-bit word, so these pairs would be the same run.
  const first = (seed: number) => new Rng(seed).nextU32();
  assert.equal(first(MAX_SEED + 1), first(0));
  assert.equal(first(-1), first(MAX_SEED));
});

test('firstNames: up to three names, then how many more', () => {
  assert.equal(firstNames([]), '');
  assert.equal(firstNames(['a']), 'a');
  assert.equal(firstNames(['a', 'b', 'c']), 'a, b, c');
  assert.equal(firstNames(['a', 'b', 'c', 'd']), 'a, b, c and 1 more');
  assert.equal(firstNames(['a', 'b', 'c', 'd', 'e'], 2), 'a, b and 3 more');
});

test('envSwitch: 1/0 and their words in any case, the fallback when unset or empty, one line for anything else', () => {
  for (const on of ['1', 'true', 'YES', ' on ']) assert.equal(envSwitch({ X: on }, 'X', false), true, on);
  for (const off of ['0', 'False', 'no', 'OFF']) assert.equal(envSwitch({ X: off }, 'X', true), false, off);
  assert.equal(envSwitch({}, 'X', true), true);
  assert.equal(envSwitch({ X: ' ' }, 'X', false), false);
  // MLM_SIMD_KERNELS=off was read as on (only '0' switched the kernels off).
  assert.throws(() => envSwitch({ MLM_SIMD_KERNELS: 'disable' }, 'MLM_SIMD_KERNELS', true),
    (e) => e instanceof InputError && e.message === "MLM_SIMD_KERNELS must be 1 or 0 (or true/false, yes/no, on/off), got 'disable'");
});
