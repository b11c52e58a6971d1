import { z } from 'zod';

/**
 * What text the API accepts, in one place for every schema.
 *
 * Every string must be well-formed UTF-16 without NUL: PostgreSQL refuses a lone surrogate in
 * JSON and NUL in any text, and the persistence worker hands each message to PostgreSQL as JSON
 * after its send resolved, so a string the API took could otherwise be refused, and lost, there.
 * Names and message content also refuse the characters that hide or disguise text: controls,
 * bidi overrides and isolates, and invisible characters.
 */

/** Well-formed UTF-16 (no lone surrogate) and no NUL: what PostgreSQL can store. */
export function isStorable(value: string): boolean {
  return value.isWellFormed() && !value.includes('\u0000');
}

export const NOT_STORABLE = 'must be well-formed Unicode text, without lone surrogates or NUL';

/** Any string input: passwords, tokens, cursors, search queries. */
export const Text = z.string().refine(isStorable, NOT_STORABLE);

/** C0 controls, DEL and the C1 controls (U+0080–U+009F). */
const CONTROLS = /[\u0000-\u001f\u007f-\u009f]/;
/** The same, less newline and tab, which message content may hold. */
const CONTROLS_BUT_LINES = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;
/** Line and paragraph separators: a name is one line. */
const LINE_BREAKS = /[\u2028\u2029]/;
/** Bidi embeddings, overrides and isolates: they reorder what is shown after them. */
const BIDI = /[\u202a-\u202e\u2066-\u2069]/;
/** Zero-width space, word joiner, invisible operators, deprecated format controls, BOM. */
const INVISIBLE = /[\u200b\u2060-\u2065\u206a-\u206f\ufeff]/;
/** Zero-width non-joiner and joiner. */
const JOINER = /[\u200c\u200d]/;
const JOINERS = /[\u200c\u200d]/g;
/** What a joiner may stand between: letters, marks, digits and symbols (emoji, skin tones). */
const JOINABLE = /^[\p{L}\p{M}\p{N}\p{S}]$/u;

/**
 * A zero-width (non-)joiner is part of the text only between two visible characters: inside an
 * emoji sequence (👨‍👩‍👧, 🏳️‍🌈) or a word in Persian or an Indic script. Anywhere else (at an edge,
 * beside a space or another invisible character) it only hides something.
 */
function joinersJoin(value: string): boolean {
  if (!JOINER.test(value)) return true;
  const chars = [...value];
  return chars.every(
    (char, i) =>
      !JOINER.test(char) || (JOINABLE.test(chars[i - 1] ?? '') && JOINABLE.test(chars[i + 1] ?? '')),
  );
}

const NO_CONTROLS = 'must not contain control characters';
const ONE_LINE = 'must be one line without control characters';
const NO_BIDI = 'must not contain bidi override or isolate characters (U+202A–U+202E, U+2066–U+2069)';
const NO_INVISIBLE =
  'must not contain zero-width or other invisible characters (a zero-width joiner only inside an emoji or a word)';

/**
 * A name shown to other people (display name, group name): one line of visible text, trimmed,
 * 1 to `max` characters.
 */
export function nameText(max: number) {
  return z
    .string()
    .trim()
    .min(1, 'must not be empty')
    .max(max, `must be at most ${max} characters`)
    .refine(isStorable, NOT_STORABLE)
    .refine((value) => !CONTROLS.test(value) && !LINE_BREAKS.test(value), ONE_LINE)
    .refine((value) => !BIDI.test(value), NO_BIDI)
    .refine((value) => !INVISIBLE.test(value) && joinersJoin(value), NO_INVISIBLE);
}

/** Message content (already trimmed): newline and tab allowed, otherwise the rules of names. */
export function messageText(max: number) {
  return z
    .string()
    .min(1, 'must not be empty')
    .max(max, `must be at most ${max} characters`)
    .refine(isStorable, NOT_STORABLE)
    .refine((value) => !CONTROLS_BUT_LINES.test(value), NO_CONTROLS)
    .refine((value) => !BIDI.test(value), NO_BIDI)
    .refine((value) => !INVISIBLE.test(value) && joinersJoin(value), NO_INVISIBLE);
}

/** Free text matched against names (a login name): no controls, which no name holds. */
export const LineText = Text.refine((value) => !CONTROLS.test(value), NO_CONTROLS);

/**
 * What a name looks like once case, compatibility forms (ｆｕｌｌｗｉｄｔｈ, ligatures) and joiners
 * are set aside: two names with the same key read the same. Usernames are plain ASCII, so a
 * display name whose key is another user's lowercased username passes for that user.
 */
export function nameKey(name: string): string {
  return name.normalize('NFKC').replace(JOINERS, '').toLowerCase().trim();
}

/**
 * Where in a raw call input the first string PostgreSQL could not store sits (an object key
 * counts too); null when there is none. Iterative, so a deeply nested input costs no stack, and
 * the path is built only for the string it reports.
 */
export function unstorableStringIn(input: unknown): (string | number)[] | null {
  interface Node {
    value: unknown;
    key: string | number | null;
    parent: Node | null;
  }
  const pathOf = (node: Node | null, last?: string): (string | number)[] => {
    const path: (string | number)[] = last === undefined ? [] : [last];
    for (let at = node; at && at.key !== null; at = at.parent) path.unshift(at.key);
    return path;
  };
  const stack: Node[] = [{ value: input, key: null, parent: null }];
  for (let node = stack.pop(); node; node = stack.pop()) {
    const { value } = node;
    if (typeof value === 'string') {
      if (!isStorable(value)) return pathOf(node);
    } else if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) stack.push({ value: value[i], key: i, parent: node });
    } else if (typeof value === 'object' && value !== null) {
      for (const key of Object.keys(value)) {
        if (!isStorable(key)) return pathOf(node, key);
        stack.push({ value: (value as Record<string, unknown>)[key], key, parent: node });
      }
    }
  }
  return null;
}
