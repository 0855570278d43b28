"""
The rules every pool of a sweep shares, apart from any device or process (so they are tested without CUDA):
a run's result as data (run_job), the memory estimates and a GPU's budget, the out-of-memory rule (Runs), and
which worker trains which run on a machine's GPUs (Schedule).
"""
import time
import traceback

import torch

import training
from study.grid import run_key
from study.run import model_config


def is_oom(e):
    return isinstance(e, torch.OutOfMemoryError) or 'out of memory' in str(e).lower()


def run_job(runner, r):
    """('ok', row, (seconds, peak GB)) or ('oom', r, message) or ('error', r, traceback)."""
    t0 = time.time()
    try:
        row = runner.run(r)
        secs = time.time() - t0
        return 'ok', dict(row, seconds=round(secs, 1)), (secs, runner.peak_gb())
    except Exception as e:  # noqa: BLE001 - reported to the driver
        if is_oom(e):
            runner.release()
            return 'oom', r, f"{type(e).__name__}: {str(e)[:200]}"
        return 'error', r, traceback.format_exc()


def shape(r):
    """What a run's memory estimate depends on, besides the sweep's batch."""
    return r['width'], r['n_layer']


def card_budget_gb(device='cuda'):
    """What the runs on one GPU may use together unless gpu_mem_gb says otherwise: 90% of its memory."""
    return 0.9 * torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30


def estimates(cfg, runs, vocab_size, device_type):
    """{shape: GB} of the runs (training.memory_estimate_gb of a run's model config and the sweep's batch)."""
    tokens = cfg['batch_size'] * cfg['block_size']
    return {shape(r): training.memory_estimate_gb(model_config(r, cfg, vocab_size), tokens, device_type) for r in runs}


class Runs:
    """The runs left to train, largest first, with each shape's memory estimate (GB), and what a finished run
    means: its row, a retry or a skip. Every pool shares this out-of-memory rule: the run goes back to the front
    of the queue with its shape's estimate raised by half, and is skipped once it ran out of memory twice with
    nothing else on its device, or four times in all."""

    def __init__(self, runs, estimate):
        self.pending, self.estimate, self.ooms = list(runs), estimate, {}

    def gb(self, r):
        return self.estimate[shape(r)]

    def result(self, kind, row, info, alone):
        """('ok', row, seconds), ('retry', run, line) or ('skip', run, line); a worker's error raises."""
        if kind == 'ok':
            secs, peak = info
            if peak:  # measured: replaces the estimate (with a margin for fragmentation)
                self.estimate[shape(row)] = max(1.1 * peak, 0.5 * self.gb(row))
            return 'ok', row, secs
        if kind != 'oom':
            raise RuntimeError(f"a worker failed{' on ' + str(row) if row else ''}:\n{info}")
        k = run_key(row)
        self.ooms[k] = self.ooms.get(k, 0) + 1
        self.estimate[shape(row)] = max(self.gb(row) * 1.5, 1.0)
        if (alone and self.ooms[k] >= 2) or self.ooms[k] >= 4:
            return 'skip', row, (f"out of memory {'twice with nothing else on its device' if alone else 'four times'}"
                                 f" (lower batch_size or block_size for it); {info}")
        self.pending.insert(0, row)
        return 'retry', row, (f"out of memory: width {row['width']} x {row['n_layer']} goes back to the queue, its "
                              f"estimate now {self.gb(row):.1f} GB")


class Schedule(Runs):
    """Which worker trains which run. Each worker sits on one device (worker_device[w]), each device has its own
    memory budget (GB). The runs go out in order, largest first, each to the idle worker whose device has the
    most room, keeping the estimates of a device's runs in flight under its budget (small runs fill in while a
    large one waits); a run that fits nowhere but on an empty device is tried there alone. A worker gets a run
    for the model it holds where one fits (no rebuild, no recompile)."""

    def __init__(self, runs, estimate, worker_device, budget, model_of):
        super().__init__(runs, estimate)
        self.device, self.budget, self.model_of = list(worker_device), budget, model_of
        self.idle, self.busy, self.held = list(range(len(self.device))), {}, {}  # busy: worker -> GB

    def room(self, device):
        return self.budget[device] - sum(gb for w, gb in self.busy.items() if self.device[w] == device)

    def alone(self, device):
        return not any(self.device[w] == device for w in self.busy)

    def start(self):
        """[(worker, run)] to start now."""
        out = []
        while self.pending and self.idle:
            for wid in sorted(self.idle, key=lambda w: -self.room(self.device[w])):
                room = self.room(self.device[wid])
                fits = [j for j, r in enumerate(self.pending) if self.gb(r) <= room]
                if not fits and self.alone(self.device[wid]):
                    fits = [0]  # alone on its device and still too big by the estimate: try it
                if fits:
                    break
            else:
                break  # every idle worker's device is too full for any run left
            same = [j for j in fits if self.model_of(self.pending[j]) == self.held.get(wid)]
            r = self.pending.pop((same or fits)[0])
            self.idle.remove(wid)
            self.busy[wid], self.held[wid] = self.gb(r), self.model_of(r)
            out.append((wid, r))
        return out

    def finish(self, wid, kind, row, info):
        """A worker's result: Runs.result's, the worker idle again."""
        self.busy.pop(wid, None)
        self.idle.append(wid)
        if kind == 'oom':
            self.held[wid] = None  # the worker dropped its model
        return self.result(kind, row, info, self.alone(self.device[wid]))


def report(outcome, on_row, on_skip):
    what, r, x = outcome
    if what == 'ok':
        on_row(r, x)
    elif what == 'skip':
        on_skip(r, x)
    else:
        print(x, flush=True)
