"""
Sample from a trained model, carrying the recurrent state token by token: the prompt is read once,
then each new token costs one step of every layer (constant memory, no re-reading of the prefix).

    python sample.py                                  # from the main job's out/
    python sample.py --out_dir=out-demo --start="ROMEO:" --num_samples=2 --max_new_tokens=300
"""
import torch

from configurator import configure
from model import GDN, GDNConfig
from prepare_data import get_tokenizer
from training import device_setup, load_checkpoint

out_dir = 'out'              # where train.py wrote its checkpoints (the newest that loads is used)
data_dir = 'data'            # for the tokenizer of the checkpoint's dataset
start = '\n'                 # the prompt, or FILE:path to read it from a file
num_samples = 3              # samples to draw
max_new_tokens = 300         # tokens a sample
temperature = 0.8            # < 1 sharper, > 1 more random
top_k = 200                  # sample from the top_k most likely tokens; 0 = from the whole vocabulary
seed = 1337                  # the sampling's random seed
device = ''                  # '' = cuda if available, else cpu
configure(globals())
if num_samples < 0 or max_new_tokens < 0 or top_k < 0 or temperature < 0:
    raise SystemExit("error: num_samples, max_new_tokens, top_k and temperature must be >= 0")

try:
    device = device_setup(device).device
    path, checkpoint = load_checkpoint(out_dir, device)
except ValueError as e:
    raise SystemExit(f"error: {e}")
except FileNotFoundError:
    raise SystemExit(f"error: no readable ckpt_*.pt in {out_dir}: train first (python train.py --out_dir={out_dir}), "
                     "or name the folder a run wrote with --out_dir") from None
torch.manual_seed(seed)
model = GDN(GDNConfig(**checkpoint['model_args']))
model.load_state_dict(checkpoint['model'])
model.eval().to(device)
try:
    tok = get_tokenizer(checkpoint['config']['dataset'], data_dir)
except ValueError:
    raise SystemExit(f"error: the checkpoint's dataset {checkpoint['config']['dataset']!r} is not prepared in "
                     f"{data_dir}, and its tokenizer lives there: prepare it (prepare_data.py) or give --data_dir") from None

if start.startswith('FILE:'):
    try:
        with open(start[5:], encoding='utf-8') as f:
            start = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"error: cannot read the prompt file {start[5:]!r}: {e}") from None
try:
    ids = tok.encode(start)
except ValueError as e:  # a character outside a character-level vocabulary
    raise SystemExit(f"error: the prompt does not encode: {e}") from None
if not ids:
    raise SystemExit("error: the prompt encodes to no tokens: give --start with some text")
x = torch.tensor(ids, dtype=torch.long, device=device)[None]
print(f"{path} (iter {checkpoint['iter_num']}), {model.config.parametrization}, width {model.config.width}")
for _ in range(num_samples):
    y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k or None)
    print(tok.decode(y[0].tolist()))
    print('---------------')
