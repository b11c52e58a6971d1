import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import type { StoredTokens, TokenStorage } from './storage.js';

/** What a session file holds: the server it belongs to, its tokens and the device token. */
export interface SessionFile {
  url?: string;
  tokens?: StoredTokens;
  /** Kept after sign-out; see `TokenStorage.getDeviceToken`. */
  deviceToken?: string;
}

/**
 * The default session file: `$XDG_CONFIG_HOME/parley/session.json`, `~/.config/parley/…` or,
 * on Windows, `%APPDATA%\parley\…`.
 */
export function defaultSessionPath(env: Record<string, string | undefined> = process.env): string {
  const configDir =
    env.XDG_CONFIG_HOME ||
    (process.platform === 'win32' && env.APPDATA ? env.APPDATA : path.join(homedir(), '.config'));
  return path.join(configDir, 'parley', 'session.json');
}

export async function readSessionFile(file: string): Promise<SessionFile> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as SessionFile;
  } catch (error) {
    if ((error as { code?: string }).code === 'ENOENT') return {};
    throw error;
  }
}

/** Replaces the file in one step, readable by its owner only: it holds credentials. */
export async function writeSessionFile(file: string, content: SessionFile): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const temporary = `${file}.${process.pid}.tmp`;
  await writeFile(temporary, `${JSON.stringify(content, null, 2)}\n`, { mode: 0o600 });
  await rename(temporary, file);
}

/**
 * Keeps tokens in a JSON file, so that a script or the CLI stays signed in between runs.
 * Processes sharing the file pick up each other's refreshed tokens.
 */
export function fileTokenStorage(file: string = defaultSessionPath()): TokenStorage {
  return {
    async get() {
      return (await readSessionFile(file)).tokens ?? null;
    },
    async set(tokens) {
      const current = await readSessionFile(file);
      await writeSessionFile(file, { ...current, tokens });
    },
    async clear() {
      const { tokens: _tokens, ...rest } = await readSessionFile(file);
      if (Object.keys(rest).length === 0) await rm(file, { force: true });
      else await writeSessionFile(file, rest);
    },
    async getDeviceToken() {
      return (await readSessionFile(file)).deviceToken ?? null;
    },
    async setDeviceToken(deviceToken) {
      const current = await readSessionFile(file);
      await writeSessionFile(file, { ...current, deviceToken });
    },
  };
}
