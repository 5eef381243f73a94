#!/usr/bin/env bash
# One GPU-machine call for the attention work, every phase under its own time limit so that a slow
# phase cannot take the others' output with it; each phase's log lands in $OUT/<phase>.txt.
#
#   source benchmarks/device_setup.sh && bash benchmarks/attention_device.sh explore|final
#
# explore: the Triton memory-piece checks, the SE GPU tests, the SE breakdown at 32K/64K with the
#          memory-kernel tile sweep, SE/full rows of the profile, layer mode for full/SE.
# final:   all GPU tests of tests/attention, the full profile (benchmarks/attention_profile.py, the
#          table in docs/benchmarks.md), layer mode at 32K/64K for full/sw/se, the breakdown at 32K/64K
#          with the tile sweep at 32K.
set -u
OUT=${OUT:-attention-device-out}
mkdir -p "$OUT"

# shellcheck source=benchmarks/phase.sh
source "$(dirname "$0")/phase.sh"

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version(), 'triton', triton.__version__)"
[ -f COMMIT ] && echo "commit $(cat COMMIT)"

case "${1:-}" in
explore)
    phase memcheck 60 python3 tests/attention/triton_checks.py cuda memory
    phase tests 100 python3 -m pytest -q -m gpu -p no:cacheprovider --durations=10 tests/attention \
        -k "se or memory or selection or graph"
    phase breakdown 130 python3 benchmarks/attention_se_breakdown.py --lengths 32768,65536 --sweep
    phase profile 80 bash -c "python3 -m spanlab profile --variants full,se,se-nomem --lengths 32768,65536 \
        --out $OUT/prof --no-plots && python3 -m spanlab profile --mode layer --variants full,se \
        --lengths 32768,65536 --out $OUT/layer --no-plots"
    ;;
final)
    phase tests 170 python3 -m pytest -q -m gpu -p no:cacheprovider --durations=10 tests/attention
    phase profile 170 bash -c "python3 benchmarks/attention_profile.py --out $OUT/prof && \
        python3 benchmarks/attention_profile.py --out $OUT/layer --mode layer --lengths 32768,65536 \
        --variants full,sw,se --no-plots"
    phase breakdown 70 python3 benchmarks/attention_se_breakdown.py --lengths 32768,65536 --sweep
    ;;
*)
    echo "usage: attention_device.sh explore|final" >&2
    exit 2
    ;;
esac
