#!/usr/bin/env bash
# Run a study on the lent GPU inside one device call, and bring back what a later call needs to
# resume it and what docs/results.md reports.
#
#   bash benchmarks/study_gpu.sh CONFIG DIR [SECONDS=540]
#
# CONFIG  a study YAML (e.g. src/spanlab/data/studies/huang2024-mini-gpu-quick.yaml); DIR its run directory.
# PACK_RESUME=0 (env) skip the resume parts (at most 8 files come back from one call).
# Always packed first: $OUT/<name>.journals.tgz, the per-sample eval journals, manifests, step
# journal, logs and report tables (benchmarks/pack_journals.sh; well under 1 MiB).
# RESUME  (env) a .tgz this script packed in an earlier call (its parts joined; carry it): unpacked
#         into DIR first.
# The study runs under `timeout SECONDS` (keep it below the call's limit: packing takes seconds);
# a study killed there resumes from its step journal when re-run. Then DIR is packed into
# $OUT/<name>.tgz.part-* without what is large and rebuilt deterministically or only needed mid-step:
# the token streams (data/) and training checkpoints. So steps that finished are carried over
# (final models, fine-tuned adapters/merged models, eval journals, report), and a training step
# that was cut off starts again from its first step in the next call.
set -uo pipefail
CONFIG=${1:?usage: study_gpu.sh CONFIG DIR [SECONDS]}
DIR=${2:?usage: study_gpu.sh CONFIG DIR [SECONDS]}
SECS=${3:-540}
NAME=$(basename "$DIR")
mkdir -p "$(dirname "$DIR")"
if [ -n "${RESUME:-}" ]; then
  tar xzf "$RESUME" -C "$(dirname "$DIR")" && echo "resumed from $RESUME: $(wc -l <"$DIR/steps.jsonl") steps done"
fi
t0=$(date +%s)
timeout "$SECS" python3 -m spanlab study "$CONFIG" --out "$DIR" --no-progress 2>&1 | grep -v '^\[transformers\]'
rc=${PIPESTATUS[0]}
echo "study exit $rc after $(( $(date +%s) - t0 ))s (124 = stopped by the time limit; re-run to resume)"
if [ -n "${OUT:-}" ]; then
  # First and always: the per-sample journals (small; benchmarks/pack_journals.sh), so paired tests
  # (`spanlab report A B --compare`) are possible whatever else fits the 8 files / 16 MiB each that
  # come back from one call.
  bash "$(dirname "$0")/pack_journals.sh" "$DIR" "$OUT/$NAME.journals.tgz" || true
  # Then two archives, because a file coming back from the device is capped at 16 MiB: the results
  # (journals, logs, manifests, the report with its figures; no weights) in one small file, and
  # the whole run directory for RESUME in 15 MiB parts (`cat $NAME.tgz.part-* > $NAME.tgz`).
  tar czf "$OUT/$NAME.results.tgz" --exclude="$NAME/data" --exclude='checkpoints' \
    --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' -C "$(dirname "$DIR")" "$NAME"
  if [ "${PACK_RESUME:-1}" != 0 ]; then
    tar czf - --exclude="$NAME/data" --exclude='checkpoints' -C "$(dirname "$DIR")" "$NAME" \
      | split -b 15M - "$OUT/$NAME.tgz.part-"
  fi
  cp "$DIR/report/summary.md" "$OUT/$NAME.summary.md" 2>/dev/null || true
  n=$(find "$OUT" -maxdepth 1 -type f | wc -l)
  [ "$n" -gt 8 ] && echo "WARNING: $n files in \$OUT; only 8 come back from a call: set PACK_RESUME=0 (the journals come first)"
  ls -l "$OUT"
fi
exit "$rc"
