"""A sweep's runs tracked and drawn (study/track.py, study/plots.py's live figure): each run's steps and
evaluations as TensorBoard events in a folder named by its labels, the same numbers as its CSV row; a run
trained again replaces its events; the live figure of the finished runs beside the CSV, whole."""
import csv
import glob
import os

import pytest

from study import grid, sweep


def args(data_dir, out, *extra):
    return [f'--out={out}', f'--data_dir={data_dir}', '--widths=64,128', '--optimizers=adamw', '--adamw_params=sp',
            '--adamw_lrs=-8,-6', '--max_iters=6', '--warmup_iters=2', '--eval_interval=3', '--n_layer=1', '--batch_size=2',
            '--block_size=16', '--eval_iters=1', '--check_interval=1', '--workers=0', '--device=cpu',
            '--base_width=64', *extra]


def events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    files = glob.glob(os.path.join(folder, 'events.out.tfevents.*'))
    acc = EventAccumulator(folder)
    acc.Reload()
    return files, {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}


def test_tensorboard_events_and_the_live_figure(data_dir, tmp_path, monkeypatch):
    pytest.importorskip('tensorboard')
    out = str(tmp_path / 'res.csv')
    drawn = []
    from study import plots
    real = plots.live
    monkeypatch.setattr(sweep, 'live', lambda rows, *a: drawn.append(len(rows)) or real(rows, *a))
    sweep.main(args(data_dir, out, '--tensorboard=True'))
    assert drawn == [1, 2, 3, 4]  # after each run, the runs finished so far
    png = str(tmp_path / 'res_live.png')
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert not glob.glob(str(tmp_path / '*.tmp*'))
    with open(out, newline='') as f:
        written = list(csv.DictReader(f))
    folders = sorted(os.listdir(tmp_path / 'res_tensorboard'))
    assert folders == sorted(grid.describe(r).replace(' ', '_') for r in written) and len(folders) == 4
    for r in written:
        files, s = events(str(tmp_path / 'res_tensorboard' / grid.describe(r).replace(' ', '_')))
        assert len(files) == 1
        assert [step for step, _ in s['train/loss']] == [1, 2, 3, 4, 5, 6]
        assert [step for step, _ in s['lr']] == [1, 2, 3, 4, 5, 6] and s['lr'][-1][1] < s['lr'][2][1]  # the cosine
        assert [step for step, _ in s['eval/val_loss']] == [3, 6]
        assert s['eval/val_loss'][-1][1] == pytest.approx(float(r['final_val_loss']), abs=1e-4)
        assert s['eval/train_loss'] == [(6, pytest.approx(float(r['final_train_loss']), abs=1e-4))]
    # a run trained again (its row lost to a kill) replaces its events, not adds to them
    with open(out, newline='') as f:
        lines = f.readlines()
    with open(out, 'w', newline='') as f:
        f.writelines(lines[:-1])
    sweep.main(args(data_dir, out, '--tensorboard=True'))
    files, s = events(str(tmp_path / 'res_tensorboard' / grid.describe(written[-1]).replace(' ', '_')))
    assert len(files) == 1 and len(s['train/loss']) == 6
