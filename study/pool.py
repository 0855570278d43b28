"""
Where a sweep's runs train: worker processes sharing the device (or the sweep's own process), a memory
budget that decides how many runs are in flight together, and a retry for a run that runs out of memory.

train_runs() is the interface: it hands out the runs and gives each finished row to a callback. A pool is
anything with submit(worker, run), result() -> (worker, kind, row, info) and close(); the driver loop does
not depend on where a pool's workers run.
"""
import os
import signal
import threading
import time
import traceback

import torch

import training
from study.grid import run_key
from study.run import Runner, model_config


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


def worker_main(wid, cfg, jobs, results):
    """A worker process: runs the jobs the driver sends until it gets None; reports each result. Ctrl-C is the
    driver's to handle (ProcessPool starts the workers with it ignored); a worker ends when the driver ends,
    however that happens (a kill -9 leaves nobody to send the None)."""
    import multiprocessing
    parent = multiprocessing.parent_process()
    threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()
    try:
        runner = Runner(cfg)
    except BaseException as e:  # noqa: BLE001 - reported to the driver, which stops the sweep
        results.put((wid, 'error', None, f"{type(e).__name__}: {e}"))
        return
    while True:
        r = jobs.get()
        if r is None:
            return
        results.put((wid, *run_job(runner, r)))


class InlinePool:
    """workers=0: the runs happen in this process, one at a time, through the same driver loop."""

    def __init__(self, cfg):
        self.runner, self.done = Runner(cfg), []

    def submit(self, wid, r):
        self.done.append((wid, *run_job(self.runner, r)))

    def result(self):
        return self.done.pop(0)

    def close(self):
        pass


class ProcessPool:
    """Worker processes sharing the device; each has a job queue, all report to one result queue."""

    def __init__(self, cfg, n):
        import multiprocessing as mp
        ctx = mp.get_context('spawn')  # CUDA cannot be forked
        self.jobs, self.results = [ctx.Queue() for _ in range(n)], ctx.Queue()
        self.procs = [ctx.Process(target=worker_main, args=(i, cfg, self.jobs[i], self.results), daemon=True)
                      for i in range(n)]
        # a worker starts with Ctrl-C ignored (the disposition passes to the new process): the driver stops them
        main = threading.current_thread() is threading.main_thread()
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            for p in self.procs:
                p.start()
        finally:
            if main:
                signal.signal(signal.SIGINT, handler)

    def submit(self, wid, r):
        self.jobs[wid].put(r)

    def result(self):
        return self.results.get()

    def close(self):
        for q in self.jobs:
            q.put(None)
        deadline = time.time() + 5  # a worker mid-run does not read its None: it is stopped
        for p in self.procs:
            p.join(timeout=max(0.0, deadline - time.time()))
            if p.is_alive():
                p.terminate()


def workers_for(cfg, device_type):
    """Worker processes to start: the key's value, or 8 on a GPU and none (this process) on a CPU."""
    return cfg['workers'] if cfg['workers'] >= 0 else (8 if device_type == 'cuda' else 0)


def memory_budget_gb(cfg, dev):
    """What the runs in flight together may use: gpu_mem_gb, else 90% of the GPU's memory (no limit on a CPU,
    where the runs go one by one)."""
    if cfg['gpu_mem_gb']:
        return cfg['gpu_mem_gb']
    if dev.type != 'cuda':
        return float('inf')
    return 0.9 * torch.cuda.get_device_properties(torch.device(dev.device)).total_memory / 2**30


def train_runs(cfg, runs, vocab_size, dev, on_row, on_skip):
    """Train `runs` on the device `dev` (training.device_setup's), calling on_row(row, seconds) as each
    finishes and on_skip(run, message) for a run that does not fit in memory even alone.

    The runs are handed out in order (largest first), keeping the sum of their memory estimates under the
    budget (small runs fill in while a large one waits for room). A worker gets a run for the model it holds
    when there is one (no rebuild, no recompile). A run that runs out of memory goes back to the queue, its
    shape's estimate is raised, and it waits until it has the room."""
    workers = workers_for(cfg, dev.type)
    nw = min(workers, len(runs)) if workers > 0 else 1
    budget = memory_budget_gb(cfg, dev)
    tokens = cfg['batch_size'] * cfg['block_size']
    shape = lambda r: (r['width'], r['n_layer'])  # noqa: E731
    model_of = lambda r: model_config(r, cfg, vocab_size)  # noqa: E731
    estimate = {shape(r): training.memory_estimate_gb(model_of(r), tokens, dev.type) for r in runs}
    pool = ProcessPool(cfg, nw) if workers > 0 else InlinePool(cfg)
    pending, idle, busy, held = list(runs), list(range(nw)), {}, {}
    oom_count = {}
    try:
        while pending or busy:
            while pending and idle:
                room = budget - sum(busy.values())
                fits = [j for j, r in enumerate(pending) if estimate[shape(r)] <= room]
                if not fits:
                    if busy:
                        break
                    fits = [0]  # alone on the device and still too big by the estimate: try it
                wid = idle.pop(0)
                same = [j for j in fits if model_of(pending[j]) == held.get(wid)]
                r = pending.pop((same or fits)[0])
                busy[wid] = estimate[shape(r)]
                held[wid] = model_of(r)
                pool.submit(wid, r)
            wid, kind, row, info = pool.result()
            alone = len(busy) == 1
            busy.pop(wid, None)
            idle.append(wid)
            if kind == 'ok':
                secs, peak = info
                if peak:  # measured: replaces the estimate (with a margin for fragmentation)
                    estimate[shape(row)] = max(1.1 * peak, 0.5 * estimate[shape(row)])
                on_row(row, secs)
            elif kind == 'oom':
                held[wid] = None
                k = run_key(row)
                oom_count[k] = oom_count.get(k, 0) + 1
                estimate[shape(row)] = max(estimate[shape(row)] * 1.5, 1.0)
                if (alone and oom_count[k] >= 2) or oom_count[k] >= 4:
                    on_skip(row, f"out of memory {'twice with nothing else on the device' if alone else 'four times'}"
                                 f" (lower batch_size or block_size for it); {info}")
                else:
                    pending.insert(0, row)
                    print(f"out of memory: width {row['width']} x {row['n_layer']} goes back to the queue, its "
                          f"estimate now {estimate[shape(row)]:.1f} GB", flush=True)
            else:
                raise RuntimeError(f"a worker failed{' on ' + str(row) if row else ''}:\n{info}")
    finally:
        pool.close()
