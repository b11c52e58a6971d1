import { createHash } from 'node:crypto';

/**
 * A Lua script whose keys and arguments have names. The script's body reads them as Lua locals
 * of the same names: a key or argument is a string, a key list or argument list a table. The
 * prologue that binds them is generated here, so no script does arithmetic on `KEYS` / `ARGV`
 * positions, and a call that leaves one out does not compile.
 *
 * Every key a script touches is given in `keys` or `keyLists` (Redis Cluster routes by them).
 */
export interface ScriptSpec<
  K extends string,
  A extends string,
  KL extends string = never,
  AL extends string = never,
> {
  /** For errors and `SCRIPT` listings. */
  name: string;
  keys: readonly K[];
  args: readonly A[];
  keyLists?: readonly KL[];
  argLists?: readonly AL[];
  /** Lua, run after the prologue. */
  body: string;
}

/** What a call gives a script: every named key and argument, and every list. */
export type ScriptInput<K extends string, A extends string, KL extends string, AL extends string> = {
  keys: Record<K, string>;
  args: Record<A, string | number>;
} & ([KL] extends [never] ? { keyLists?: undefined } : { keyLists: Record<KL, readonly string[]> }) &
  ([AL] extends [never] ? { argLists?: undefined } : { argLists: Record<AL, readonly (string | number)[]> });

/** `KEYS` and `ARGV` of one call, in the order the prologue reads them. */
export interface ScriptCall {
  keys: string[];
  args: (string | number)[];
}

/** Every script defined, so a connection can load them all before its first call. */
const defined: { name: string; lua: string; sha: string }[] = [];

/** Every script defined so far (each engine module defines its own as it is imported). */
export function definedScripts(): readonly { name: string; lua: string; sha: string }[] {
  return defined;
}

const NAME = /^[a-z][A-Za-z0-9]*$/;
const LUA_WORDS = new Set(
  'and break do else elseif end false for function goto if in local nil not or repeat return then true until while redis cjson'.split(
    ' ',
  ),
);

export class Script<
  K extends string,
  A extends string,
  KL extends string = never,
  AL extends string = never,
> {
  readonly name: string;
  /** The whole Lua text: prologue and body. */
  readonly lua: string;
  readonly sha: string;
  private readonly spec: ScriptSpec<K, A, KL, AL>;

  constructor(spec: ScriptSpec<K, A, KL, AL>) {
    const keyLists = spec.keyLists ?? [];
    const argLists = spec.argLists ?? [];
    const names = [...spec.keys, ...spec.args, ...keyLists, ...argLists];
    for (const name of names) {
      if (!NAME.test(name) || LUA_WORDS.has(name)) throw new Error(`script ${spec.name}: bad name ${name}`);
    }
    if (new Set(names).size !== names.length) throw new Error(`script ${spec.name}: a name is used twice`);
    this.spec = spec;
    this.name = spec.name;
    this.lua = `${prologue(spec.keys, spec.args, keyLists, argLists)}\n${spec.body}`;
    this.sha = createHash('sha1').update(this.lua).digest('hex');
    defined.push(this);
  }

  /**
   * `KEYS` and `ARGV` for a call, keys passed through `key` (the engine's prefix). `ARGV`
   * starts with the length of each list, then the single arguments, then the lists' items.
   */
  call(input: ScriptInput<K, A, KL, AL>, key: (name: string) => string): ScriptCall {
    const { keys, args } = input;
    const keyLists = (input.keyLists ?? {}) as Partial<Record<KL, readonly string[]>>;
    const argLists = (input.argLists ?? {}) as Partial<Record<AL, readonly (string | number)[]>>;
    const outKeys: string[] = this.spec.keys.map((name) => key(keys[name]));
    const outArgs: (string | number)[] = [];
    for (const name of this.spec.keyLists ?? []) outArgs.push(keyLists[name]?.length ?? 0);
    for (const name of this.spec.argLists ?? []) outArgs.push(argLists[name]?.length ?? 0);
    for (const name of this.spec.args) outArgs.push(args[name]);
    for (const name of this.spec.keyLists ?? [])
      for (const item of keyLists[name] ?? []) outKeys.push(key(item));
    for (const name of this.spec.argLists ?? []) for (const item of argLists[name] ?? []) outArgs.push(item);
    return { keys: outKeys, args: outArgs };
  }
}

export function defineScript<
  const K extends string,
  const A extends string,
  const KL extends string = never,
  const AL extends string = never,
>(spec: ScriptSpec<K, A, KL, AL>): Script<K, A, KL, AL> {
  return new Script(spec);
}

/** Lua that binds every key, argument and list to a local of its name. */
function prologue(
  keys: readonly string[],
  args: readonly string[],
  keyLists: readonly string[],
  argLists: readonly string[],
): string {
  const lines: string[] = [];
  keys.forEach((name, i) => lines.push(`local ${name} = KEYS[${i + 1}]`));
  const counts = keyLists.length + argLists.length;
  args.forEach((name, i) => lines.push(`local ${name} = ARGV[${counts + i + 1}]`));
  if (counts > 0) {
    lines.push(`local parleyKey = ${keys.length}`, `local parleyArg = ${counts + args.length}`);
    keyLists.forEach((name, i) => {
      lines.push(
        `local ${name} = {}`,
        `for i = 1, tonumber(ARGV[${i + 1}]) do ${name}[i] = KEYS[parleyKey + i] end`,
        `parleyKey = parleyKey + tonumber(ARGV[${i + 1}])`,
      );
    });
    argLists.forEach((name, i) => {
      const at = keyLists.length + i + 1;
      lines.push(
        `local ${name} = {}`,
        `for i = 1, tonumber(ARGV[${at}]) do ${name}[i] = ARGV[parleyArg + i] end`,
        `parleyArg = parleyArg + tonumber(ARGV[${at}])`,
      );
    });
  }
  return lines.join('\n');
}
