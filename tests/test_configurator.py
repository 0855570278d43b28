"""configurator.py: overrides, config files and the user-mistake errors, on a dict and through exec."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configurator import ConfigError, apply_config  # noqa: E402


def defaults():
    return dict(batch_size=12, learning_rate=6e-4, mup=False, compile=True, device='cpu',
                out_dir='out', dataset='shakespeare', backend=None, _private=1, sys=sys)


def test_overrides_in_order_and_types():
    c = defaults()
    apply_config(['--batch_size=32', '--learning_rate=1e-3', '--mup=True', '--device=cuda',
                  '--batch_size=64', '--compile=false'], c, verbose=False)
    assert c['batch_size'] == 64 and type(c['batch_size']) is int  # later override wins
    assert c['learning_rate'] == 1e-3 and c['mup'] is True and c['compile'] is False
    assert c['device'] == 'cuda'
    apply_config(['--mup=False', '--mup'], c, verbose=False)
    assert c['mup'] is True  # a bare flag of a True/False key


def test_int_where_float_expected_and_integral_float_for_int():
    c = defaults()
    apply_config(['--learning_rate=1', '--batch_size=1e2'], c, verbose=False)
    assert c['learning_rate'] == 1.0 and type(c['learning_rate']) is float
    assert c['batch_size'] == 100 and type(c['batch_size']) is int


def test_str_values_quotes_numbers_and_equals():
    c = defaults()
    apply_config(['--out_dir=runs/a=1,b=2'], c, verbose=False)
    assert c['out_dir'] == 'runs/a=1,b=2'  # split on the first '=' only
    apply_config(["--dataset='fineweb_edu'"], c, verbose=False)
    assert c['dataset'] == 'fineweb_edu'
    apply_config(['--out_dir=2024'], c, verbose=False)
    assert c['out_dir'] == '2024'  # a str key keeps the text, not the int
    apply_config(['--out_dir='], c, verbose=False)
    assert c['out_dir'] == ''
    apply_config(['--backend=triton'], c, verbose=False)  # a None default accepts anything
    assert c['backend'] == 'triton'


@pytest.mark.parametrize('arg, words', [
    ('--batch_sise=3', ["unknown config key 'batch_sise'", "'batch_size'", '--help']),
    ('--learnin_rate=1', ["'learning_rate'"]),
    ('--zzz=1', ["unknown config key 'zzz'", '--help']),
    ('--_private=2', ['unknown config key']),
    ('--sys=2', ['unknown config key']),  # not a plain value, so not a key
    ('--batch_size=1.5', ['batch_size expects int', '1.5']),
    ('--batch_size=abc', ['batch_size expects int']),
    ('--learning_rate=fast', ['learning_rate expects float']),
    ('--mup=1', ['mup expects True or False']),
    ('--mup=yes', ['mup expects True or False']),
    ('--learning_rate=True', ['learning_rate expects float']),
    ('--device', ['expected --key=value']),
    ('--mpu', ["unknown config key 'mpu'", "'mup'"]),  # a misspelt bare flag
    ('missing_config.py', ['cannot read config file']),
])
def test_user_mistakes_raise_config_error(arg, words):
    c = defaults()
    before = dict(c)
    with pytest.raises(ConfigError) as e:
        apply_config([arg], c, verbose=False)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert c == before


def test_config_file_then_override(tmp_path):
    f = tmp_path / 'cfg.py'
    f.write_text("import math\n_helper = 3\nbatch_size = 2 ** 5\nlearning_rate = math.sqrt(4) * learning_rate\n"
                 "def unused(): pass\nmup = True\n")
    c = defaults()
    apply_config([str(f), '--batch_size=7'], c, verbose=False)
    assert c['batch_size'] == 7 and c['mup'] is True and c['learning_rate'] == pytest.approx(1.2e-3)
    assert '_helper' not in c and 'math' not in c and 'unused' not in c


def test_apply_config_reports_the_keys_it_set(tmp_path):
    """What a file assigns (whatever the value) and what the command line overrides: the sweep's --plot
    filters a results CSV by these keys only."""
    cfg = dict(a=1, b=2.0, c='x', d=True)
    path = tmp_path / 'conf.py'
    path.write_text('a = 1\nif a:\n    b = 3.0\n_helper = 5\n')
    assert apply_config([str(path), '--c=y'], cfg, verbose=False) == {'a', 'b', 'c'}
    assert cfg == dict(a=1, b=3.0, c='y', d=True)
    assert apply_config([], cfg, verbose=False) == set()


@pytest.mark.parametrize('body, words', [
    ('batch_sze = 3\n', ["unknown config key 'batch_sze'", "'batch_size'"]),
    ('mup = 1\n', ['mup expects bool']),
    ('batch_size = (\n', ['failed', 'SyntaxError']),
    ("out_dir = ['a', 'b']\n", ["out_dir = ['a', 'b']", 'give a str']),  # not dropped without a word
])
def test_config_file_mistakes(tmp_path, body, words):
    f = tmp_path / 'bad.py'
    f.write_text(body)
    c = defaults()
    with pytest.raises(ConfigError) as e:
        apply_config([str(f)], c, verbose=False)
    for w in words:
        assert w in str(e.value)
    assert c == defaults()


SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from configurator import configure
batch_size = 12              # sequences a micro-batch
learning_rate = 6e-4         # the base LR,
                             # before the per-group multipliers
mup = False                  # μP or SP
out_dir = 'out'              # where the run writes
compile = True               # shadows the builtin, as in train.py
configure(globals())
print('RESULT', batch_size, learning_rate, mup, out_dir, compile)
"""


def run_script(tmp_path, *args):
    script = tmp_path / 'script.py'
    script.write_text(SCRIPT.format(root=ROOT))
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=tmp_path)


def test_a_scripts_globals_like_nanogpt(tmp_path):
    (tmp_path / 'cfg.py').write_text('learning_rate = 1e-3\n')
    r = run_script(tmp_path, 'cfg.py', '--batch_size=3', '--mup=True', '--out_dir=x=y', '--compile=False')
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stdout.splitlines() if l.startswith('RESULT')][0]
    assert line == "RESULT 3 0.001 True x=y False"


def test_a_mistake_is_one_line_not_a_traceback(tmp_path):
    r = run_script(tmp_path, '--batch_sise=3')
    assert r.returncode != 0
    assert 'Traceback' not in r.stderr
    assert r.stderr.strip().startswith("error: unknown config key 'batch_sise'") and 'batch_size' in r.stderr


def test_help_lists_keys_with_their_meanings(tmp_path):
    r = run_script(tmp_path, '--help')
    assert r.returncode == 0 and 'RESULT' not in r.stdout
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.startswith('  ')}
    assert list(lines) == ['batch_size', 'learning_rate', 'mup', 'out_dir', 'compile']
    assert lines['batch_size'].endswith('sequences a micro-batch')
    assert lines['learning_rate'].endswith('the base LR, before the per-group multipliers')  # a continued comment
    assert "'out'" in lines['out_dir'] and lines['mup'].endswith('μP or SP')


def test_meanings_of_a_dict(tmp_path):
    from configurator import meanings
    f = tmp_path / 'defaults.py'
    f.write_text("D = dict(\n    widths='1,2',   # the widths\n    seeds=3,        # seeds a point\n"
                 "                    # averaged\n    plain=1,\n)\n")
    assert meanings(str(f)) == {'widths': 'the widths', 'seeds': 'seeds a point averaged'}
