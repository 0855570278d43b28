"""
The grid of a sweep and its results CSV: the grid spec, the runs a config expands into, the CSV's columns,
a run's key, the run settings kept beside a CSV, and reading rows back.

Learning-rate lists are log2 exponents: '-12:-5' is 2^-12, 2^-11, ..., 2^-5; '-12:-5:0.5' adds half steps;
'-12,-9,-6' lists them. Every other grid key takes a comma list, and each list is an axis: widths, n_layer,
depth_rule, seeds, the base hyper-parameters (output_mult, init_std, embed_lr_mult, gate_lr_mult),
weight_decay and weight_decay_rule.

A row stands for one run's own labels. Labels that are one model with one set of LRs and decays are trained
once: μP variants at the base width are SP, depth rules at the base depth are 'none', and a weight-decay rule
is 'paper' with the λ it amounts to (under μP-AdamW at width 4x base, λ under 'fixed_timescale' is the run 4λ
under 'paper'). Each such label still gets its own row, and its `trained_as` column names what the trained
run had instead ('' when the row is the run trained).
"""
import csv
import fcntl
import math
import os
import types

import mup
from prepare_data import replacing

HPARAMS = list(mup.BASE_HPARAMS)
AXES = ['width', 'n_layer', 'depth_rule', 'lr', 'parametrization', 'optimizer', 'seed', 'steps', *HPARAMS,
        'weight_decay', 'weight_decay_rule']
RESULTS = ['tokens', 'final_train_loss', 'final_val_loss', 'diverged', 'grad_norm_median', 'clip_frac',
           'val_curve', 'seconds']
CSV_COLUMNS = AXES + ['trained_as'] + RESULTS
# the labels a trained run may hold differently from a row it stands for
TRAINED_AS = ('parametrization', 'depth_rule', 'weight_decay_rule', 'weight_decay')
# what must agree between a results CSV and the settings that extend it (the CSV rows carry the rest)
MODELS = ('gdn', 'fla')  # the model families a sweep trains (study/run.py's build_model)
RUN_KEYS = ['model', 'dataset', 'n_head', 'base_width', 'base_depth', 'batch_size', 'block_size',
            'gradient_accumulation_steps', 'warmup_iters', 'min_lr', 'beta1', 'beta2', 'momentum', 'grad_clip',
            'eval_iters', 'diverge_factor']


def parse_exponents(spec):
    """'-12:-5' -> [-12, ..., -5]; '-12:-5:0.5' -> half steps; '-12,-9' -> a list."""
    spec = str(spec).strip()
    if ':' in spec:
        parts = [float(p) for p in spec.split(':')]
        lo, hi, step = parts[0], parts[1], parts[2] if len(parts) > 2 else 1.0
        n = int(round((hi - lo) / step))
        return [lo + i * step for i in range(n + 1)]
    return [float(p) for p in spec.split(',') if p.strip()]


def csv_list(spec, cast=str):
    return [cast(s.strip()) for s in str(spec).split(',') if s.strip()]


def check_grid(cfg):
    """Every grid value valid, or one line that says which is not."""
    def bad(msg):
        raise SystemExit(f"error: {msg}")
    if cfg['model'] not in MODELS:
        bad(f"model={cfg['model']!r}: 'gdn' (model.py's) or 'fla' (flash-linear-attention's, fla_mup.FlaLM)")
    for key in ('widths', 'n_layer', 'seeds'):
        try:
            vals = csv_list(cfg[key], int)
        except ValueError:
            bad(f"{key}={cfg[key]!r}: a comma list of whole numbers")
        if not vals or (key != 'seeds' and min(vals) <= 0):
            bad(f"{key}={cfg[key]!r}: positive whole numbers")
    for key in ('adamw_lrs', 'sgd_lrs'):
        try:
            parse_exponents(cfg[key])
        except ValueError:
            bad(f"{key}={cfg[key]!r}: log2 exponents, e.g. '-12:-5', '-12:-5:0.5' or '-12,-9'")
    for opt in csv_list(cfg['optimizers']):
        if opt not in mup.OPTIMIZERS:
            bad(f"optimizers: {opt!r} is not 'adamw' or 'sgd'")
        for p in csv_list(cfg[f'{opt}_params']):
            if p not in mup.PARAMETRIZATIONS:
                bad(f"{opt}_params: {p!r} is not one of {', '.join(mup.PARAMETRIZATIONS)}")
    for key, names in (('depth_rule', mup.DEPTH_ALPHA), ('weight_decay_rule', mup.WEIGHT_DECAY_RULES)):
        for v in csv_list(cfg[key]):
            if v not in names:
                bad(f"{key}: {v!r} is not one of {', '.join(names)}")
    for key in HPARAMS + ['weight_decay']:
        try:
            csv_list(cfg[key], float)
        except ValueError:
            bad(f"{key}={cfg[key]!r}: a comma list of numbers")
    for key in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'eval_iters', 'check_interval'):
        if cfg[key] <= 0:
            bad(f"{key}={cfg[key]}: must be a positive whole number")
    if cfg['at_step'] < 0:
        bad(f"at_step={cfg['at_step']}: a step the runs recorded their val loss at (0: the final one)")
    if cfg['axis'] not in ('lr', 'width', 'n_layer', *HPARAMS, 'weight_decay'):
        bad(f"axis={cfg['axis']!r}: use 'lr', 'n_layer', 'weight_decay' or one of {', '.join(HPARAMS)}")


def rule_free(r):
    """Under SP and under SGD every weight-decay rule is λ itself: such a run is labelled 'paper' alone."""
    return r['optimizer'] == 'sgd' or r['parametrization'] == 'sp'


def trained_run(r, base_width, base_depth):
    """The run that trains the same model with the same LRs and decay as run r (the one the sweep trains for
    r): μP variants are SP at the base width, depth rules nothing at the base depth, and a weight-decay rule is
    'paper' with the decay it amounts to (SGD runs take none)."""
    t = dict(r)
    if t['width'] == base_width:
        t['parametrization'] = 'sp'
    if t['n_layer'] == base_depth:
        t['depth_rule'] = 'none'
    f = 1.0 if t['optimizer'] == 'sgd' else decay_factor(t, base_width, base_depth, t['weight_decay_rule'])
    if f is not None:
        t['weight_decay'], t['weight_decay_rule'] = float(f"{t['weight_decay'] * f:.12g}"), 'paper'
    return t


def decay_factor(r, base_width, base_depth, rule):
    """What `rule` multiplies run r's decay coefficients by, relative to 'paper', where that is one number for
    every decayed group (the hidden and gate matrices, all inside the blocks, share their LR rule under AdamW);
    else None. Then λ under `rule` is the run λ·factor under 'paper': the rules are one grid of λ, relabelled."""
    c = types.SimpleNamespace(width=r['width'], base_width=base_width, n_layer=r['n_layer'], base_depth=base_depth,
                              parametrization=r['parametrization'], depth_rule=r['depth_rule'])
    f = {mup.decay(c, r['optimizer'], g, True, 1.0, rule) for g, on in mup.DECAY.items() if on}
    return f.pop() if len(f) == 1 else None


def grid(cfg, steps=None):
    """Every run of the sweep as a dict of its labels, the most expensive (widest, deepest) first so the
    workers finish together. steps: the run length (cfg['max_iters'], or one epoch where it is 0)."""
    check_grid(cfg)
    steps = steps or cfg['max_iters']
    runs, seen = [], set()
    values = {h: csv_list(cfg[h], float) for h in HPARAMS}
    for width in sorted(csv_list(cfg['widths'], int), reverse=True):
        for n_layer in sorted(csv_list(cfg['n_layer'], int), reverse=True):
            for opt in csv_list(cfg['optimizers']):
                lrs = [2.0 ** e for e in parse_exponents(cfg[f'{opt}_lrs'])]
                if opt == 'adamw' and cfg['learning_rate'] > 0 and not any(
                        math.isclose(cfg['learning_rate'], lr) for lr in lrs):
                    lrs.append(cfg['learning_rate'])
                decays = csv_list(cfg['weight_decay'], float) if opt == 'adamw' else [0.0]
                for param in csv_list(cfg[f'{opt}_params']):
                    for rule in csv_list(cfg['depth_rule']):
                        for wd_rule in csv_list(cfg['weight_decay_rule']):
                            for lr in lrs:
                                for hp in combinations(values):
                                    for wd in decays:
                                        for seed in csv_list(cfg['seeds'], int):
                                            r = dict(width=width, n_layer=n_layer, depth_rule=rule, lr=lr,
                                                     parametrization=param, optimizer=opt, seed=seed,
                                                     steps=steps, **hp, weight_decay=wd,
                                                     weight_decay_rule=wd_rule)
                                            if rule_free(r):
                                                r['weight_decay_rule'] = 'paper'
                                            if run_key(r) not in seen:
                                                seen.add(run_key(r))
                                                runs.append(r)
    return runs


def combinations(values):
    combos = [{}]
    for h in HPARAMS:
        combos = [dict(c, **{h: v}) for c in combos for v in values[h]]
    return combos


def run_key(r):
    """A run's identity: its labels, with numbers rounded so a CSV's text and a fresh grid compare equal."""
    def num(k):
        return round(float(r[k]), 9)
    return (int(r['width']), int(r['n_layer']), r['depth_rule'], round(math.log2(float(r['lr'])), 6),
            r['parametrization'], r['optimizer'], int(r['seed']), int(r['steps']), *(num(h) for h in HPARAMS),
            num('weight_decay'), r['weight_decay_rule'])


def trained_as(r, t):
    """The `trained_as` of row r trained as run t: 'key=value' for each label t has otherwise ('' for r itself)."""
    def differ(k):
        return abs(float(r[k]) - float(t[k])) > 1e-9 if k == 'weight_decay' else r[k] != t[k]
    return ' '.join(f"{k}={t[k]}" for k in TRAINED_AS if differ(k))


def trained_key(row):
    """run_key of the run that trained a CSV row: its labels with its trained_as in place."""
    return run_key(dict(row, **dict(kv.split('=', 1) for kv in row['trained_as'].split())))


def describe(r):
    """A run in one line: its shape, parametrization, optimizer, LR and every label off its default."""
    hp = ''.join(f" {h} {float(r[h]):g}" for h in HPARAMS if float(r[h]) != mup.BASE_HPARAMS[h])
    depth = f" {r['depth_rule']}" if r['depth_rule'] != 'none' else ''
    rule = f" {r['weight_decay_rule']}" if r['weight_decay_rule'] != 'paper' else ''
    wd = f" wd {float(r['weight_decay']):g}{rule}"
    return (f"width {r['width']} x {r['n_layer']} {r['parametrization']}{depth} {r['optimizer']} "
            f"lr 2^{math.log2(float(r['lr'])):g}{hp}{wd} seed {r['seed']}")


# ------------------------------------------------------------------------------------------------
# the CSV and the run settings beside it

def config_path(out):
    return os.path.splitext(out)[0] + '_config.csv'


def read_settings(out):
    """{key: value} of the run settings kept beside a results CSV (its _config.csv); {} if it has none."""
    if not os.path.exists(config_path(out)):
        return {}
    with open(config_path(out), newline='') as f:
        return {r['key']: r['value'] for r in csv.DictReader(f)}


def run_settings(cfg):
    """The settings a results CSV was made with (its _config.csv), else cfg's."""
    return {**{k: str(cfg[k]) for k in RUN_KEYS}, **read_settings(cfg['out'])}


def check_run_config(cfg):
    """The CSV's rows only make sense together if they share these settings: keep them beside it."""
    path = config_path(cfg['out'])
    want = {k: str(cfg[k]) for k in RUN_KEYS}
    if os.path.exists(path) and read_rows(cfg['out']):
        have = read_settings(cfg['out'])
        differ = [f"{k}: {have.get(k)!r} there, {want[k]!r} now" for k in RUN_KEYS if have.get(k) != want[k]]
        if differ:
            raise SystemExit(f"error: {cfg['out']} was made with other settings ({path}):\n  "
                             + "\n  ".join(differ) + "\nuse those settings or another --out")
    try:  # the sweep's first write: a folder it cannot write stops it here, before any run
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with replacing(path) as tmp, open(tmp, 'w', newline='') as f:
            csv.writer(f).writerows([('key', 'value'), *want.items()])
    except OSError as e:
        raise SystemExit(f"error: cannot write {path} ({e.strerror}): use an --out in a folder this user can write")


def read_rows(out):
    """The CSV's finished rows as text (a torn last line is skipped)."""
    if not os.path.exists(out):
        return []
    with open(out, newline='') as f:
        reader = csv.DictReader(f)
        if reader.fieldnames and reader.fieldnames != CSV_COLUMNS:
            raise SystemExit(f"error: {out} has the columns {','.join(reader.fieldnames)}; a results CSV has "
                             f"{','.join(CSV_COLUMNS)}: use another --out")
        # a row is finished when every column is there (a torn line from a full disk is trained again)
        return [r for r in reader if None not in r and None not in r.values() and r['diverged'] in ('True', 'False')]


def load_results(out, at_step=0):
    """The CSV's rows, typed; with at_step, the val loss is the one recorded at that step (rows without one go)."""
    rows = []
    for r in read_rows(out):
        if at_step:
            at = dict(p.split(':') for p in r['val_curve'].split(';') if p).get(str(at_step))
            if at is None:
                continue
            r = dict(r, final_val_loss=at, diverged=str(not math.isfinite(float(at))))
        rows.append(dict(width=int(r['width']), n_layer=int(r['n_layer']), depth_rule=r['depth_rule'],
                         lr=float(r['lr']), parametrization=r['parametrization'], optimizer=r['optimizer'],
                         seed=int(r['seed']), steps=int(r['steps']), weight_decay=float(r['weight_decay']),
                         weight_decay_rule=r['weight_decay_rule'], trained_as=r['trained_as'],
                         val=float(r['final_val_loss']), train=float(r['final_train_loss']),
                         diverged=r['diverged'] == 'True', **{h: float(r[h]) for h in HPARAMS},
                         grad_norm=float(r['grad_norm_median'] or 'nan'), clip_frac=float(r['clip_frac'] or 'nan'),
                         curve=r['val_curve']))
    return rows


class ResultWriter:
    """Appends rows to a results CSV, each flushed to disk at once: a kill loses no finished row."""

    def __init__(self, out):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        self.f = open(out, 'a', newline='')
        try:  # one writer a CSV, however many sweeps start (the lock goes with the process, however it ends)
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.f.close()
            raise SystemExit(f"error: another sweep is writing {out}: wait for it to end, or use another --out")
        self.w = csv.DictWriter(self.f, CSV_COLUMNS)
        if os.path.getsize(out) == 0:
            self.w.writeheader()
        else:
            read_rows(out)  # the columns checked
            with open(out, 'rb') as f:  # a torn last line (killed mid-write) would glue onto the next row
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b'\n':
                    self.f.write('\n')
        self.f.flush()

    def write(self, row):
        def fmt(k, v):
            return f"{v:.5f}" if isinstance(v, float) and (k.startswith('final') or k in ('grad_norm_median', 'clip_frac')) else v
        self.w.writerow({k: fmt(k, row[k]) for k in CSV_COLUMNS})
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        self.f.close()


# ------------------------------------------------------------------------------------------------
# which rows a summary and a figure hold

def select(rows, cfg, assigned=None):
    """The rows to summarise and draw. After a sweep (assigned=None): the grid cfg describes. For --plot,
    only the keys the command line or config file set filter (assigned); otherwise a CSV is drawn whole, at
    its most common run length."""
    def given(k):
        return assigned is None or k in assigned
    steps = [r['steps'] for r in rows]
    length = cfg['max_iters'] if given('max_iters') and cfg['max_iters'] else max(set(steps), key=steps.count, default=0)
    keep = {k: csv_list(cfg[k], float) for k in HPARAMS + ['weight_decay']}
    lists = {'width': csv_list(cfg['widths'], int), 'n_layer': csv_list(cfg['n_layer'], int),
             'seed': csv_list(cfg['seeds'], int), 'depth_rule': csv_list(cfg['depth_rule']),
             'weight_decay_rule': csv_list(cfg['weight_decay_rule']), 'optimizer': csv_list(cfg['optimizers'])}
    keys = {'width': 'widths', 'seed': 'seeds', 'optimizer': 'optimizers'}

    def ok(r):
        if r['steps'] != length:
            return False
        if given(f"{r['optimizer']}_params") and r['parametrization'] not in csv_list(cfg[f"{r['optimizer']}_params"]):
            return False
        if r['optimizer'] == 'adamw' and 'weight_decay' != cfg['axis'] and given('weight_decay') and \
                not any(math.isclose(r['weight_decay'], v) for v in keep['weight_decay']):
            return False
        if any(k != cfg['axis'] and given(keys.get(k, k)) and r[k] not in v
               and not (k == 'weight_decay_rule' and rule_free(r)) for k, v in lists.items()):
            return False
        return all(h == cfg['axis'] or not given(h) or any(math.isclose(r[h], v) for v in keep[h]) for h in HPARAMS)
    return [r for r in rows if ok(r)]
