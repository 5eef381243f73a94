#!/usr/bin/env bash
# Pack what a paired re-analysis of a study needs, and nothing large, into one small archive:
#
#   bash benchmarks/pack_journals.sh DIR OUT.tgz
#
# the per-sample eval journals with their manifests, of a study DIR or of one `spanlab eval` DIR
# (`spanlab report A B --compare` pairs two of them sample by sample), the step journal and pinned config, perplexity journals, the profile CSV,
# training logs and the report's tables (md/csv/json). No weights, tokenizers, token streams,
# held-out prompts (regenerated from the config) or figures: a 10-model study packs to well under
# a MiB, so it comes back from the device whatever else does not.
set -euo pipefail
DIR=${1:?usage: pack_journals.sh DIR OUT.tgz}
DEST=${2:?usage: pack_journals.sh DIR OUT.tgz}
NAME=$(basename "$DIR")
PARENT=$(cd "$(dirname "$DIR")" && pwd)
LIST=$(mktemp)
trap 'rm -f "$LIST"' EXIT
(cd "$PARENT" && find "$NAME" -type f \( \
    -path "$NAME/steps.jsonl" -o -path "$NAME/study.yaml" \
    -o -path "$NAME/eval/*/results*.jsonl" -o -path "$NAME/eval/*/manifest.json" \
    -o -path "$NAME/results*.jsonl" -o -path "$NAME/manifest.json" \
    -o -path "$NAME/ppl/*.jsonl" -o -path "$NAME/profile/*.csv" \
    -o -path "$NAME/train/*/train_log.jsonl" -o -path "$NAME/train/*/pretrain.json" \
    -o -path "$NAME/finetune/*/train_log.jsonl" -o -path "$NAME/finetune/*/finetune_config.yaml" \
    -o -path "$NAME/report/*.md" -o -path "$NAME/report/*.csv" -o -path "$NAME/report/*.json" \
    \) -not -path "*/checkpoints/*" | sort) > "$LIST"
if [ ! -s "$LIST" ]; then
  echo "pack_journals: $DIR holds no study output" >&2
  exit 2
fi
tar czf "$DEST" -C "$PARENT" -T "$LIST"
echo "packed $(wc -l < "$LIST") files of $DIR into $DEST ($(du -h "$DEST" | cut -f1))"
