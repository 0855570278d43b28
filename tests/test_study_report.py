"""study/report.py: every table of README.md and docs/ drawn from assets/ is what the data gives (the committed
blocks against a fresh rendering), each block is stated once, a tampered number is caught, and writing them
trains nothing. CPU, seconds: the report reads the committed CSVs and JSONs."""
import os
import re

import pytest

from study import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module', autouse=True)
def nothing_trains():
    """Building a block may read results, never train: the pool, the sweep's training and the step all raise."""
    import study.pool
    import study.sweep
    import study.tune
    import training
    saved = study.pool.train_runs, study.sweep.sweep, study.tune.sweep, training.train_step

    def refuse(*a, **k):
        raise AssertionError("the report trained a run")
    study.pool.train_runs = study.sweep.sweep = study.tune.sweep = training.train_step = refuse
    yield
    study.pool.train_runs, study.sweep.sweep, study.tune.sweep, training.train_step = saved


def test_the_committed_blocks_agree_with_the_data():
    files = report.files(report.DEFAULTS['files'])
    assert os.path.join(ROOT, 'README.md') in files and len(files) >= 7
    stale = {os.path.relpath(p, ROOT): report.differences(p) for p in files}
    assert not any(stale.values()), f"run python -m study.report: {stale}"


def test_every_block_is_used_once_and_every_marker_is_known():
    """Each result in one place: every block of BLOCKS appears exactly once across README.md and docs/."""
    names = [m[2] for p in report.files(report.DEFAULTS['files']) for m in report.BLOCK.finditer(open(p).read())]
    assert sorted(names) == sorted(report.BLOCKS), set(names) ^ set(report.BLOCKS)


def test_a_tampered_number_is_caught(tmp_path, capsys):
    """One digit changed inside a committed table: --check names the block and exits non-zero; the rewrite puts
    the data's number back."""
    text = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read()
    block = re.search(r'<!-- report:lr_paper -->\n(.*?)<!-- /report -->', text, re.S)
    number = re.search(r'\d\.\d{3}', block[1])
    digit = number.end() - 1
    wrong = str((int(text[block.start(1) + digit]) + 1) % 10)
    tampered = text[:block.start(1) + digit] + wrong + text[block.start(1) + digit + 1:]
    path = tmp_path / 'README.md'
    path.write_text(tampered, encoding='utf-8')
    assert report.differences(str(path)) == ['lr_paper']
    with pytest.raises(SystemExit) as e:
        report.main(['--check', f'--files={path}'])
    assert 'lr_paper' in str(e.value)
    report.main([f'--files={path}'])
    assert path.read_text(encoding='utf-8') == text
    report.main(['--check=True', f'--files={path}'])
    assert 'agrees' in capsys.readouterr().out


def test_an_unknown_block_stops_with_one_line(tmp_path):
    path = tmp_path / 'doc.md'
    path.write_text("<!-- report:no_such_block -->\n<!-- /report -->\n")
    with pytest.raises(SystemExit, match="no block named 'no_such_block'"):
        report.main([f'--files={path}'])


def test_one_method_the_fitted_optimum():
    """The README's paper table is the study's own summary: its μP-AdamW move and best losses are those of
    study.optima.summarize on the rows `python -m study.sweep config/sweep_paper.py --plot` selects."""
    cfg, rows, summary, _ = report.sweep(report.PAPER)
    p = summary[('adamw', 'mup', 'none', 'paper')]
    table = report.BLOCKS['lr_paper']()
    row = next(line for line in table.splitlines() if line.startswith('| AdamW, μP'))
    assert f"×{2 ** p['shift']:.2f}" in row
    assert ' / '.join(f"{p['best'][k][1]:.3f}" for k in sorted(p['best'])) in row
    gap = p['best'][max(p['best'])][1] - summary[('adamw', 'sp', 'none', 'paper')]['best'][max(p['best'])][1]
    assert report.num(gap, 3, plus=True) in table
