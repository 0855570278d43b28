"""The fastest settings of the normalised heads' conv launches in a gpu_check_conv.py log, as bench.py's
--conv_cfg (norm.fwd.BT=16,norm.bwd.NT=2,...): the model step timed with the op-level sweep's best.
    python tools/best_conv_cfg.py check_conv.log ["w768 model"]"""
import ast
import re
import sys

text, shape = open(sys.argv[1]).read(), (sys.argv[2:] or ["w768 model"])[0]
out = []
for part in ("norm fwd", "norm bwd"):
    m = re.search(rf"best {part} at {shape}: (\{{.*?\}})", text)
    if m:
        out += [f"{part.replace(' ', '.')}.{k}={v}" for k, v in ast.literal_eval(m.group(1)).items()]
print(",".join(out))
