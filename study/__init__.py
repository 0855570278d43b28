"""
The study: the experiments that test μP's claim on this repo's model, apart from the reference they use.

The reference (model.py, mup.py, kernel.py, fused_ops.py, training.py, train.py, sample.py, prepare_data.py,
configurator.py, coord_check.py) never imports this package; this package imports it. Every run of the
study trains through training.py, as train.py does.

    grid.py      the grid spec (log2 LR lists, comma lists, the axes), the runs a config expands into, the
                 results CSV (its columns, a run's key, the settings beside it) and reading rows back
    run.py       one run: its model built from its own settings, trained through training.py, its row
    schedule.py  the rules every pool shares: which worker trains which run, the memory budget, out-of-memory retry
    pool.py      where the runs train: worker processes on every GPU of the machine (or this process)
    ray_pool.py  or the tasks of a Ray cluster (--ray=auto), imported only then
    track.py     each finished run's steps as TensorBoard events (and wandb), named by its labels
    sweep.py     the LR-transfer sweep's command: plan, progress, the CSV, the summary (python -m study.sweep)
    optima.py    each curve's fitted optimum with its seed interval, and the summary
    plots.py     the figures (python -m study.sweep --plot), and the live one a sweep redraws as each run ends
    tune.py      tuning the base values at the base width into a config file (python -m study.tune)
    report.py    every number of README.md and docs/ drawn from assets/, written by these fits (python -m study.report)
    bench.py     kernel and training-step timing against the flash-linear-attention-built LM (python -m study.bench)
    experiments/ one folder per answered question: its script(s) and a NOTES.md

    python -m study.sweep config/sweep_paper.py          # a sweep (config/sweep_*.py), resumable, on every GPU
    python -m study.sweep config/sweep_paper.py --ray=auto   # on a Ray cluster (docs/scale_out.md)
    python -m study.sweep config/sweep_paper.py --plot   # its figures and fitted optima, from the CSV
    python -m study.tune config/tune_base.py --tuned_out=config/tuned_gutenberg.py   # the base values
    python -m study.bench                                # the kernel table (a GPU)
    python -m study.report --check                       # the docs' tables against assets/ (CPU, seconds)

Every script takes config files and --key=value (configurator.py); --help lists the keys and their meaning.
"""
