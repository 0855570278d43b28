#!/usr/bin/env bash
# A kernel.py change on the GPU before it lands, in one device call: for the tree as it is and for each
# patch (applied to a copy under /tmp, never to the working tree), bench.py --check --all_k (every K, three
# decay regimes, against float64) and --sweep's timing of the default at the given shapes (each timed
# config is checked first). Each step has its own deadline and log under OUTDIR.
#   bash tools/gpu_patch_ab.sh OUTDIR SHAPES PATCH ...
#   bash tools/gpu_patch_ab.sh $OUT 2,6,4 assets/logs/run12_local_vloop.patch assets/logs/run12_local_vloop_static.patch
# (SHAPES: indices into bench.py's table, as --shapes takes them.)
set -uo pipefail
out=$1; shapes=$2; shift 2
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
root=$PWD
for p in base "$@"; do
    name=$(basename "$p" .patch)
    dir=/tmp/ab_$name
    rm -rf "$dir" && mkdir -p "$dir" && cp -r ./*.py tests "$dir"/
    if [ "$p" != base ] && ! (cd "$dir" && patch -s -p1 < "$root/$p"); then
        echo "$name: the patch does not apply"; continue
    fi
    (cd "$dir" && timeout "${CHECK_SECS:-150}" python3 bench.py --check --all_k --no-table) > "$out/check_$name.log" 2>&1
    echo "$name: $(tail -1 "$out/check_$name.log")"; grep FAIL "$out/check_$name.log" | grep -v "^check:"
    # --sweep_only=none: no variant's name starts with 'none', so only the default is timed
    (cd "$dir" && timeout "${TIME_SECS:-90}" python3 bench.py --sweep --no-table --shapes="$shapes" \
        --sweep_only=none) > "$out/time_$name.log" 2>&1
    grep "^sweep" "$out/time_$name.log" | sed "s/^sweep/$name/"
done
