// Checks that the engine's tokenizer library (@huggingface/tokenizers) loads models/demo/tokenizer.json and produces
// exactly the ids of the Python encoder (bpe.py) on work/tokens/samples.json, and decodes them back to the text.
// Usage (from the repository root): node tools/demo-model/verify_tokenizer.mjs
import { readFileSync } from "node:fs";
import { Tokenizer } from "@huggingface/tokenizers";

const tokJson = JSON.parse(readFileSync("models/demo/tokenizer.json", "utf8"));
const tok = new Tokenizer(tokJson, {});
const samples = JSON.parse(readFileSync("tools/demo-model/work/tokens/samples.json", "utf8"));
let bad = 0;
for (const s of samples) {
  const ids = tok.encode(s.text, { add_special_tokens: false }).ids;
  const same = ids.length === s.ids.length && ids.every((v, i) => v === s.ids[i]);
  const back = tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  if (!same || back !== s.text) {
    bad++;
    const k = ids.findIndex((v, i) => v !== s.ids[i]);
    console.log("MISMATCH", JSON.stringify(s.text.slice(0, 60)), "first diff at", k, "decode ok:", back === s.text);
  }
}
console.log(`${samples.length - bad}/${samples.length} samples identical (ids and round trip)`);
process.exit(bad ? 1 : 0);
