"""Where a sweep's runs go (study/pool.py, study/schedule.py), with the devices faked: the devices a `devices` key names (a GPU
that does not exist is one line), which worker gets which device and budget, the largest runs first, each
device's own out-of-memory retry, a worker's model kept, and each worker seeing only its GPU."""
import pytest

from study import pool, schedule as schedule_, sweep


def run(width, lr=-8, param='mup', n_layer=1):
    return dict(width=width, n_layer=n_layer, lr=2.0 ** lr, parametrization=param, optimizer='adamw', seed=1,
                steps=5, depth_rule='none', output_mult=2.0, init_std=0.02, embed_lr_mult=1.0, gate_lr_mult=1.0,
                weight_decay=0.1, weight_decay_rule='paper')


def schedule(runs, worker_device, budget, gb):
    """A Schedule whose runs' estimates are gb[width] and whose model is (width, parametrization)."""
    return schedule_.Schedule(runs, {(w, 1): g for w, g in gb.items()}, worker_device, budget,
                         lambda r: (r['width'], r['parametrization']))


def test_devices_named_by_the_key():
    assert pool.devices_of('', 'cuda', 3) == ['cuda:0', 'cuda:1', 'cuda:2']  # every visible GPU
    assert pool.devices_of('', 'cuda:1', 3) == ['cuda:1']  # device names one
    assert pool.devices_of('2,0,2', 'cuda', 3) == ['cuda:2', 'cuda:0']
    assert pool.devices_of('cpu', 'cuda', 3) == ['cpu'] and pool.devices_of('', 'cpu', 0) == ['cpu']
    with pytest.raises(ValueError, match=r"devices='0,5': this machine has 2 GPU\(s\), 0..1 .*GPU 5 does not exist"):
        pool.devices_of('0,5', 'cuda', 2)
    with pytest.raises(ValueError, match='a comma list of GPU indices'):
        pool.devices_of('first', 'cuda', 2)
    with pytest.raises(ValueError, match='GPU indices, but the runs go on the cpu'):
        pool.devices_of('1', 'cpu', 0)


def test_a_gpu_that_does_not_exist_stops_the_sweep_with_one_line(tmp_path):
    with pytest.raises(SystemExit) as e:
        sweep.main([f'--out={tmp_path}/res.csv', f'--data_dir={tmp_path}', '--devices=1', '--device=cpu', '--widths=64'])
    assert str(e.value).startswith('error: devices=') and '\n' not in str(e.value)


def test_each_worker_sees_only_its_gpu():
    """CUDA_VISIBLE_DEVICES of a worker: its GPU as this process's CUDA_VISIBLE_DEVICES names it."""
    assert pool.worker_gpus(['cuda:0', 'cuda:1', 'cuda:0'], None) == ['0', '1', '0']
    assert pool.worker_gpus(['cuda:1', 'cuda:0'], '3,GPU-5f2a') == ['GPU-5f2a', '3']
    assert pool.worker_gpus(['cpu'], '3') == [None]


def test_runs_spread_over_the_devices_largest_first_each_under_its_budget():
    """Two GPUs with 2 workers each (budgets 10 and 20 GB): the largest run goes first, to the device with the
    most room; the small runs fill in under each device's budget; a finished run frees its device's room."""
    runs = [run(1024), run(1024, -7), run(512), run(512, -7), run(256), run(256, -7)]
    s = schedule(runs, ['cuda:0', 'cuda:1', 'cuda:0', 'cuda:1'], {'cuda:0': 10, 'cuda:1': 20},
                 {1024: 12, 512: 6, 256: 3})
    started = s.start()
    where = [(s.device[w], r['width']) for w, r in started]
    # 1024 (12 GB) only fits the 20 GB card; then 512 on cuda:0 (room 10); the second 1024 fits nowhere now
    # (8 GB left on cuda:1, 4 on cuda:0), so the smaller runs fill in: 512 on cuda:1, 256 on cuda:0
    assert where == [('cuda:1', 1024), ('cuda:0', 512), ('cuda:1', 512), ('cuda:0', 256)]
    assert [r['width'] for r in s.pending] == [1024, 256]
    assert s.room('cuda:0') == 1 and s.room('cuda:1') == 2 and not s.idle
    wid = next(w for w, r in started if r['width'] == 1024)
    assert s.finish(wid, 'ok', dict(runs[0]), (30.0, 0.0))[0] == 'ok'
    (w2, r2), = s.start()  # the second 1024 takes the room the first one left, on its worker (its model)
    assert r2['width'] == 1024 and w2 == wid and s.device[w2] == 'cuda:1'


def test_a_worker_keeps_its_model():
    """Among the runs that fit, a worker gets one of the model it holds (no rebuild, no recompile)."""
    runs = [run(512, -8, 'sp'), run(512, -8, 'mup'), run(512, -7, 'sp'), run(512, -7, 'mup')]
    s = schedule(runs, ['cuda:0', 'cuda:0'], {'cuda:0': 100}, {512: 1})
    (w0, a), (w1, b) = s.start()
    assert (a['parametrization'], b['parametrization']) == ('sp', 'mup')
    s.finish(w1, 'ok', dict(b), (1.0, 0.0))
    (w, c), = s.start()
    assert w == w1 and c['parametrization'] == 'mup'  # not the sp run ahead of it in the queue


def test_out_of_memory_is_retried_on_each_device_by_its_own_rule():
    """A run out of memory goes back to the front with its estimate raised by half; it is skipped once it failed
    twice with nothing else on its device (or four times in all). Whether it was alone is its own device's
    business: another GPU's runs do not count."""
    runs = [run(1024), run(256)]
    s = schedule(runs, ['cuda:0', 'cuda:1'], {'cuda:0': 40, 'cuda:1': 40}, {1024: 10, 256: 1})
    (wa, a), (wb, b) = s.start()
    assert (s.device[wa], a['width'], s.device[wb], b['width']) == ('cuda:0', 1024, 'cuda:1', 256)
    what, r, line = s.finish(wa, 'oom', a, 'CUDA out of memory')
    assert what == 'retry' and 'goes back to the queue' in line and s.gb(a) == 15  # alone on cuda:0, though cuda:1 is busy
    assert s.pending[0] is a and s.held[wa] is None
    (w, again), = s.start()
    assert again is a and s.device[w] == 'cuda:0'  # the most room: cuda:0 is empty, cuda:1 holds the 256 run
    what, r, line = s.finish(w, 'oom', a, 'CUDA out of memory')
    assert what == 'skip' and 'twice with nothing else on its device' in line and not s.pending
    # with company on its device, a run has four tries
    s = schedule([run(1024), run(256)], ['cuda:0', 'cuda:0'], {'cuda:0': 40}, {1024: 1, 256: 1})
    (wa, a), (wb, b) = s.start()
    outcomes = []
    for _ in range(4):
        outcomes.append(s.finish(wa, 'oom', a, 'out of memory')[0])
        if outcomes[-1] == 'retry':
            (wa, a), = s.start()
    assert outcomes == ['retry', 'retry', 'retry', 'skip']


def test_a_run_too_big_for_the_budget_is_tried_alone():
    """A run whose estimate is over its device's budget waits while the small runs fill in, then runs alone on
    the emptied device; nothing joins it there."""
    runs = [run(1024), run(256), run(256, -7)]
    s = schedule(runs, ['cuda:0', 'cuda:0'], {'cuda:0': 8}, {1024: 50, 256: 1})
    (w0, a), (w1, b) = s.start()
    assert a['width'] == b['width'] == 256
    s.finish(w0, 'ok', dict(a), (1.0, 0.0))
    assert s.start() == []  # 1024 does not fit beside the other run, and is not alone
    s.finish(w1, 'ok', dict(b), (1.0, 0.0))
    (w, big), = s.start()
    assert big['width'] == 1024 and s.idle and s.room('cuda:0') < 0


def test_a_measured_peak_replaces_the_estimate_and_a_failed_worker_stops_the_sweep():
    s = schedule([run(512), run(512, -7)], ['cuda:0'], {'cuda:0': 80}, {512: 20})
    (w, r), = s.start()
    s.finish(w, 'ok', dict(r), (1.0, 4.0))
    assert s.gb(r) == pytest.approx(10.0)  # 1.1 x 4 GB measured, but no less than half the old estimate
    (w, r), = s.start()
    with pytest.raises(RuntimeError, match='a worker failed'):
        s.finish(w, 'error', r, 'Traceback ...')
