// Atomic folder writes: a folder is filled under a hidden temporary sibling name, every file and
// folder is fsync'd, and only then is it renamed onto its target. An existing target is moved
// aside first and removed after the rename (and moved back if the rename fails), so a crash or a
// full disk at any point leaves either the old folder or the new one, never a half-written one.
// Used by `mlm prepare` (data folders) and by checkpoint writes (training/checkpoint.ts).
// Single files: `writeFileAtomic` and `copyFileAtomic` (FILE.tmp, fsync, rename, fsync of the folder).
//
// Writes under way are listed (the module's one piece of state) so that a process stopped by a
// signal can take their temporaries away at once (`removeUnfinishedWrites`, called by the CLI's
// Ctrl-C handler, scripts/interrupt.ts), putting back a folder caught between its two renames.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { homedir } from 'node:os';
import * as path from 'node:path';
import { firstNames, InputError } from './errors.ts';
import { realPathOf, within } from './paths.ts';

/** A write under way: its temporary, its target, and the old target while the two are swapped. */
interface Unfinished {
  target: string;
  tmp: string;
  old?: string;
  /** The new folder or file is in place: only the old one's removal is left. */
  placed?: boolean;
}
const unfinished = new Set<Unfinished>();

/**
 * Removes the temporaries of the writes under way, synchronously (for a signal handler that exits
 * next), putting back a replaced folder moved aside but not yet replaced; returns their targets.
 */
export function removeUnfinishedWrites(): string[] {
  const targets: string[] = [];
  // A file written inside a folder's temporary (model.safetensors of a checkpoint) goes with it.
  const inside = (w: Unfinished) => [...unfinished].some((u) => u !== w && path.resolve(w.target).startsWith(path.resolve(u.tmp) + path.sep));
  for (const w of unfinished) {
    if (inside(w)) continue;
    if (w.placed) {
      if (w.old !== undefined) fs.rmSync(w.old, { recursive: true, force: true });
      continue; // written: not one of the targets left unwritten
    }
    // Moved aside and not yet replaced: put back (before its rename, the old one is still there).
    if (w.old !== undefined && !fs.existsSync(w.target)) {
      try {
        fs.renameSync(w.old, w.target);
      } catch {
        // Left under its -old- name: the next write to the target puts it back (restoreOrRemove).
      }
    }
    fs.rmSync(w.tmp, { recursive: true, force: true });
    targets.push(w.target);
  }
  unfinished.clear();
  return targets;
}

/** A hidden sibling of `target` for temporary use: `.NAME.TAG-PID-RANDOM`. */
export function tempSibling(target: string, tag: string): string {
  const abs = path.resolve(target);
  return path.join(path.dirname(abs), `.${path.basename(abs)}.${tag}-${process.pid}-${randomBytes(3).toString('hex')}`);
}

async function fsyncPath(p: string): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(p, 'r');
    await fh.sync();
  } catch {
    // Folders cannot be opened or synced on some platforms (Windows); nothing more to do there.
  } finally {
    await fh?.close().catch(() => {});
  }
}

/** Bytes per write call: one call per 1 GiB at most, below the limit of a single write. */
const WRITE_CHUNK = 1 << 30;

/** Writes FILE.tmp, fsyncs it, renames it over FILE, then fsyncs the folder (where supported). */
export async function writeFileAtomic(file: string, chunks: Iterable<Uint8Array>): Promise<void> {
  const tmp = `${file}.tmp`;
  const write: Unfinished = { target: file, tmp };
  unfinished.add(write);
  try {
    await writeAndRename(write, chunks);
  } finally {
    unfinished.delete(write);
  }
}

async function writeAndRename(write: Unfinished, chunks: Iterable<Uint8Array>): Promise<void> {
  const { tmp, target: file } = write;
  const fh = await fsp.open(tmp, 'w');
  try {
    for (const c of chunks) {
      let done = 0;
      while (done < c.length) {
        const { bytesWritten } = await fh.write(c, done, Math.min(c.length - done, WRITE_CHUNK));
        done += bytesWritten;
      }
    }
    await fh.sync();
    await fh.close();
  } catch (err) {
    await fh.close().catch(() => {});
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await fsp.rename(tmp, file);
  write.placed = true;
  await fsyncPath(path.dirname(file));
}

/** Copies `src` to `dest` through `dest`.tmp, fsync'd, then renamed: `dest` is never seen half-written. */
export async function copyFileAtomic(src: string, dest: string): Promise<void> {
  const tmp = `${dest}.tmp`;
  try {
    await fsp.copyFile(src, tmp);
    const fh = await fsp.open(tmp, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await fsp.rename(tmp, dest);
  await fsyncPath(path.dirname(dest));
}

/** fsyncs every file under `dir` (recursively), then the folders themselves. */
async function fsyncTree(dir: string): Promise<void> {
  for (const entry of await fsp.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) await fsyncTree(p);
    else if (entry.isFile()) await fsyncPath(p);
  }
  await fsyncPath(dir);
}

/** Removes the temporary siblings `writeFolderAtomic(target, ..., tag)` leaves when killed. */
export async function removeStaleTemps(target: string, tag: string): Promise<void> {
  const abs = path.resolve(target);
  // The whole name, not a prefix: `.data.prepare-tmp-…` is data's, while a folder named
  // `data.prepare-x` has temporaries of its own (`.data.prepare-x.prepare-tmp-…`) that are not.
  const escape = (t: string) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const own = new RegExp(`^\\.${escape(path.basename(abs))}\\.${escape(tag)}-(tmp|old)-\\d+-[0-9a-f]{6}$`);
  const entries = await fsp.readdir(path.dirname(abs)).catch(() => [] as string[]);
  await restoreOrRemove(abs, entries.filter((e) => own.test(e)).map((e) => path.join(path.dirname(abs), e)));
}

/**
 * Deals with the temporary siblings of `target` a killed writeFolderAtomic left: a run killed
 * between its two renames left the previous folder under its `-old-` name and none at `target`,
 * so that one is put back; the rest are removed.
 */
export async function restoreOrRemove(target: string, temps: string[]): Promise<void> {
  const old = temps.find((t) => /-old-\d+-[0-9a-f]{6}$/.test(t));
  let restored: string | null = null;
  if (old !== undefined && (await fsp.lstat(target).catch(() => null)) === null) {
    await fsp.rename(old, target);
    restored = old;
  }
  for (const t of temps) if (t !== restored) await fsp.rm(t, { recursive: true, force: true });
}

/**
 * Whatever a caller's checks said, the folder that holds the process's working folder or is the
 * user's home folder is never replaced: that would remove the very place the command runs from.
 */
function refuseReplacingHome(dir: string, real: string): void {
  let cwd: string | null = null;
  try {
    cwd = realPathOf(process.cwd());
  } catch {
    // The working folder is gone (process.cwd() throws): nothing of it to protect.
  }
  if (cwd !== null && within(cwd, real)) throw new InputError(`${dir} is or holds the current working folder; refusing to replace it, choose another output folder`);
  if (real === realPathOf(homedir())) throw new InputError(`${dir} is the home folder; refusing to replace it, choose another output folder`);
}

/**
 * Fills a new folder through `fill(tmpDir)` and puts it at `dir` atomically (see the file header).
 * `dir` may exist: it is replaced only after the new folder is complete. The caller decides
 * whether replacing it is allowed (`replace: false`: only while it is still empty). `tag` names
 * the temporary siblings (`.NAME.TAG-tmp-...`).
 */
export async function writeFolderAtomic(dir: string, fill: (tmpDir: string) => Promise<void>, tag = 'ckpt', opts: { replace?: boolean } = {}): Promise<void> {
  // '' resolves to the working folder: a caller that let an empty path through would replace it.
  if (dir.trim() === '') throw new InputError('the output folder is an empty path; name a folder');
  const target = path.resolve(dir);
  const parent = path.dirname(target);
  await fsp.mkdir(parent, { recursive: true });
  const existing = await fsp.lstat(target).catch(() => null);
  if (existing && !existing.isDirectory()) {
    throw new InputError(`${dir} exists and is not a plain folder (a file or a link); choose another output path`);
  }
  if (existing) refuseReplacingHome(dir, realPathOf(target));
  const tmp = tempSibling(target, `${tag}-tmp`);
  await fsp.mkdir(tmp);
  const write: Unfinished = { target: dir, tmp };
  unfinished.add(write);
  try {
    await fill(tmp);
    await fsyncTree(tmp);
    // `replace: false` (commands that write only into a new or empty folder, checked when they
    // started): files that appeared there while this ran (another run) are not replaced.
    const now = opts.replace === false ? await fsp.readdir(target).catch(() => null) : null;
    if (now !== null && now.length > 0) {
      throw new InputError(`${dir} received files while this command ran (${firstNames(now)}); nothing was replaced: choose another output folder`);
    }
    if (existing) {
      const old = tempSibling(target, `${tag}-old`);
      write.old = old; // before the rename: a signal may come while it is under way
      await fsp.rename(target, old);
      try {
        await fsp.rename(tmp, target);
        write.placed = true;
      } catch (err) {
        await fsp.rename(old, target).catch(() => {});
        throw err;
      }
      await fsyncPath(parent);
      await fsp.rm(old, { recursive: true, force: true });
    } else {
      await fsp.rename(tmp, target);
      write.placed = true;
    }
    await fsyncPath(parent);
  } catch (err) {
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => {});
    throw err;
  } finally {
    unfinished.delete(write);
  }
}
