"""
μTransfer, step 1: tune the base values at the base width, one key at a time with the LR, and write them as a
config file that train.py and the sweep take at any width (μP carries them unchanged).

    python -m study.tune config/tune_base.py --tuned_out=config/tuned_gutenberg.py   # resumable
    python -m study.tune --help                                                       # every key

For each key of `tune`, in order: sweep the LR x that key's candidates (the sweep's keys and CSV, study/sweep.py),
the keys not yet tuned at the middle of their lists, and keep the candidate whose fitted optimum has the
lowest loss. The file it writes records the command, the CSV, each key's fits and a note where the best value
is at its list's edge.
"""
import math
import os
import sys

from study.grid import HPARAMS, csv_list, load_results, select
from prepare_data import atomic_write
from study.optima import cells, others, panel_optima
from study.sweep import DEFAULTS as SWEEP_DEFAULTS
from study.sweep import sweep

DEFAULTS = dict(
    SWEEP_DEFAULTS,
    tune='output_mult,init_std,weight_decay',  # comma list: the base values to tune, in this order, each with the LR
    tuned_out='',                # the config file to write (e.g. config/tuned_gutenberg.py); '' = print the values only
)


def tune(cfg, argv=()):
    """Tune cfg['tune']'s keys in order (see the module's docstring); write cfg['tuned_out'] if named.
    Returns {learning_rate, key: value, ...}."""
    axes = csv_list(cfg['tune'])
    report, chosen = [], {}
    for h, fits, chosen in stages(cfg):
        report.append(f"{h}: {', '.join(f'{v:g} -> {fits[v][1]:.4f} at 2^{fits[v][0]:.2f}' for v in fits)}"
                      f"{list_edge(list(fits), chosen[h], h)}")
        print(f"\ntune {h}: {report[-1]}; keep {chosen[h]:g}", flush=True)
    lr_log2, loss, edge = fits[chosen[axes[-1]]]
    if edge:
        print("warning: the LR optimum is at the grid's edge: widen adamw_lrs and run again")
    values = dict(learning_rate=float(f"{2 ** lr_log2:.3g}"), **{h: chosen[h] for h in axes})
    if cfg['tuned_out']:
        write_tuned(cfg, values, report, loss, argv)
    else:
        print(f"tuned: {values} (name a file with --tuned_out to write them as a config)")
    return values


def stages(cfg, train=True):
    """Each stage of the tune in order, as (key, {candidate: (log2 LR, loss, at the grid's edge)}, the values
    chosen so far): the fitted LR optimum of each candidate, the keys not yet tuned at the middle of their lists.
    train=False reads the CSV as it is (study/report.py)."""
    axes = csv_list(cfg['tune'])
    for h in axes:
        if h not in HPARAMS + ['weight_decay']:
            raise SystemExit(f"error: tune: {h!r} is not one of {', '.join(HPARAMS + ['weight_decay'])}")
    chosen = {h: csv_list(cfg[h], float)[len(csv_list(cfg[h])) // 2] for h in axes}
    for h in axes:
        stage = dict(cfg, axis='lr', **{k: str(v) for k, v in chosen.items() if k != h})
        if train:
            sweep(stage)
        panel = next(iter(cells(select(load_results(cfg['out']), stage), 'lr').values()))
        fits, i = {}, others('lr').index(h)  # where h sits in each run's 'others' tuple
        for v in csv_list(cfg[h], float):
            sub = {k: {x: {o: bs for o, bs in st.items() if math.isclose(o[i], v)} for x, st in xs.items()}
                   for k, xs in panel.items()}
            seeds = csv_list(cfg['seeds'], int)
            fits[v] = next(iter(panel_optima(sub, seeds).values()), (float('nan'), float('inf'), True))
        chosen[h] = min(fits, key=lambda v: fits[v][1])
        yield h, fits, dict(chosen)


def list_edge(values, best, h):
    """A note when the best of three or more candidates is the first or last: the optimum may lie beyond."""
    if len(values) < 3 or best not in (min(values), max(values)):
        return ''
    return f" (the best is the list's {'smallest' if best == min(values) else 'largest'}: extend {h} and tune again)"


def write_tuned(cfg, values, report, loss, argv):
    lines = [f"# Base hyper-parameters tuned at the base width ({cfg['base_width']}) for data/{cfg['dataset']}; "
             "μP carries them unchanged to every width.",
             f"# Written by `python -m study.tune {' '.join(argv)}` from {cfg['out']}: the LR and one key at a "
             f"time, {len(csv_list(cfg['seeds']))} seed(s), runs of {cfg['max_iters'] or 'one epoch of'} steps x "
             f"{cfg['batch_size']} x {cfg['block_size']} tokens; fitted best val loss {loss:.4f}.",
             *[f"#   {line}" for line in report],
             f"dataset = {cfg['dataset']!r}", f"base_width = {cfg['base_width']}",
             *[f"{k} = {v!r}" for k, v in values.items()]]
    os.makedirs(os.path.dirname(os.path.abspath(cfg['tuned_out'])), exist_ok=True)
    atomic_write(cfg['tuned_out'], '\n'.join(lines) + '\n')
    print(f"wrote {cfg['tuned_out']}: {values}")


def main(argv=None):
    from configurator import ConfigError, apply_config
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = dict(DEFAULTS)
    try:
        apply_config(argv, cfg)
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    return tune(cfg, argv)


if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("interrupted")
