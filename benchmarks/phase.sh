# Sourced by the device scripts (gpu_session.sh, attention_device.sh): `phase NAME LIMIT_S CMD...`
# runs CMD under its own time limit, so that a slow phase cannot take the others' output with it,
# and tees its log to $OUT/NAME.txt.
phase() {
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit} s)"
    local t0=$SECONDS
    timeout "$limit" "$@" > >(tee "$OUT/$name.txt") 2>&1
    echo "=== $name: exit ${?} after $((SECONDS - t0)) s"
}
