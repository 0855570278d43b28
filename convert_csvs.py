"""
One-off: convert every results CSV in assets/ (and its _config.csv) from the layout of the flat sweep.py (one
row for a trained run, relabelled on load by expand()) to study/grid.py's (a row for each label, its
trained_as naming the run that trained it), then check that every documented summary of each CSV prints the
same numbers from the converted rows (the new loader) as from the old rows (the old loader, expand included).

    python convert_csvs.py            # converts in place after the check passes; prints the check

The old loader is the flat sweep.py and optima.py of commit e60531a, read from git.
"""
import contextlib
import csv
import io
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.abspath(__file__))
OLD = 'e60531a'
P, L, W = 'config/sweep_paper.py', 'config/sweep_long.py', 'config/sweep_weight_decay.py'
B, D, J = 'config/sweep_sgd_batch.py', 'config/sweep_depth.py', 'config/sweep_joint.py'
T, TUNED = 'config/tune_base.py', 'config/tuned_gutenberg.py'
# each CSV's documented summaries and figures (README, docs/, config/ headers): the keys its commands give
CHECKS = {
    'lr_sweep.csv': [[]],
    'lr_sweep_momentum09.csv': [['config/sweep_quick_momentum09.py']],
    'lr_sweep_noclip.csv': [['--optimizers=sgd', '--sgd_params=sp,mup', '--grad_clip=0', '--sgd_lrs=-10:-3']],
    'lr_sweep_noclip09.csv': [['--optimizers=sgd', '--sgd_params=sp,mup', '--momentum=0.9', '--grad_clip=0',
                               '--sgd_lrs=-9:-3', '--widths=256,512,1024']],
    'lr_sweep_output_mult.csv': [['--widths=256', '--output_mult=1,2,4,8,16', '--axis=output_mult']],
    'lr_sweep_paper.csv': [[P], [P, '--at_step=100'], [P, '--at_step=200']],
    'lr_sweep_paper_output_mult.csv': [[P, '--axis=output_mult']],
    'lr_sweep_paper_noclip.csv': [[P, '--grad_clip=0']],
    'lr_sweep_paper_gate_lr.csv': [[P, '--grad_clip=0', '--optimizers=sgd', '--axis=gate_lr_mult']],
    'lr_sweep_paper_init_std.csv': [[P, '--axis=init_std']],
    'lr_sweep_paper_momentum.csv': [[P, '--momentum=0.9', '--optimizers=sgd', '--sgd_params=sp,mup', '--sgd_lrs=-5:1']],
    'lr_sweep_quick_deep.csv': [['--n_layer=4', '--max_iters=600', '--warmup_iters=60', '--eval_interval=200',
                                 '--widths=256,512,1024', '--optimizers=sgd', '--sgd_params=sp,mup', '--sgd_lrs=-6:-1']],
    'lr_sweep_quick_deep_noclip.csv': [['--n_layer=4', '--max_iters=600', '--warmup_iters=60', '--eval_interval=200',
                                        '--widths=256,512,1024', '--optimizers=sgd', '--sgd_params=sp,mup',
                                        '--sgd_lrs=-9:-4', '--grad_clip=0']],
    'lr_sweep_long.csv': [[P, L], [P, L, '--at_step=500'], [P, L, '--seeds=1340', '--at_step=1500'],
                          [P, L, W, '--axis=weight_decay'], [P, L, W, '--weight_decay=0', '--widths=256,1024']],
    'lr_sweep_sgd_batch.csv': [[P, B], [P, B, '--at_step=200']],
    'tune_gutenberg.csv': [[T], [T, '--tune_stage', '--init_std=0.02', '--weight_decay=0.1'],
                           [T, '--tune_stage', '--output_mult=4', '--weight_decay=0.1'],
                           [T, '--tune_stage', '--output_mult=4', '--init_std=0.02'],
                           [T, '--output_mult=2', '--at_step=910']],
    'tuned_check_gutenberg.csv': [[T, TUNED, '--widths=1024', '--adamw_params=mup', '--adamw_lrs=-10:-7',
                                   '--seeds=1337,1338']],
    'lr_sweep_depth.csv': [[D], [D, '--at_step=200']],
    'lr_sweep_depth_sgd.csv': [[D, '--optimizers=sgd', '--sgd_params=mup', '--depth_rule=depth_mup,completep',
                                '--sgd_lrs=-5:0', '--seeds=1337']],
    'lr_sweep_joint.csv': [[D, J]],
    'lr_sweep_joint_width.csv': [[D, J, '--n_layer=4']],
}
LABEL_KEYS = [('adamw', 'adamw_params'), ('sgd', 'sgd_params'), ('depth_rule', 'depth_rule'),
              ('weight_decay_rule', 'weight_decay_rule')]


def old_modules():
    d = tempfile.mkdtemp()
    for name in ('sweep', 'optima'):
        src = subprocess.run(['git', 'show', f'{OLD}:{name}.py'], cwd=ROOT, capture_output=True, text=True, check=True)
        with open(os.path.join(d, f'{name}.py'), 'w') as f:
            f.write(src.stdout)
    sys.path[:0] = [d]
    import optima as old_optima
    import sweep as old_sweep
    sys.path.remove(d)
    return old_sweep, old_optima


def configure(defaults, argv, out):
    from configurator import apply_config
    argv = [a if a.startswith('--') else os.path.join(ROOT, a) for a in argv if a != '--tune_stage']
    cfg = dict(defaults)
    with contextlib.redirect_stdout(io.StringIO()):
        assigned = apply_config(argv + [f'--out={out}'], cfg)
    return cfg, assigned


def summary_text(summarize, rows, cfg):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        summarize(rows, cfg['axis'], cfg['learning_rate'])
    text = buf.getvalue().split('\n')
    if 'one model, several labels' in buf.getvalue():  # the new summary's note: not in the old one
        i = text.index('one model, several labels (one run trained, a row for each):')
        j = i + 1
        while j < len(text) and text[j].startswith('  '):
            j += 1
        text = text[:i - 1] + text[j:]
    return '\n'.join(text)


def convert(name, old_sweep, new_grid, new_sweep):
    """The converted rows and settings of assets/<name>, with the labels its documented commands ask for."""
    path = os.path.join(ROOT, 'assets', name)
    settings = old_sweep.read_settings(path)
    run = {**{k: str(old_sweep.DEFAULTS[k]) for k in new_grid.RUN_KEYS}, **settings}
    run = {k: run[k] for k in new_grid.RUN_KEYS}
    bw, bd = int(run['base_width']), int(run['base_depth'])
    text_rows, typed = old_sweep.read_rows(path), old_sweep.load_results(path)
    labels = {k: set() for k, _ in LABEL_KEYS}
    for r in typed:
        labels[r['optimizer']].add(r['parametrization'])
        labels['depth_rule'].add(r['depth_rule'])
        labels['weight_decay_rule'].add(r['weight_decay_rule'])
    for argv in CHECKS[name]:
        cfg, assigned = configure(old_sweep.DEFAULTS, argv, path)
        for k, c in LABEL_KEYS:
            if '--tune_stage' in argv or c in assigned:
                labels[k] |= set(old_sweep.csv_list(cfg[c]))
    labels = {k: sorted(v) for k, v in labels.items()}
    out, seen = [], set()
    for text, r in zip(text_rows, typed):
        expanded = old_sweep.expand([r], bw, bd, labels)  # the row itself first, then the labels it stands for
        for e in sorted(expanded, key=lambda e: (new_grid.trained_as(e, r) != '', str(new_grid.run_key(e)))):
            if new_grid.run_key(e) in seen:
                continue
            seen.add(new_grid.run_key(e))
            row = {k: e[k] for k in new_grid.AXES}
            row.update(trained_as=new_grid.trained_as(e, r), **{k: text[k] for k in new_grid.RESULTS})
            out.append(row)
    return run, out, labels


def write(path, rows, run, new_grid):
    for p in (path, new_grid.config_path(path)):
        if os.path.exists(p):
            os.remove(p)
    with open(new_grid.config_path(path), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['key', 'value'])
        w.writerows(run.items())
    writer = new_grid.ResultWriter(path)
    for r in rows:
        writer.write(r)
    writer.close()


def check(name, path, old_sweep, old_optima, new_grid, new_optima, new_sweep):
    """Every documented summary of the CSV, old rows and loader against converted rows and new loader."""
    report = []
    for argv in CHECKS[name] + ([] if [] in CHECKS[name] else [['--bare']]):
        bare = argv == ['--bare']
        args = [] if bare else argv
        ocfg, oassigned = configure(old_sweep.DEFAULTS, args, os.path.join(ROOT, 'assets', name))
        ncfg, nassigned = configure(new_sweep.DEFAULTS, args, path)
        stage = '--tune_stage' in argv
        oa, na = (None, None) if stage else (oassigned | {'plot'}, nassigned | {'plot'})
        old_rows = old_sweep.select(old_sweep.load_results(ocfg['out'], ocfg['at_step']), ocfg, oa)
        new_rows = new_grid.select(new_grid.load_results(ncfg['out'], ncfg['at_step']), ncfg, na)
        a = summary_text(old_optima.summarize, old_rows, ocfg)
        b = summary_text(new_optima.summarize, new_rows, ncfg)
        same = a == b and len(old_rows) == len(new_rows)
        report.append((' '.join(args) or '(the whole CSV)', same, len(old_rows), len(new_rows), a, b))
    return report


def main():
    old_sweep, old_optima = old_modules()
    from study import grid as new_grid
    from study import optima as new_optima
    from study import sweep as new_sweep
    tmp = tempfile.mkdtemp()
    converted, failed = {}, []
    for name in sorted(CHECKS):
        run, rows, labels = convert(name, old_sweep, new_grid, new_sweep)
        path = os.path.join(tmp, name)
        write(path, rows, run, new_grid)
        n_old = len(old_sweep.read_rows(os.path.join(ROOT, 'assets', name)))
        shared = sum(1 for r in rows if r['trained_as'])
        print(f"{name}: {n_old} rows -> {len(rows)} rows ({shared} with trained_as); labels {labels}")
        for cmd, same, n1, n2, a, b in check(name, path, old_sweep, old_optima, new_grid, new_optima, new_sweep):
            numbers = sum(c.isdigit() for c in a)
            print(f"  {'same' if same else 'DIFFERS'}: {cmd} ({n1} old rows after expand and select, {n2} new; "
                  f"{numbers} digits of summary)")
            if not same:
                if cmd != '(the whole CSV)':
                    failed.append((name, cmd))
                print('    old: ' + a.replace('\n', '\n    old: ') + '\n    new: ' + b.replace('\n', '\n    new: '))
        converted[name] = path
    if failed:
        raise SystemExit(f"the check failed for {failed}: nothing converted")
    for name, path in converted.items():
        dest = os.path.join(ROOT, 'assets', name)
        for src, dst in ((path, dest), (new_grid.config_path(path), new_grid.config_path(dest))):
            os.replace(src, dst)
    print(f"converted {len(converted)} CSVs and their settings in assets/")


if __name__ == '__main__':
    main()
