"""train.py end to end on CPU: every parametrization x optimizer learns; resume is exact, also after Ctrl-C, a
kill and a damaged checkpoint; DDP (gloo) matches one process; bad input fails clearly and never destroys a
checkpoint; the defaults are the tuned base values for the default corpus."""
import csv
import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--dataset=shakespeare_char', '--width=64', '--n_layer=2', '--n_head=2', '--batch_size=4',
        '--block_size=32', '--log_interval=1', '--eval_iters=2', '--warmup_iters=2', '--device=cpu',
        '--decay_lr=False']


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('data')
    sys.path.insert(0, ROOT)
    from prepare_data import prepare
    prepare('shakespeare_char', data_dir=str(d))
    return str(d)


def train(out, data_dir, *args, torchrun=0, check=True):
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), *TINY, f'--out_dir={out}', f'--data_dir={data_dir}', *args]
    if torchrun:
        cmd[1:1] = ['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={torchrun}']
    def run():
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                              env={**os.environ, 'OMP_NUM_THREADS': '1'})
    r = run()
    if torchrun and r.returncode != 0:
        # This test failed in 1 of 4 full-suite runs on a 2-core box, and never in 20 runs of its own
        # (the cause was not captured). If the launch exits non-zero, retry once and keep the first
        # failure's stderr in the report. A wrong loss is never retried: the caller compares losses.
        print(f'torchrun failed once (exit {r.returncode}), retrying:\n{r.stderr[-3000:]}', file=sys.stderr)
        r = run()
    if check:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def losses(out):
    with open(os.path.join(out, 'log.csv')) as f:
        return {int(r['iter']): float(r['loss']) for r in csv.DictReader(f) if r['loss']}


# SGD at 0.1: at 0.3, SP's width 128 sits at its edge of stability, where a last-bit change (the fused input
# projections' grouping) turned the loss's 0.40 margin below its start into a spike above it
@pytest.mark.parametrize('param,optimizer,lr', [('--mup=False', 'adamw', 1e-2), ('--mup=True', 'adamw', 1e-2),
                                                ('--mup=False', 'sgd', 0.1), ('--mup=True', 'sgd', 0.1),
                                                ('--parametrization=mup_fixed_fanout', 'sgd', 0.1)])
def test_training_decreases_loss(tmp_path, data_dir, param, optimizer, lr):
    r = train(tmp_path, data_dir, param, f'--optimizer={optimizer}', f'--learning_rate={lr}',
              '--width=128', '--base_width=64', '--max_iters=12', '--eval_interval=100', '--weight_decay=0')
    name = {'--mup=False': 'sp', '--mup=True': 'mup'}.get(param, param.split('=')[-1])
    assert f'{name}, width 128' in r.stdout
    ls = losses(tmp_path)
    assert len(ls) == 12 and all(map(torch.isfinite, torch.tensor(list(ls.values()))))
    assert sum(ls[i] for i in (10, 11, 12)) / 3 < ls[1] - 0.3, ls


def test_resume_reproduces_the_run(tmp_path, data_dir):
    whole, part = tmp_path / 'whole', tmp_path / 'part'
    train(whole, data_dir, '--max_iters=6', '--eval_interval=3')
    train(part, data_dir, '--max_iters=3', '--eval_interval=3')
    r = train(part, data_dir, '--max_iters=6', '--eval_interval=3', '--init_from=resume')
    assert 'iter 4:' in r.stdout and 'iter 1:' not in r.stdout
    a, b = losses(whole), losses(part)
    assert [a[i] for i in (4, 5, 6)] == [b[i] for i in (4, 5, 6)]
    assert len(glob.glob(str(part / 'ckpt_*.pt'))) == 2  # keep_checkpoints
    before = {p: open(p, 'rb').read() for p in glob.glob(str(part / '*'))}
    r = train(part, data_dir, '--max_iters=5', '--learning_rate=1e-3', '--init_from=resume')  # done already
    assert 'nothing to train' in r.stdout and {p: open(p, 'rb').read() for p in glob.glob(str(part / '*'))} == before


def test_sample_from_checkpoint(tmp_path, data_dir):
    train(tmp_path, data_dir, '--max_iters=2')
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'sample.py'), f'--out_dir={tmp_path}',
                        f'--data_dir={data_dir}', '--start=ROMEO:', '--num_samples=2', '--max_new_tokens=30',
                        '--device=cpu'], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    samples = [s for s in r.stdout.split('---------------') if 'ROMEO:' in s]
    assert len(samples) == 2 and all(len(s.strip()) >= len('ROMEO:') + 30 for s in samples)
    for arg, words in [('--start=€', 'does not encode'), ('--top_k=-3', 'must be >= 0')]:  # char-level: no €
        r = subprocess.run([sys.executable, os.path.join(ROOT, 'sample.py'), f'--out_dir={tmp_path}',
                            f'--data_dir={data_dir}', '--device=cpu', arg], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode != 0 and r.stderr.count('\n') == 1 and words in r.stderr, (arg, r.stderr[-2000:])


def test_long_context_trains_and_samples(tmp_path, data_dir):
    """Sequences of 8192 tokens: the loss falls over 4 steps, and sample.py reads a 9000-token prompt (longer than
    any training sequence) in one pass and continues it."""
    r = train(tmp_path, data_dir, '--block_size=8192', '--batch_size=1', '--max_iters=4', '--eval_interval=4',
              '--eval_iters=1', '--learning_rate=1e-2')
    assert '4 steps of 8,192 tokens' in r.stdout, r.stdout[-1500:]
    ls = losses(tmp_path)
    assert len(ls) == 4 and ls[4] < ls[1] - 0.3, ls
    prompt = tmp_path / 'prompt.txt'
    from prepare_data import get_tokenizer
    ids = torch.from_file(os.path.join(data_dir, 'shakespeare_char', 'val.bin'), size=9000, dtype=torch.int16)
    prompt.write_text(get_tokenizer('shakespeare_char', data_dir).decode(ids.tolist()))  # (ids < 2^15: char vocab)
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'sample.py'), f'--out_dir={tmp_path}',
                        f'--data_dir={data_dir}', f'--start=FILE:{prompt}', '--num_samples=1', '--max_new_tokens=40',
                        '--device=cpu'], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    sample = r.stdout.split('width 64\n', 1)[1].split('---------------')[0]  # after the checkpoint's line
    assert sample.startswith(prompt.read_text()) and len(sample) >= 9000 + 40, len(sample)


@pytest.mark.gpu
def test_gpu_cuda_graphs_train_evaluate_and_resume_as_the_default_mode(tmp_path, data_dir):
    """compile_mode='reduce-overhead' (the step replayed as CUDA graphs) against torch.compile's default mode on the
    GPU: the same training losses, evaluation losses and resumed losses, to the printed digit."""
    gpu = ['--device=cuda', '--width=128', '--max_iters=8', '--eval_interval=4', '--decay_lr=True',
           '--lr_decay_iters=8']

    def log(out):
        with open(os.path.join(out, 'log.csv')) as f:
            return [(r['iter'], r['loss'], r['val_loss']) for r in csv.DictReader(f)]
    train(tmp_path / 'default', data_dir, *gpu)
    train(tmp_path / 'graphs', data_dir, *gpu, '--compile_mode=reduce-overhead')
    train(tmp_path / 'resumed', data_dir, *gpu, '--compile_mode=reduce-overhead', '--max_iters=4')
    train(tmp_path / 'resumed', data_dir, *gpu, '--compile_mode=reduce-overhead', '--init_from=resume')
    assert log(tmp_path / 'graphs') == log(tmp_path / 'default')
    assert log(tmp_path / 'resumed') == log(tmp_path / 'default')


def test_csv_has_a_row_per_step(tmp_path, data_dir):
    train(tmp_path, data_dir, '--max_iters=6', '--log_interval=4', '--eval_interval=100')
    with open(tmp_path / 'log.csv') as f:
        rows = [r for r in csv.DictReader(f) if r['loss']]
    assert [int(r['iter']) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r['iter'] for r in rows if r['ms']] == ['1', '2', '3', '4', '6']  # on the warm-up and log steps


def test_resume_refuses_another_config(tmp_path, data_dir):
    train(tmp_path, data_dir, '--max_iters=2')
    r = train(tmp_path, data_dir, '--max_iters=4', '--init_from=resume', '--width=128', check=False)
    assert r.returncode != 0 and 'width: checkpoint 64, now 128' in r.stderr, r.stderr[-2000:]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, data_dir):
    train(tmp_path, data_dir, '--max_iters=3', '--eval_interval=3')
    ckpt = glob.glob(str(tmp_path / 'ckpt_*.pt'))
    r = train(tmp_path, data_dir, '--max_iters=40', '--eval_interval=3', '--init_from=resume',
              '--optimizer=adamw', '--learning_rate=1e6', '--grad_clip=0', '--warmup_iters=0', check=False)
    assert r.returncode != 0 and 'training stopped' in r.stderr, r.stdout[-1000:] + r.stderr[-2000:]
    assert 'Traceback' not in r.stderr
    assert glob.glob(str(tmp_path / 'ckpt_*.pt')) == ckpt  # nothing diverged was saved
    state = torch.load(ckpt[0], weights_only=False)['model']
    assert all(torch.isfinite(v).all() for v in state.values())


def test_config_file_then_overrides(tmp_path, data_dir):
    r = train(tmp_path, data_dir, 'config/demo.py', '--max_iters=2', '--width=64', '--base_width=64',
              f'--out_dir={tmp_path}')  # the demo names its own out_dir
    assert "Overriding config with config/demo.py" in r.stdout and 'width 64, 4 layers' in r.stdout


def rows(out):
    with open(os.path.join(out, 'log.csv')) as f:
        return list(csv.DictReader(f))


def test_damaged_newest_checkpoint_is_skipped(tmp_path, data_dir):
    """A newest checkpoint cut short (a full disk, an unfinished copy): resume says so, loads the one before
    it, says which, and the run goes on exactly as the uninterrupted one."""
    whole, part = tmp_path / 'whole', tmp_path / 'part'
    train(whole, data_dir, '--max_iters=6', '--eval_interval=3')
    train(part, data_dir, '--max_iters=6', '--eval_interval=3')
    newest = sorted(glob.glob(str(part / 'ckpt_*.pt')))[-1]
    with open(newest, 'r+b') as f:
        f.truncate(os.path.getsize(newest) // 2)
    r = train(part, data_dir, '--max_iters=9', '--eval_interval=3', '--init_from=resume')
    assert f'skipping {newest}' in r.stdout and 'resuming from' in r.stdout and '(iter 3)' in r.stdout, r.stdout
    train(whole, data_dir, '--max_iters=9', '--eval_interval=3', '--init_from=resume')
    a, b = losses(whole), losses(part)
    assert [a[i] for i in range(4, 10)] == [b[i] for i in range(4, 10)]


def test_log_has_each_step_once_after_a_resume(tmp_path, data_dir):
    """Killed after step 5 with the last checkpoint at 3 (as kill -9 leaves it): the resumed run trains 4 and 5
    again, and log.csv holds each step once, in order, with the resumed run's values."""
    train(tmp_path, data_dir, '--max_iters=5', '--eval_interval=3')
    os.remove(tmp_path / 'ckpt_0000005.pt')
    train(tmp_path, data_dir, '--max_iters=6', '--eval_interval=3', '--init_from=resume')
    steps = [int(r['iter']) for r in rows(tmp_path) if r['loss']]
    assert steps == [1, 2, 3, 4, 5, 6], steps


def test_ctrl_c_stops_cleanly_and_resumes_exactly(tmp_path, data_dir):
    """Ctrl-C: the step in flight finishes, a checkpoint of it is written, log.csv has every step to it, no
    traceback; resuming gives what an uninterrupted run gives. On a CPU the first log line comes after the first
    step and, for a run of hours, points to the demo."""
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), *TINY, f'--out_dir={tmp_path / "a"}',
           f'--data_dir={data_dir}', '--max_iters=10000000', '--eval_interval=10000000', '--log_interval=100']
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env={**os.environ, 'OMP_NUM_THREADS': '1'})
    lines = []
    while not any(ln.startswith('iter 1:') for ln in lines):
        lines.append(p.stdout.readline())
        assert lines[-1] or p.poll() is None, ''.join(lines) + p.stderr.read()
    time.sleep(2)  # a few more steps
    p.send_signal(signal.SIGINT)
    p.wait(timeout=120)  # (communicate() would read past what readline() buffered: read the streams instead)
    out, err = ''.join(lines) + p.stdout.read(), p.stderr.read()
    assert p.returncode == 130 and "Traceback" not in err, err[-2000:]  # stopped, not finished
    assert 'config/demo.py' in out and 'stopped' in out
    (ckpt,) = glob.glob(str(tmp_path / 'a' / 'ckpt_*.pt'))
    n = int(ckpt[-10:-3])
    assert n >= 2 and [int(r['iter']) for r in rows(tmp_path / 'a') if r['loss']] == list(range(1, n + 1))
    train(tmp_path / 'a', data_dir, f'--max_iters={n + 2}', '--init_from=resume')
    train(tmp_path / 'b', data_dir, f'--max_iters={n + 2}')
    a, b = losses(tmp_path / 'a'), losses(tmp_path / 'b')
    assert a == b


def test_defaults_are_the_tuned_base_values():
    """`python train.py --width=768 --mup=True` is the μTransfer the repo shows: the values written at the top of
    train.py are the ones a bare run uses (--help prints what the run would use), and the base values among them
    are those config/tuned_gutenberg.py holds (the corpus, the base width's tuned LR and multipliers), at the
    paper's context, for one epoch."""
    import ast
    tuned = {}
    exec(open(os.path.join(ROOT, 'config', 'tuned_gutenberg.py')).read(), tuned)
    source = ast.parse(open(os.path.join(ROOT, 'train.py')).read())
    written = {}
    for node in source.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                written[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:  # computed, not a setting
                pass
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--help'], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    import re
    shown = {m.group(1): m.group(2) for m in (re.match(r'^\s+(\w+)\s*=\s*(\S+)', ln) for ln in r.stdout.splitlines())
             if m}
    assert shown and all(shown[k] == repr(written[k]) for k in shown), (shown, written)
    for key in ('dataset', 'base_width', 'learning_rate', 'output_mult', 'init_std', 'weight_decay'):
        assert written[key] == tuned[key], (key, written[key], tuned[key])
    assert written['block_size'] == 1024 and written['max_iters'] == 0
    assert "config/tuned_gutenberg.py" in open(os.path.join(ROOT, 'train.py')).read()


def test_help_gives_every_key_a_meaning():
    """--help lists every key with its default and what it means (the comment on the line that sets it)."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--help'], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    keys = [ln.split()[0] for ln in r.stdout.splitlines()[1:] if ln.startswith('  ')]
    assert len(keys) > 40 and 'learning_rate' in keys
    bare = [ln for ln in r.stdout.splitlines()[1:] if ln.startswith('  ') and len(ln.split('=', 1)[1].split()) < 2]
    assert not bare, bare


def test_a_new_run_never_takes_over_another_runs_out_dir(tmp_path, data_dir):
    """Two runs into one folder: the second stops with one line naming the ways on, and changes nothing; with
    --overwrite=True it replaces the first, and "done:" names the checkpoint it wrote itself."""
    out = tmp_path / 'reuse'
    train(out, data_dir, '--max_iters=20', '--eval_interval=10')
    before = {p: os.path.getmtime(p) for p in glob.glob(str(out / '*'))}
    r = train(out, data_dir, '--max_iters=10', '--eval_interval=10', check=False)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr
    assert '--out_dir' in r.stderr and '--init_from=resume' in r.stderr and '--overwrite=True' in r.stderr
    assert {p: os.path.getmtime(p) for p in glob.glob(str(out / '*'))} == before
    r = train(out, data_dir, '--max_iters=10', '--eval_interval=10', '--overwrite=True')
    assert f"checkpoint {out / 'ckpt_0000010.pt'}" in r.stdout, r.stdout[-1000:]
    assert sorted(os.path.basename(p) for p in glob.glob(str(out / 'ckpt_*.pt'))) == ['ckpt_0000010.pt']
    assert max(losses(out)) == 10  # the log is this run's
    r = train(out, data_dir, '--parametrization=mupp', check=False)  # a bad setting is named first
    assert r.returncode != 0 and 'mupp' in r.stderr and 'holds another run' not in r.stderr, r.stderr
    for ckpt in glob.glob(str(out / 'ckpt_*.pt')):  # as a run that died before its first checkpoint leaves it
        os.remove(ckpt)
    r = train(out, data_dir, '--max_iters=2', '--eval_interval=10')
    assert 'it wrote no checkpoint' in r.stdout and max(losses(out)) == 2


def test_a_running_run_holds_its_out_dir(tmp_path, data_dir):
    """While a run trains, a second train.py in its folder stops with one line, even with --overwrite=True, and
    the first finishes as its own; a temporary file a killed run left is removed, an alien .pt is skipped."""
    out = tmp_path / 'held'
    os.makedirs(out)
    (out / 'ckpt_0000005.pt.tmp').write_bytes(b'half a checkpoint')
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), *TINY, f'--out_dir={out}', f'--data_dir={data_dir}',
           '--max_iters=10000000', '--eval_interval=10000000', '--log_interval=100']
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env={**os.environ, 'OMP_NUM_THREADS': '1'})
    while not (line := p.stdout.readline()).startswith('iter 1:'):
        assert line or p.poll() is None, p.stderr.read()
    r = train(out, data_dir, '--max_iters=4', '--overwrite=True', check=False)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=120)
    assert r.returncode != 0 and 'another train.py is running' in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1 and p.returncode == 130
    assert not glob.glob(str(out / '*.tmp')) and len(glob.glob(str(out / 'ckpt_*.pt'))) == 1
    n = int(glob.glob(str(out / 'ckpt_*.pt'))[0][-10:-3])  # the SIGINT's checkpoint
    torch.save({'model': {}}, out / 'ckpt_9999999.pt')  # loads, but is not a checkpoint of this repo's
    r = train(out, data_dir, f'--max_iters={n + 1}', '--init_from=resume')
    assert 'not a train.py checkpoint' in r.stdout and f'iter {n + 1}:' in r.stdout, r.stdout[-2000:]


def test_rotation_keeps_other_runs_checkpoints(tmp_path, data_dir):
    """keep_checkpoints drops only the checkpoints this run wrote, never a file it did not write."""
    out = tmp_path / 'rot'
    train(out, data_dir, '--max_iters=4', '--eval_interval=2')
    foreign = out / 'ckpt_0000001.pt'
    foreign.write_bytes(open(out / 'ckpt_0000002.pt', 'rb').read())
    train(out, data_dir, '--max_iters=8', '--eval_interval=2', '--init_from=resume')
    names = sorted(os.path.basename(p) for p in glob.glob(str(out / 'ckpt_*.pt')))
    assert names == ['ckpt_0000001.pt', 'ckpt_0000006.pt', 'ckpt_0000008.pt'], names


def test_sample_skips_a_damaged_newest_checkpoint(tmp_path, data_dir):
    train(tmp_path, data_dir, '--max_iters=4', '--eval_interval=2')
    newest = sorted(glob.glob(str(tmp_path / 'ckpt_*.pt')))[-1]
    with open(newest, 'r+b') as f:
        f.truncate(os.path.getsize(newest) // 2)
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'sample.py'), f'--out_dir={tmp_path}',
                        f'--data_dir={data_dir}', '--num_samples=1', '--max_new_tokens=10', '--device=cpu'],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    skip = [ln for ln in r.stdout.splitlines() if ln.startswith('skipping')]
    assert len(skip) == 1 and newest in skip[0] and skip[0].endswith('trying an older one'), r.stdout
    assert 'ckpt_0000002.pt (iter 2)' in r.stdout


def test_a_run_too_large_for_the_machine_stops_before_it_starts(tmp_path, data_dir):
    """The memory estimate stops a run that cannot fit, before the operating system kills it, and says what fits."""
    r = train(tmp_path, data_dir, '--width=1024', '--n_head=8', '--batch_size=480', '--block_size=4096', check=False)
    assert r.returncode != 0 and 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert 'GB' in r.stderr and ('--batch_size=' in r.stderr or 'config/demo.py' in r.stderr), r.stderr
    advice = re.search(r'--batch_size=(\d+) --gradient_accumulation_steps=(\d+)', r.stderr)
    if advice:  # the same tokens a step: a divisor of the batch, and the accumulation that makes it up
        b, accum = map(int, advice.groups())
        assert 480 % b == 0 and b * accum == 480, r.stderr
    assert not glob.glob(str(tmp_path / '*'))  # nothing written


def test_eta_holds(tmp_path, data_dir):
    """The ETA printed once a tenth of the run is done is within 25% of the time the rest then takes (a steady
    machine), evaluations included."""
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), *TINY, '--width=128', '--batch_size=8', '--block_size=64',
           '--max_iters=300', '--log_interval=10', '--eval_interval=100', '--eval_iters=20',
           f'--out_dir={tmp_path}', f'--data_dir={data_dir}']
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env={**os.environ, 'OMP_NUM_THREADS': '1'})
    eta = None
    for line in p.stdout:
        if line.startswith('iter 30:'):
            value, unit = line.split('~')[1].split()[:2]
            eta, t = float(value) * {'s': 1, 'min': 60, 'h': 3600}[unit], time.time()
    p.wait(timeout=600)
    assert p.returncode == 0 and eta is not None, p.stderr.read()[-2000:]
    actual = time.time() - t
    assert abs(eta - actual) <= 0.25 * actual, (eta, actual)


def test_one_epoch_by_default(tmp_path, data_dir):
    """max_iters = 0 runs one pass over the training split: no token read twice."""
    import training
    from prepare_data import load_split
    d = os.path.join(data_dir, 'shakespeare_char')
    epoch = training.Batches({'train': load_split(d, 'train')}, 256, 512, 0).steps_per_epoch()
    r = train(tmp_path, data_dir, '--max_iters=0', '--batch_size=256', '--block_size=512', '--eval_only=True')
    assert f'{epoch} steps of' in r.stdout, r.stdout


def test_bad_config_fails_clearly(tmp_path, data_dir):
    r = train(tmp_path, data_dir, '--parametrization=mupp', check=False)
    assert r.returncode != 0 and 'mup_fixed_fanout' in r.stderr and 'Traceback' not in r.stderr
    r = train(tmp_path, data_dir, '--mup=True', '--parametrization=sp', check=False)
    assert r.returncode != 0 and 'contradict' in r.stderr and 'Traceback' not in r.stderr
    r = train(tmp_path, data_dir, '--widht=128', check=False)
    assert r.returncode != 0 and "'width'" in r.stderr and 'Traceback' not in r.stderr
    r = train(tmp_path, data_dir, '--max_iters=two', check=False)
    assert r.returncode != 0 and 'max_iters' in r.stderr and 'Traceback' not in r.stderr
    r = train(tmp_path, data_dir, '--compile_mode=cudagraphs', check=False)
    assert r.returncode != 0 and "'reduce-overhead'" in r.stderr and 'Traceback' not in r.stderr
    for arg, word in [('--width=0', 'width=0'), ('--batch_size=0', 'batch_size=0'), ('--n_layer=0', 'n_layer=0'),
                      ('--block_size=-4', 'block_size=-4'), ('--learning_rate=0', 'learning_rate'),
                      ('--depth_rule=deep', 'completep'), ('--weight_decay_rule=x', 'fixed_timescale'),
                      ('--optimizer=adam', 'adamw, sgd'),
                      ('--kernel_backend=triton --width=72', 'multiples of 16'),
                      ('--kernel_backend=triton --width=2176', 'd_k=272'),  # past 256
                      ('--kernel_backend=triton --width=128', 'TRITON_INTERPRET=1'), ('--out_dir=', "out_dir=''")]:
        r = train(tmp_path, data_dir, *arg.split(), check=False)
        assert r.returncode != 0 and word in r.stderr and 'Traceback' not in r.stderr, (arg, r.stderr[-2000:])
        assert len(r.stderr.strip().splitlines()) == 1, (arg, r.stderr)


def test_ddp_two_processes_match_one(tmp_path, data_dir):
    """Same global batch (2 micro-batches): one process accumulating == two gloo processes."""
    args = ['--max_iters=4', '--eval_interval=100', '--gradient_accumulation_steps=2']
    train(tmp_path / 'one', data_dir, *args)
    train(tmp_path / 'two', data_dir, *args, torchrun=2)
    one, two = losses(tmp_path / 'one'), losses(tmp_path / 'two')
    assert one.keys() == two.keys()
    for i in one:
        assert one[i] == pytest.approx(two[i], abs=1e-4), (i, one, two)


def test_tracking_writes_tensorboard_events_and_the_loss_figure(tmp_path, data_dir):
    pytest.importorskip('tensorboard')
    r = train(tmp_path, data_dir, '--max_iters=4', '--eval_interval=2', '--tensorboard=True')
    assert 'loss.png' in r.stdout
    (events,) = glob.glob(str(tmp_path / 'tensorboard' / 'events.out.tfevents.*'))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(events)
    acc.Reload()
    assert [e.step for e in acc.Scalars('train/loss')] == [1, 2, 3, 4]
    assert [e.value for e in acc.Scalars('eval/val_loss')] == pytest.approx(
        [float(r['val_loss']) for r in rows(tmp_path) if r['val_loss']], abs=1e-4)
    with open(tmp_path / 'loss.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
