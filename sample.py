"""
Sample from a trained model, carrying the recurrent state token by token: the prompt is read once,
then each new token costs one step of every layer (constant memory, no re-reading of the prefix).

    python sample.py --out_dir=out-demo --start="ROMEO:" --num_samples=2 --max_new_tokens=300
"""
import glob
import os

import torch

from model import GDN, GDNConfig
from prepare_data import get_tokenizer

out_dir = 'out'              # where train.py wrote its checkpoints (the newest is used)
data_dir = 'data'            # for the tokenizer of the checkpoint's dataset
start = '\n'                 # the prompt, or FILE:path to read it from a file
num_samples = 3
max_new_tokens = 300
temperature = 0.8            # < 1 sharper, > 1 more random
top_k = 200                  # 0 = sample from the whole vocabulary
seed = 1337
device = ''                  # '' = cuda if available, else cpu
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())

device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
torch.manual_seed(seed)
ckpts = sorted(glob.glob(os.path.join(out_dir, 'ckpt_*.pt')))
if not ckpts:
    raise SystemExit(f"no ckpt_*.pt in {out_dir}: train first (python train.py --out_dir={out_dir})")
checkpoint = torch.load(ckpts[-1], map_location=device, weights_only=False)
model = GDN(GDNConfig(**checkpoint['model_args']))
model.load_state_dict(checkpoint['model'])
model.eval().to(device)
tok = get_tokenizer(checkpoint['config']['dataset'], data_dir)

if start.startswith('FILE:'):
    with open(start[5:], encoding='utf-8') as f:
        start = f.read()
ids = tok.encode(start)
if not ids:
    raise SystemExit("the prompt encodes to no tokens: give --start with some text")
x = torch.tensor(ids, dtype=torch.long, device=device)[None]
print(f"{ckpts[-1]} (iter {checkpoint['iter_num']}), {model.config.parametrization}, width {model.config.width}")
for _ in range(num_samples):
    y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k or None)
    print(tok.decode(y[0].tolist()))
    print('---------------')
