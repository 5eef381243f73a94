#!/usr/bin/env bash
# Several small studies side by side on one lent GPU, their results in one archive.
#
#   source benchmarks/device_setup.sh && bash benchmarks/studies_gpu.sh SECONDS NAME [NAME...]
#
# NAME is a shipped study (src/spanlab/data/studies/NAME.yaml), run into runs/study-NAME under
# `timeout SECONDS` each, all at once: the tiny hybrid's fine-tunes and evaluations leave most of an
# H100 idle, so two or three of them share it at little cost in wall time (their scores do not
# depend on it; their timings would, so keep studies that time something, e.g. ablation-profile,
# out of a shared run). One call returns at most 8 files, and each study packs three
# (benchmarks/study_gpu.sh), so every study packs into a private folder and the folders come back
# as one $OUT/studies.tgz: per-study journals (`spanlab report A B --compare`), results and
# summary.md, and each study's log.
set -uo pipefail
SECS=${1:?usage: studies_gpu.sh SECONDS NAME [NAME...]}
shift
FINAL=${OUT:?set OUT (the device call sets it)}
STAGE=$(mktemp -d)
export PACK_RESUME=0
pids=()
for name in "$@"; do
  mkdir -p "$STAGE/$name"
  OUT="$STAGE/$name" bash "$(dirname "$0")/study_gpu.sh" "src/spanlab/data/studies/$name.yaml" \
    "runs/study-$name" "$SECS" >"$STAGE/$name/log.txt" 2>&1 &
  pids+=($!)
done
rc=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"; r=$?
  echo "=== ${*:$((i + 1)):1}: exit $r"; tail -n 5 "$STAGE/${*:$((i + 1)):1}/log.txt"
  [ "$r" -ne 0 ] && rc=$r
done
tar czf "$FINAL/studies.tgz" -C "$STAGE" .
ls -l "$FINAL/studies.tgz"
exit "$rc"
