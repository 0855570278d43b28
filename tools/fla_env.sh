# Sourced by the GPU scripts: fla from the wheels in .whl (no network on the device machine) into
# /tmp/site, its path in FLA_PATH (PYTHONPATH=$FLA_PATH for the commands that import it), and fla's earlier
# autotunings from .carry/triton_autotune in Triton's cache, so they are not tuned again (minutes).
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl > /dev/null 2>&1 && export FLA_PATH=/tmp/site
fi
# TRITON_CACHE_DIR may be set to a folder of the working tree (out_triton_cache: ignored), which the next
# call on the same machine finds again (the device tool keeps ignored outputs between its calls)
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton_cache}
mkdir -p $TRITON_CACHE_DIR
[ -d .carry/triton_autotune ] && cp -r .carry/triton_autotune/. $TRITON_CACHE_DIR/
