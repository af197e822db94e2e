/**
 * Child process of numbers.cases.ts: loads each tokenizer.json named after the text (argv: TEXT FILE…) and tokenises
 * the text with it, printing one JSON line per file, `{file, message, ms}`. Run apart so that a hostile pattern that
 * got through would hang this process (killed at a deadline), not the test run.
 */
import { Tokenizer } from '../../src/engine/tokenizer';

async function main(): Promise<void> {
  const [text, ...files] = process.argv.slice(2);
  for (const file of files) {
    const t0 = Date.now();
    let message: string;
    try {
      const t = await Tokenizer.fromFile(file);
      message = `loaded; ${t.encode(text).ids.length} tokens; decoded ${t.decode(t.encode(text).ids).length} characters`;
    } catch (e) {
      message = e instanceof Error ? e.message : String(e);
    }
    process.stdout.write(JSON.stringify({ file, message, ms: Date.now() - t0 }) + '\n');
  }
}

void main();
