/**
 * Chat prompts: reading the template where transformers saves it, rendering a user turn (checked against renderings
 * written out by hand from the templates' text), mapping tokens back to the selection, and the analysis in chat form.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { analyze } from '../../src/engine/analysis';
import { chatSpans, readChatTemplate, renderChatPrompt, requireChatTemplate, type ChatTemplate } from '../../src/engine/chat';
import { writeRandomFamily } from '../../src/engine/checkpoint/random';
import { ResidualError } from '../../src/engine/errors';
import { Model } from '../../src/engine/model';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';
import { loadTinyModel, type TinyModel } from '../helpers/tiny-model';

/** ChatML (Qwen, SmolLM): no trimming, no BOS. */
const CHATML =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
/** Llama-3 style: BOS from the template, the message trimmed. */
const LLAMA3 =
  "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
/** Plain words the GPT-2 vocabulary has, with the tokenizer's own special token as BOS. */
const PLAIN = "{{ bos_token }}{% for m in messages %}User: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";

const roots: string[] = [];
function folder(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-chat-'));
  roots.push(dir);
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  return dir;
}
after(() => {
  for (const r of roots) fs.rmSync(r, { recursive: true, force: true });
});

const tpl = (template: string, extra: Partial<ChatTemplate> = {}): ChatTemplate => ({ source: 'tokenizer_config.json', template, ...extra });

describe('reading the chat template', () => {
  it('reads a string, a list with a default, and prefers chat_template.jinja; special tokens may be objects', () => {
    const a = folder({ 'tokenizer_config.json': JSON.stringify({ chat_template: CHATML, bos_token: '<s>', eos_token: { content: '</s>', lstrip: false } }) });
    assert.deepEqual(readChatTemplate(a), { source: path.join(a, 'tokenizer_config.json'), template: CHATML, bosToken: '<s>', eosToken: '</s>' });
    const b = folder({ 'tokenizer_config.json': JSON.stringify({ chat_template: [{ name: 'tool_use', template: 'x' }, { name: 'default', template: LLAMA3 }] }) });
    assert.equal(readChatTemplate(b)?.template, LLAMA3);
    const c = folder({ 'tokenizer_config.json': JSON.stringify({ chat_template: CHATML, bos_token: '<s>' }), 'chat_template.jinja': LLAMA3 });
    assert.deepEqual(readChatTemplate(c), { source: path.join(c, 'chat_template.jinja'), template: LLAMA3, bosToken: '<s>', eosToken: undefined });
  });

  it('a model without one: undefined, and requireChatTemplate says so naming the folder', () => {
    const none = folder({ 'tokenizer_config.json': JSON.stringify({ model_max_length: 1024 }) });
    assert.equal(readChatTemplate(none), undefined);
    assert.equal(readChatTemplate(folder({})), undefined);
    assert.throws(() => requireChatTemplate(none), (e: unknown) => e instanceof ResidualError && e.message.startsWith(`${none}: this model has no chat template`) && e.code === 'unsupported');
  });

  it('a broken tokenizer_config.json or a list without a default: an error naming the file', () => {
    const bad = folder({ 'tokenizer_config.json': '{"chat_template": ' });
    assert.throws(() => readChatTemplate(bad), (e: unknown) => e instanceof ResidualError && e.message.includes(path.join(bad, 'tokenizer_config.json')) && /not valid JSON/.test(e.message));
    const list = folder({ 'tokenizer_config.json': JSON.stringify({ chat_template: [{ name: 'rag', template: 'x' }] }) });
    assert.throws(() => readChatTemplate(list), /without a "default"/);
    const num = folder({ 'tokenizer_config.json': JSON.stringify({ chat_template: 7 }) });
    assert.throws(() => readChatTemplate(num), /must be a string or a list/);
  });

  it('reads the file again when it changes', () => {
    const dir = folder({ 'tokenizer_config.json': JSON.stringify({ chat_template: CHATML }) });
    assert.equal(readChatTemplate(dir)?.template, CHATML);
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: LLAMA3 + ' ' }));
    assert.equal(readChatTemplate(dir)?.template, LLAMA3 + ' ');
  });
});

describe('rendering a user turn', () => {
  it('ChatML: the rendering transformers gives, with the message located exactly', () => {
    const p = renderChatPrompt(tpl(CHATML), 'The capital of France is');
    assert.equal(p.text, '<|im_start|>user\nThe capital of France is<|im_end|>\n<|im_start|>assistant\n');
    assert.equal(p.text.slice(p.contentStart, p.contentEnd), 'The capital of France is');
    assert.equal(p.lead, 0);
  });

  it('Llama 3: BOS from bos_token and a trimmed message; the trimmed characters are counted', () => {
    const p = renderChatPrompt(tpl(LLAMA3, { bosToken: '<|begin_of_text|>' }), '  Hello there \n');
    assert.equal(p.text, '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n');
    assert.equal(p.text.slice(p.contentStart, p.contentEnd), 'Hello there');
    assert.equal(p.lead, 2);
  });

  it('maps spans: overlapping tokens onto the selection (clipped), the others marked as the template\'s', () => {
    const p = renderChatPrompt(tpl(PLAIN, { bosToken: '<|endoftext|>' }), 'hi there');
    // "<|endoftext|>User: hi there\nAssistant:" — " hi" straddles the template's space and the message.
    const rendered = [[0, 13], [13, 17], [17, 18], [18, 21], [21, 27], [27, 28], [28, 37], [37, 38]].map(([start, end], id) => ({ id, text: p.text.slice(start, end), start, end }));
    const mapped = chatSpans(p, rendered);
    assert.deepEqual(mapped.map((t) => [t.start, t.end, t.template === true]), [[0, 0, true], [0, 0, true], [0, 0, true], [0, 2, false], [2, 8, false], [8, 8, true], [8, 8, true], [8, 8, true]]);
    assert.deepEqual(mapped.map((t) => t.text), rendered.map((t) => t.text), 'each token keeps its own text');
  });

  it('a template that fails, does not parse, drops or repeats the message, or rewrites it: a clear error naming the file', () => {
    const raising = "{% if messages[0]['role'] == 'user' %}{{ raise_exception('System role required') }}{% endif %}";
    assert.throws(() => renderChatPrompt(tpl(raising), 'x'), (e: unknown) => e instanceof ResidualError && /^tokenizer_config\.json: the chat template failed to render: .*System role required/.test(e.message));
    assert.throws(() => renderChatPrompt(tpl('{% for m in messages %}'), 'x'), /tokenizer_config\.json: the chat template does not parse/);
    assert.throws(() => renderChatPrompt(tpl('{{ bos_token }}hello'), 'x'), /does not write the user message's content/);
    assert.throws(() => renderChatPrompt(tpl('{{ messages[0].content }}{{ messages[0].content }}'), 'x'), /more than once/);
    assert.throws(() => renderChatPrompt(tpl('{{ messages[0].content | upper }}'), 'abc'), /cannot be mapped back/);
    assert.throws(() => renderChatPrompt(tpl('{{ messages[0].content | lower }}'), 'abc'), /cannot be mapped back/);
  });
});

describe('analysis in chat form', () => {
  let tiny: TinyModel;
  before(async () => {
    tiny = await loadTinyModel('chat', { nLayers: 2, dModel: 16, nHeads: 2, dMlp: 32, nCtx: 64, vocabSize: 50257 }, { seed: 3, std: 0.4 });
  });
  after(() => tiny?.dispose());

  it('runs the rendered text; template tokens are marked, the selection\'s tokens keep their offsets into it', async () => {
    const chat = tpl(PLAIN, { bosToken: '<|endoftext|>' });
    const text = 'The cat sat on the mat';
    const a = await analyze(tiny.model, text, { chat, perLayer: false });
    const rendered = renderChatPrompt(chat, text).text;
    const plain = await analyze(tiny.model, rendered, { perLayer: false });
    assert.deepEqual(a.tokens.map((t) => t.id), plain.tokens.map((t) => t.id), 'the model saw the rendered prompt');
    assert.deepEqual(a.top, plain.top);
    // Independently: a token is the template's when its span in the rendered text misses the message.
    const cs = rendered.indexOf(text);
    assert.deepEqual(a.tokens.map((t) => t.template === true), plain.tokens.map((t) => t.end <= cs || t.start >= cs + text.length));
    for (const t of a.tokens.filter((x) => !x.template)) assert.ok(text.slice(t.start, t.end).length > 0 && t.text.endsWith(text.slice(t.start, t.end)), JSON.stringify(t));
    assert.equal(a.tokens.filter((t) => !t.template).map((t) => text.slice(t.start, t.end)).join(''), text, 'the selection\'s tokens cover it exactly');
    assert.deepEqual(a.chat, { template: 'tokenizer_config.json', added: a.tokens.filter((t) => t.template).length });
    assert.equal(a.chat.added, 6); // <|endoftext|> "User" ":" before; "\n" "Assistant" ":" after (" The" holds the selection)
  });
});

describe('chat form with a BOS-adding tokenizer', () => {
  it('the template\'s BOS is the only one (as apply_chat_template tokenizes), and it is marked as the template\'s', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-chat-bos-'));
    roots.push(dir);
    const EOT = 50256;
    const tok = {
      ...(gpt2TokenizerJSON() as Record<string, unknown>),
      post_processor: {
        type: 'TemplateProcessing',
        single: [{ SpecialToken: { id: '<|endoftext|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
        pair: [],
        special_tokens: { '<|endoftext|>': { id: '<|endoftext|>', ids: [EOT], tokens: ['<|endoftext|>'] } },
      },
    };
    const modelDir = path.join(dir, 'model');
    writeRandomFamily(modelDir, 'llama', { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 64, vocab_size: 50257 }, { seed: 5, tokenizerJson: tok, std: 0.3 });
    fs.writeFileSync(path.join(modelDir, 'tokenizer_config.json'), JSON.stringify({ chat_template: PLAIN, bos_token: '<|endoftext|>' }));
    const model = await Model.load(modelDir, { providers: ['cpu'], cacheDir: path.join(dir, 'cache') });
    try {
      assert.equal(model.tokenizer.prependsBos, true);
      const chat = requireChatTemplate(modelDir);
      const a = await analyze(model, 'Hello world', { chat, perLayer: false });
      assert.equal(a.tokens.filter((t) => t.id === EOT).length, 1, 'one BOS');
      assert.equal(a.tokens[0].id, EOT);
      assert.equal(a.tokens[0].template, true);
      // Without chat the tokenizer's own BOS is still added.
      const plain = await analyze(model, 'Hello world', { perLayer: false });
      assert.equal(plain.tokens[0].id, EOT);
      assert.equal(plain.tokens[0].template, undefined);
    } finally {
      await model.dispose();
    }
  });
});
