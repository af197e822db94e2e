/**
 * Chat prompts: the selection wrapped as one user turn in the model's own chat template (with the generation prompt),
 * as transformers' `apply_chat_template(messages, add_generation_prompt=True)` renders it. The template is Jinja,
 * rendered with @huggingface/jinja (the implementation transformers.js uses). The rendered text is what the model
 * sees; `chatSpans` maps its tokens back to the selection, marking those the template added.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Template } from '@huggingface/jinja';
import { ResidualError } from './errors';
import { checkInputFile } from './files';
import type { TokenSpan } from './results';

/** A chat template and where it was read. */
export interface ChatTemplate {
  /** The file it came from (tokenizer_config.json or chat_template.jinja); errors name it. */
  source: string;
  template: string;
  bosToken?: string;
  eosToken?: string;
}

/** A selection rendered as a user turn. `text` is what is tokenized; the selection is `text[contentStart, contentEnd)`. */
export interface ChatPrompt {
  text: string;
  /** The selection as given. */
  content: string;
  contentStart: number;
  contentEnd: number;
  /** Characters at the start of the selection that the template dropped (a template that trims the message). */
  lead: number;
  source: string;
}

/** Files larger than this are not chat configurations (the largest published tokenizer_config.json is a few MB). */
const MAX_CONFIG_BYTES = 32 * 1024 * 1024;
/** Stands for the message while the template is rendered once to find where the message goes (no lower case, so `upper` keeps it). */
const PLACEHOLDER = 'RESIDUALCHATPLACEHOLDER7F3B';

/** Read once per folder while neither file changes (Analyze, Trace and Steer each ask). */
const cache = new Map<string, { stamp: string; template: ChatTemplate | undefined }>();

/**
 * The chat template of the tokenizer in `dir`: `chat_template.jinja` when present (newer transformers save it there),
 * else `tokenizer_config.json`'s `chat_template` (a string, or a list of `{name, template}` of which `default` is
 * used). Undefined when neither has one.
 */
export function readChatTemplate(dir: string): ChatTemplate | undefined {
  const configFile = path.join(dir, 'tokenizer_config.json');
  const jinjaFile = path.join(dir, 'chat_template.jinja');
  const stamp = [configFile, jinjaFile]
    .map((f) => {
      const st = fs.statSync(f, { throwIfNoEntry: false });
      return st ? `${st.mtimeMs}/${st.size}` : '-';
    })
    .join(':');
  const hit = cache.get(dir);
  if (hit?.stamp === stamp) return hit.template;
  const template = readUncached(configFile, jinjaFile);
  cache.set(dir, { stamp, template });
  return template;
}

function readUncached(configFile: string, jinjaFile: string): ChatTemplate | undefined {
  let config: Record<string, unknown> = {};
  if (fs.existsSync(configFile)) {
    const size = checkInputFile(configFile);
    if (size > MAX_CONFIG_BYTES) throw new ResidualError(`tokenizer_config.json is ${(size / 1e6).toFixed(0)} MB, too large to be a tokenizer configuration`, configFile);
    let parsed: unknown;
    try {
      parsed = JSON.parse(fs.readFileSync(configFile, 'utf8').replace(/^\uFEFF/, ''));
    } catch (e) {
      throw new ResidualError(`is not valid JSON (${(e as Error).message})`, configFile);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ResidualError('must hold a JSON object', configFile);
    config = parsed as Record<string, unknown>;
  }
  const special = (name: string): string | undefined => {
    const v = config[name];
    if (typeof v === 'string') return v;
    if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
    return undefined;
  };
  const tokens = { bosToken: special('bos_token'), eosToken: special('eos_token') };
  if (fs.existsSync(jinjaFile)) {
    const size = checkInputFile(jinjaFile);
    if (size > MAX_CONFIG_BYTES) throw new ResidualError(`is ${(size / 1e6).toFixed(0)} MB, too large to be a chat template`, jinjaFile);
    return { source: jinjaFile, template: fs.readFileSync(jinjaFile, 'utf8'), ...tokens };
  }
  const t = config.chat_template;
  if (t === undefined || t === null) return undefined;
  if (typeof t === 'string') return { source: configFile, template: t, ...tokens };
  if (Array.isArray(t)) {
    const named = t.find((x) => typeof x === 'object' && x !== null && (x as { name?: unknown }).name === 'default');
    const template = (named as { template?: unknown } | undefined)?.template;
    if (typeof template !== 'string') throw new ResidualError('"chat_template" is a list of named templates without a "default" one', configFile);
    return { source: configFile, template, ...tokens };
  }
  throw new ResidualError(`"chat_template" must be a string or a list of {name, template}, found ${typeof t}`, configFile);
}

/** The template of `dir`, or a clear error saying the model has none. */
export function requireChatTemplate(dir: string): ChatTemplate {
  const t = readChatTemplate(dir);
  if (!t) {
    throw new ResidualError(
      'this model has no chat template (no "chat_template" in tokenizer_config.json and no chat_template.jinja), so the text cannot be wrapped as a chat turn; run without chat',
      dir,
      'unsupported',
    );
  }
  return t;
}

/** Parsed once per template (readChatTemplate keeps one object per folder while its files do not change). */
const compiledTemplates = new WeakMap<ChatTemplate, Template>();

function compile(t: ChatTemplate): Template {
  let compiled = compiledTemplates.get(t);
  if (!compiled) {
    try {
      compiled = new Template(t.template);
    } catch (e) {
      throw new ResidualError(`the chat template does not parse: ${(e as Error).message}`, t.source);
    }
    compiledTemplates.set(t, compiled);
  }
  return compiled;
}

function render(t: ChatTemplate, compiled: Template, content: string): string {
  try {
    return compiled.render({
      messages: [{ role: 'user', content }],
      add_generation_prompt: true,
      bos_token: t.bosToken ?? '',
      eos_token: t.eosToken ?? '',
    });
  } catch (e) {
    throw new ResidualError(`the chat template failed to render: ${(e as Error).message}`, t.source);
  }
}

/** Renders `content` as a user turn with the generation prompt, and finds where the message lies in the result. */
export function renderChatPrompt(t: ChatTemplate, content: string): ChatPrompt {
  const compiled = compile(t);
  const probe = render(t, compiled, PLACEHOLDER);
  const at = probe.indexOf(PLACEHOLDER);
  const rewrites = 'the chat template changes the message text in a way that cannot be mapped back to the selection (only trimming is recognised)';
  if (at < 0 && probe.toLowerCase().includes(PLACEHOLDER.toLowerCase())) throw new ResidualError(rewrites, t.source, 'unsupported');
  if (at < 0 || probe.indexOf(PLACEHOLDER, at + 1) >= 0) {
    throw new ResidualError(
      at < 0 ? "the chat template does not write the user message's content, so the selection would not reach the model" : 'the chat template writes the user message more than once, so its tokens cannot be mapped back to the selection',
      t.source,
      'unsupported',
    );
  }
  const prefix = probe.slice(0, at);
  const suffix = probe.slice(at + PLACEHOLDER.length);
  const text = render(t, compiled, content);
  const fits = text.length >= prefix.length + suffix.length && text.startsWith(prefix) && text.endsWith(suffix);
  const middle = fits ? text.slice(prefix.length, text.length - suffix.length) : undefined;
  // Many templates trim the message (Llama 3, Gemma); the kept part is still the selection's own text.
  const lead = middle === undefined ? -1 : middle === content ? 0 : middle === content.trim() ? content.length - content.trimStart().length : -1;
  if (lead < 0) {
    throw new ResidualError(rewrites, t.source, 'unsupported');
  }
  return { text, content, contentStart: prefix.length, contentEnd: prefix.length + middle!.length, lead, source: t.source };
}

/** The text the model runs for `content`: rendered as a user turn when there is a template, else `content` itself. */
export function chatText(t: ChatTemplate | undefined, content: string): string {
  return t ? renderChatPrompt(t, content).text : content;
}

/**
 * Maps spans over `prompt.text` to spans over the selection: tokens that overlap the message get its offsets (clipped
 * to it); tokens wholly outside it are marked `template` and sit at the message's start or end, with their own text.
 */
export function chatSpans(prompt: ChatPrompt, tokens: readonly TokenSpan[]): TokenSpan[] {
  const { contentStart: cs, contentEnd: ce, lead } = prompt;
  const toSelection = (i: number) => Math.min(Math.max(i, cs), ce) - cs + lead;
  return tokens.map((t) => {
    const inside = t.end > cs && t.start < ce;
    // An empty span (a BOS the caller put in front) is the template's too.
    if (!inside || t.start === t.end) return { ...t, start: toSelection(t.start), end: toSelection(t.start), template: true };
    return { ...t, start: toSelection(t.start), end: toSelection(t.end) };
  });
}

/** How many of `tokens` the chat template added. */
export function templateTokenCount(tokens: readonly TokenSpan[]): number {
  return tokens.filter((t) => t.template).length;
}
