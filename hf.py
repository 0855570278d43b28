"""
Hugging Face folders: a checkpoint of this repo as flash-linear-attention's GatedDeltaNetForCausalLM, and back.

    python hf.py --out_dir=out                                       # the newest checkpoint in out/ -> out/hf
    python hf.py --to=ours --hf_dir=FOLDER --out_dir=out-imported    # FOLDER -> out-imported/ckpt_0000000.pt

The folder loads with no network: `import fla` (it registers the model with the Auto classes), then
AutoModelForCausalLM.from_pretrained(folder) and AutoTokenizer.from_pretrained(folder). It holds fla's
config.json (this repo's model and run config under "mup_gdn"), model.safetensors, the GPT-2 tokenizer built
from data/gpt2 (a character-level vocabulary has none: its ids are the dataset's meta.json itos), and
mup_gdn.safetensors, which Hugging Face does not read (below).

The fold. fla's model has no multipliers: its kernel scales the readout S q by K^-1/2, its norms share one eps,
and its logits are the final norm's output times the tied embedding. This repo's multipliers go into the
weights so that fla computes the same function, exactly but for float rounding:
- our readout multiplier s (ours over K^-1/2: sqrt(m) under μP) comes before o_norm, an RMSNorm, and
  RMSNorm(s o; ε) = RMSNorm(o; ε/s²): the folder's norm_eps is ε/s²;
- the residual stream's norms get that eps too, and RMSNorm(x/s; ε/s²) = RMSNorm(x; ε): the stream is carried
  divided by s, i.e. the embedding and the branches' output matrices o_proj and down_proj (with the depth
  rule's branch multiplier) times 1/s, and the final norm's gain times s and the logit multiplier.
Without the stream's scale one eps cannot be exact at both: exact at o_norm, it leaves a residual norm's
output off by up to ε (1 - 1/m) / (2 ms) relative, ms its input's mean square (8e-4 at m = 3 for the embedding's
init_std² = 4e-4); exact at the residual norms, it leaves o_norm's off by up to 1 - 1/sqrt(m) (42% at m = 3)
where the readout is near 0, as on a sequence's first tokens.
Folding in fp32 rounds: mup_gdn.safetensors keeps the folded tensors as they were, where dividing does not give
them back, and the import takes them where they still fold to what model.safetensors holds (bit for bit), else
(a folder trained on elsewhere) divides the factors back out.

The import takes any GatedDeltaNetForCausalLM folder in the shapes train.py builds. A folder without "mup_gdn"
becomes an SP model whose base width is its own width (μP from there on carries its values to other widths).
"""
import ast
import gzip
import json
import math
import os
import re
import shutil
import sys
import tempfile

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import fla_mup
import mup
from configurator import ConfigError, apply_config
from model import GDN, GDNConfig, RMSNorm, padded_vocab
from prepare_data import GPT2_EOT, GPT2_FILES, get_tokenizer, replacing
from training import checkpoints, load_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
EPS = RMSNorm(1).eps  # every norm of model.py's model
ORIGINALS = 'mup_gdn.safetensors'
EXPORTED = {'config.json', 'generation_config.json', 'model.safetensors', ORIGINALS, 'vocab.json', 'merges.txt',
            'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'}  # every name an export writes
# what a run that goes on from an imported checkpoint (train.py --init_from=resume) takes from it: its signature
# (with the model's config) and its optimizer's hyper-parameters
RUN_KEYS = ('dataset', 'block_size', 'optimizer', 'weight_decay', 'weight_decay_rule', 'beta1', 'beta2', 'momentum')


OUTSIDE = {'wte.weight': 'model.embeddings.weight', 'norm_f.weight': 'model.norm.weight'}  # outside the blocks


def fla_name(name):
    """This repo's parameter name -> fla's (the conv, one tensor here and three in fla, aside)."""
    if name in OUTSIDE:
        return OUTSIDE[name]
    i, rest = re.fullmatch(r'blocks\.(\d+)\.(.+)', name).groups()
    rest = 'attn_norm.weight' if rest == 'mixer_norm.weight' else re.sub(r'^mixer\.', 'attn.', rest)
    return f'model.layers.{i}.{rest}'


def to_fla(state, c):
    """This repo's state dict -> fla's tensors: names mapped, the conv over concat[q, k, v] ([C, W]) split into
    q_conv1d, k_conv1d, v_conv1d ([c, 1, W] each)."""
    out = {}
    for name, w in state.items():
        if name.endswith('qkv_conv.weight'):
            parts = w.split([c.n_head * c.head_k, c.n_head * c.head_k, c.n_head * c.head_v])
            for x, p in zip('qkv', parts):
                out[fla_name(name).replace('qkv_conv.weight', f'{x}_conv1d.weight')] = p[:, None].contiguous()
        else:
            out[fla_name(name)] = w.contiguous()
    return out


def from_fla(tensors, names, c):
    """fla's tensors -> this repo's state dict with these names, for a model of config c."""
    state = {}
    for name in names:
        if name.endswith('qkv_conv.weight'):
            keys = [fla_name(name).replace('qkv_conv.weight', f'{x}_conv1d.weight') for x in 'qkv']
            state[name] = torch.cat([_get(tensors, k).squeeze(1) for k in keys])
        else:
            state[name] = _get(tensors, fla_name(name))
    return state


def _get(tensors, key):
    if key not in tensors:
        raise ValueError(f"the folder's weights have no {key}: not a GatedDeltaNetForCausalLM of this shape")
    return tensors[key]


def fold_factors(c):
    """(the folder's norm eps, factor(name)): what each parameter of this repo's model is multiplied by in the
    folder (the module docstring's fold)."""
    mult = mup.multipliers(c)
    s = mult['readout'] * math.sqrt(c.head_k)  # fla's readout scale is K^-1/2

    def factor(name):
        if name == 'wte.weight':
            return 1 / s
        if name == 'norm_f.weight':
            return mult['logits'] * s
        if name.endswith(('.o_proj.weight', '.down_proj.weight')):
            return mult['branch'] / s
        return 1.0
    return EPS / s ** 2, factor


def fold(w, f):
    return w if f == 1 else (w.double() * f).float()


def unfold(w, f):
    return w if f == 1 else (w.double() / f).float()


# ---- export ----------------------------------------------------------------------------------------------

def export(checkpoint, folder, data_dir='data'):
    """Write checkpoint (train.py's) as a Hugging Face folder; returns a line on the tokenizer written."""
    args, run = checkpoint['model_args'], checkpoint.get('config', {})
    c = GDNConfig(**args)
    if int(c.head_k * (c.head_v / c.head_k)) != c.head_v:
        raise ValueError(f"head_v={c.head_v} is not head_k={c.head_k} times a ratio fla rebuilds exactly")
    norm_eps, factor = fold_factors(c)
    state = {k: v.detach().float().cpu() for k, v in checkpoint['model'].items()}
    folded = {name: fold(w, factor(name)) for name, w in state.items()}
    originals = {name: w for name, w in state.items() if not torch.equal(unfold(folded[name], factor(name)), w)}
    tokenizer, eot = tokenizer_of(run.get('dataset', ''), data_dir, c.vocab_size)
    config = fla_mup.fla_config(
        c, norm_eps=norm_eps, max_position_embeddings=run.get('block_size', 2048), initializer_range=c.init_std,
        bos_token_id=eot, eos_token_id=eot, pad_token_id=None, architectures=['GatedDeltaNetForCausalLM'],
        mup_gdn=dict(model_args=args, config=run, iter_num=checkpoint.get('iter_num')))
    tmp = folder.rstrip('/') + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    config.save_pretrained(tmp)
    save_file(to_fla(folded, c), os.path.join(tmp, 'model.safetensors'), metadata={'format': 'pt'})
    if originals:
        save_file(originals, os.path.join(tmp, ORIGINALS), metadata={'format': 'pt'})
    if tokenizer == 'gpt2':
        write_gpt2_tokenizer(tmp)
    umask = os.umask(0)
    os.umask(umask)
    for name in os.listdir(tmp):  # safetensors writes its files private: a folder to share reads as the user's others
        os.chmod(os.path.join(tmp, name), 0o666 & ~umask)
    _replace_folder(tmp, folder)
    if tokenizer == 'gpt2':
        return "the GPT-2 tokenizer"
    return ("no tokenizer: a character-level vocabulary has no Hugging Face tokenizer here (its ids are the "
            "dataset's meta.json itos)" if tokenizer == 'char' else
            f"no tokenizer: dataset {run.get('dataset')!r} is not prepared in {data_dir} to say which it is")


def tokenizer_of(dataset, data_dir, vocab_size):
    """('gpt2' | 'char' | None, its end-of-text id) of a checkpoint's dataset; an unprepared dataset whose
    vocabulary is GPT-2's padded is taken for GPT-2."""
    try:
        tok = get_tokenizer(dataset, data_dir)
    except ValueError:
        return ('gpt2', GPT2_EOT) if vocab_size == padded_vocab(GPT2_EOT + 1) else (None, None)
    return ('gpt2' if getattr(tok, 'name', '') == 'gpt2' else 'char'), tok.eot_token


def write_gpt2_tokenizer(folder):
    """The GPT-2 tokenizer from the repo's data/gpt2 tables (never downloaded), saved as transformers does."""
    from transformers import GPT2TokenizerFast
    with tempfile.TemporaryDirectory() as tmp:
        for src, dst in (('encoder.json.gz', 'vocab.json'), ('vocab.bpe.gz', 'merges.txt')):
            with gzip.open(os.path.join(GPT2_FILES, src), 'rb') as f, open(os.path.join(tmp, dst), 'wb') as g:
                shutil.copyfileobj(f, g)
        GPT2TokenizerFast.from_pretrained(tmp).save_pretrained(folder)


def _replace_folder(tmp, folder):
    """Put the finished folder tmp at folder: an old export there goes only once the new one is complete."""
    old = folder.rstrip('/') + '.old'
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(folder):
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


# ---- import ----------------------------------------------------------------------------------------------

def import_folder(folder, run_overrides=None):
    """A GatedDeltaNetForCausalLM folder -> (checkpoint as train.py writes it, a line on the weights). The run
    config: train.py's defaults, then the exported run's, then run_overrides."""
    config = read_config(folder)
    ours = config.get('mup_gdn')
    args = ours['model_args'] if ours else foreign_model_args(config)
    c = GDNConfig(**args)
    tensors = read_weights(folder)
    model = GDN(c)
    norm_eps, factor = fold_factors(c)
    if ours and not math.isclose(config['norm_eps'], norm_eps, rel_tol=1e-9):
        raise ValueError(f"norm_eps {config['norm_eps']:g} in {folder}/config.json is not the {norm_eps:g} its "
                         f"model config folds to: the folder was changed after the export")
    state = {name: w.float() for name, w in from_fla(tensors, model.state_dict(), c).items()}
    path = os.path.join(folder, ORIGINALS)
    originals = load_file(path) if ours and os.path.exists(path) else {}
    restored = 0
    for name, w in state.items():
        o = originals.get(name)
        if o is not None and o.shape == w.shape and torch.equal(fold(o, factor(name)), w):
            state[name], restored = o, restored + 1
        else:
            state[name] = unfold(w, factor(name))
    model.load_state_dict(state)
    run = {k: v for k, v in train_defaults().items() if isinstance(v, (int, float, bool, str))}
    run.update(ours.get('config', {}) if ours else {})
    run.update(run_overrides or {})
    device_type = 'cuda' if torch.cuda.is_available() else 'cpu'  # AdamW's fused flag, as train.py sets it here
    optim = model.configure_optimizer(run['optimizer'], run['learning_rate'], run['weight_decay'],
                                      (run['beta1'], run['beta2']), run['momentum'], device_type,
                                      run['weight_decay_rule'])
    signature = dict(args, dataset=run['dataset'], optimizer=run['optimizer'], block_size=run['block_size'])
    checkpoint = dict(model=model.state_dict(), optimizer=optim.state_dict(), model_args=args, iter_num=0,
                      best_val_loss=float('inf'), config=run, signature=signature)
    folded = sum(factor(name) != 1 for name in state)
    how = (f"{restored} of the {folded} folded tensors restored bit for bit from {ORIGINALS}, the rest divided back"
           if originals else f"the {folded} folded tensors divided back" if ours else
           "an SP model from a folder trained elsewhere (no mup_gdn in its config.json)")
    return checkpoint, how


def read_config(folder):
    path = os.path.join(folder, 'config.json')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder} holds no config.json: not a Hugging Face model folder")
    try:
        with open(path) as f:
            config = json.load(f)
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): export the folder again") from None
    if config.get('model_type') != 'gated_deltanet':
        raise ValueError(f"{path} is a {config.get('model_type')!r} model, not fla's GatedDeltaNetForCausalLM "
                         "('gated_deltanet')")
    return config


def read_weights(folder):
    """model.safetensors, or the shards its index names."""
    index = os.path.join(folder, 'model.safetensors.index.json')
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)['weight_map'].values()))
    elif os.path.exists(os.path.join(folder, 'model.safetensors')):
        files = ['model.safetensors']
    else:
        raise FileNotFoundError(f"{folder} holds no model.safetensors (nor its index): save the model with "
                                "safetensors (save_pretrained's default)")
    tensors = {}
    for name in files:
        tensors.update(load_file(os.path.join(folder, name)))
    return tensors


def foreign_model_args(config):
    """train.py's model_args for a folder trained elsewhere, or ValueError naming what train.py cannot build."""
    get = config.get
    width, head_k = get('hidden_size'), get('head_dim')
    head_v = int(head_k * get('expand_v', 2.0))
    mlp = GDNConfig(width=width, head_k=head_k, head_v=head_v).mlp_hidden
    why = [what for bad, what in [
        (not get('tie_word_embeddings', False), "an untied lm_head (tie_word_embeddings=false)"),
        (get('num_v_heads') not in (None, get('num_heads')), f"num_v_heads={get('num_v_heads')} != num_heads"),
        (not get('use_gate', True), "no output gate (use_gate=false)"),
        (get('output_gate_activation', 'swish') not in ('swish', 'silu'),
         f"output_gate_activation={get('output_gate_activation')}"),
        (not get('use_short_conv', True), "no short convolution (use_short_conv=false)"),
        (get('conv_size', 4) != GDNConfig.conv_size,
         f"conv_size={get('conv_size')} (train.py builds {GDNConfig.conv_size})"),
        (get('allow_neg_eigval', False), "negative eigenvalues (allow_neg_eigval=true)"),
        (get('attn') is not None, "hybrid attention layers (attn)"),
        (get('attnres_block_size') is not None, "attention residuals (attnres_block_size)"),
        (get('hidden_act', 'swish') != 'swish', f"hidden_act={get('hidden_act')}"),
        (get('intermediate_size') != mlp, f"intermediate_size={get('intermediate_size')} (this width's MLP is {mlp})"),
        (get('norm_eps') != EPS, f"norm_eps={get('norm_eps')} (this model's norms use {EPS})"),
    ] if bad]
    if why:
        raise ValueError("this folder's model is not one train.py builds: " + '; '.join(why))
    return dict(vocab_size=get('vocab_size'), width=width, n_layer=get('num_hidden_layers'), n_head=get('num_heads'),
                head_k=0 if head_k == width // 8 else head_k, head_v=0 if head_v == width // 4 else head_v,
                parametrization='sp', base_width=width, depth_rule='none', base_depth=get('num_hidden_layers'),
                output_mult=1.0, init_std=get('initializer_range', 0.02), embed_lr_mult=1.0, gate_lr_mult=1.0)


def train_defaults():
    """train.py's keys with the values a run of it starts from: its globals (test_train checks that they hold
    config/tuned_gutenberg.py's values)."""
    with open(os.path.join(HERE, 'train.py')) as f:
        tree = ast.parse(f.read())
    config = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                config.setdefault(node.targets[0].id, ast.literal_eval(node.value))
            except ValueError:
                pass  # computed, not a default
    return config


def resume_command(checkpoint, out_dir):
    """The train.py command that goes on training from an imported checkpoint."""
    keys = {**checkpoint['model_args'], **{k: checkpoint['config'][k] for k in RUN_KEYS}}
    keys.pop('vocab_size')  # the dataset's
    return f"python train.py --init_from=resume --out_dir={out_dir} " + ' '.join(f'--{k}={v}' for k, v in keys.items())


def main(argv=None):
    defaults = train_defaults()
    cfg = dict(
        to='hf',          # 'hf': the newest checkpoint in out_dir -> hf_dir; 'ours': hf_dir -> a checkpoint in out_dir
        out_dir='out',    # this repo's checkpoints: read (to=hf) or written (to=ours; an empty or new folder)
        hf_dir='',        # the Hugging Face folder: written (to=hf; '' = out_dir/hf) or read (to=ours)
        data_dir='data',  # the checkpoint's dataset, for its tokenizer (to=hf)
        # to=ours: train.py's keys that a run going on from the checkpoint takes from it (default: the exported
        # run's, else train.py's own)
        **{k: defaults[k] for k in RUN_KEYS})
    try:
        assigned = apply_config(sys.argv[1:] if argv is None else argv, cfg)
        if cfg['to'] not in ('hf', 'ours'):
            raise ConfigError(f"to={cfg['to']!r}: use 'hf' (export a checkpoint) or 'ours' (import a folder)")
        if cfg['to'] == 'hf':
            hf_dir = cfg['hf_dir'] or os.path.join(cfg['out_dir'], 'hf')
            if os.path.isdir(hf_dir) and os.listdir(hf_dir) and 'mup_gdn' not in _config_or_empty(hf_dir):
                raise ConfigError(f"hf_dir={hf_dir} holds files that no export wrote: choose another folder")
            if os.path.isdir(hf_dir) and (extra := sorted(set(os.listdir(hf_dir)) - EXPORTED)):
                raise ConfigError(f"hf_dir={hf_dir} holds files an export does not write ({', '.join(extra[:3])}), "
                                  "which a new export would remove: move them, or choose another folder")
            path, checkpoint = load_checkpoint(cfg['out_dir'])
            what = export(checkpoint, hf_dir, cfg['data_dir'])
            print(f"wrote {hf_dir} from {path} (iter {checkpoint.get('iter_num')}), with {what}. Load it with\n"
                  f"  import fla; from transformers import AutoModelForCausalLM\n"
                  f"  model = AutoModelForCausalLM.from_pretrained({hf_dir!r})")
        else:
            if not cfg['hf_dir']:
                raise ConfigError("to=ours needs --hf_dir=FOLDER, the GatedDeltaNetForCausalLM folder to import")
            out = cfg['out_dir']
            if checkpoints(out):
                raise ConfigError(f"out_dir={out} holds checkpoints already: import into an empty or new folder")
            try:
                checkpoint, how = import_folder(cfg['hf_dir'], {k: cfg[k] for k in assigned if k in RUN_KEYS})
            except (SafetensorError, RuntimeError, KeyError) as e:  # weights cut short, or of another shape
                raise ValueError(f"{cfg['hf_dir']} does not load ({type(e).__name__}: "
                                 f"{' '.join(str(e).split())[:160]}): export it again") from None
            os.makedirs(out, exist_ok=True)
            path = os.path.join(out, 'ckpt_0000000.pt')
            with replacing(path) as tmp:
                torch.save(checkpoint, tmp)
            print(f"wrote {path} from {cfg['hf_dir']}: {how}. Sample or train on with\n"
                  f"  python sample.py --out_dir={out}\n  {resume_command(checkpoint, out)}")
    except (ConfigError, OSError, ValueError) as e:  # OSError: a folder it cannot read or write
        sys.exit(f"error: {e}")


def _config_or_empty(folder):
    try:
        with open(os.path.join(folder, 'config.json')) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


if __name__ == '__main__':
    main()
