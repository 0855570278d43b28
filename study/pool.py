"""
Where a sweep's runs train: worker processes spread over every GPU of the machine (or the sweep's own
process), a memory budget per GPU that decides how many runs are in flight on it, and a retry for a run that
runs out of memory. With --ray, the tasks of a Ray cluster instead (study/ray_pool.py, imported only then).

train_runs() is the interface: it hands out the runs and gives each finished row to a callback, wherever the
runs train. The rules (which worker trains which run, what a result means) are study/schedule.py's. A pool is
anything with submit(worker, run), result(timeout) -> (worker, kind, row, info) or None, and close().
"""
import os
import queue
import signal
import threading
import time

import torch

from study.run import Runner, model_config
from study.schedule import Schedule, card_budget_gb, estimates, report, run_job


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

    def result(self, timeout=None):
        return self.done.pop(0)

    def close(self):
        pass


def worker_gpus(worker_device, visible):
    """The CUDA_VISIBLE_DEVICES of each worker: the entry of `visible` (this process's, None: unset) for its GPU
    ('cuda:i' is this process's i-th GPU), None for a worker on the CPU."""
    ids = [v.strip() for v in visible.split(',') if v.strip()] if visible is not None else None
    return [(ids[int(d.split(':')[1])] if ids is not None else d.split(':')[1]) if d.startswith('cuda:') else None
            for d in worker_device]


class ProcessPool:
    """Worker processes, worker w on the device worker_device[w]; each has a job queue, all report to one result
    queue. A worker on GPU i sees only that GPU (CUDA_VISIBLE_DEVICES, set before it starts), as its 'cuda'."""

    def __init__(self, cfg, worker_device):
        import multiprocessing as mp
        ctx = mp.get_context('spawn')  # CUDA cannot be forked
        n = len(worker_device)
        self.jobs, self.results = [ctx.Queue() for _ in range(n)], ctx.Queue()
        before = os.environ.get('CUDA_VISIBLE_DEVICES')
        self.procs = [(ctx.Process(target=worker_main, daemon=True, args=(
            i, dict(cfg, device='cuda' if d.startswith('cuda') else d), self.jobs[i], self.results)), gpu)
            for i, (d, gpu) in enumerate(zip(worker_device, worker_gpus(worker_device, before)))]
        # a worker starts with Ctrl-C and SIGTERM ignored (the disposition passes to the new process): the driver
        # stops them
        main = threading.current_thread() is threading.main_thread()
        handlers = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        def visible(ids):  # a spawned process takes this process's environment as it is when it starts
            if ids is None:
                os.environ.pop('CUDA_VISIBLE_DEVICES', None)
            else:
                os.environ['CUDA_VISIBLE_DEVICES'] = ids
        try:
            for p, gpu in self.procs:
                visible(gpu if gpu is not None else before)
                p.start()
        finally:
            visible(before)
            for s, handler in handlers.items():
                signal.signal(s, handler)
        self.procs = [p for p, _ in self.procs]

    def submit(self, wid, r):
        self.jobs[wid].put(r)

    def result(self, timeout=None):
        """The next result, or None after `timeout` seconds without one."""
        try:
            return self.results.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self):
        for q in self.jobs:
            q.put(None)
        deadline = time.time() + 5  # a worker mid-run does not read its None: it is stopped
        for p in self.procs:
            p.join(timeout=max(0.0, deadline - time.time()))
            if p.is_alive():
                p.terminate()


def workers_for(cfg, device_type):
    """Worker processes to start on each device: the key's value, or 8 a GPU and none (this process) on a CPU."""
    return cfg['workers'] if cfg['workers'] >= 0 else (8 if device_type == 'cuda' else 0)


def devices_of(spec, device, count):
    """The devices the workers spread over, from the `devices` key: '' = every visible GPU (or the one
    `device` names, or the CPU), '0,2' = those GPUs, 'cpu' = the CPU. device: the run's (training.device_setup's
    .device); count: the GPUs visible. A GPU that does not exist raises ValueError with what exists."""
    spec = str(spec).strip()
    if spec in ('', 'cpu') and not device.startswith('cuda'):
        return [device]
    if spec == 'cpu':
        return ['cpu']
    if not device.startswith('cuda'):
        raise ValueError(f"devices={spec!r}: GPU indices, but the runs go on the {device} (device={device!r})")
    if spec == '':
        return [device] if ':' in device else [f'cuda:{i}' for i in range(count)]
    try:
        ids = list(dict.fromkeys(int(s) for s in spec.split(',') if s.strip()))
    except ValueError:
        raise ValueError(f"devices={spec!r}: '' (every GPU), a comma list of GPU indices such as '0,2', or 'cpu'") from None
    missing = [i for i in ids if not 0 <= i < count]
    if missing or not ids:
        raise ValueError(f"devices={spec!r}: this machine has {count} GPU(s), 0..{count - 1} "
                         f"(as CUDA_VISIBLE_DEVICES numbers them): GPU {','.join(map(str, missing))} does not exist")
    return [f'cuda:{i}' for i in ids]


def sweep_devices(cfg, dev):
    """devices_of for this machine; a GPU that does not exist stops the sweep with one line."""
    try:
        return devices_of(cfg['devices'], dev.device, torch.cuda.device_count() if dev.type == 'cuda' else 0)
    except ValueError as e:
        raise SystemExit(f"error: {e}")


def placement(cfg, dev):
    """Where the runs go, in words, for the sweep's plan."""
    if cfg['ray']:
        return f"as tasks of the Ray cluster ray={cfg['ray']!r}"
    workers, devices = workers_for(cfg, dev.type), sweep_devices(cfg, dev)
    kind = 'GPU' if dev.type == 'cuda' else dev.type.upper()
    if not workers:
        return f"in this process, {kind}"
    if len(devices) == 1:
        return f"{workers} worker processes, {kind}"
    return f"{workers} worker processes on each of {len(devices)} GPUs ({', '.join(devices)})"


def memory_budget_gb(cfg, device):
    """What the runs in flight together on one device may use: gpu_mem_gb, else card_budget_gb (no limit on a
    CPU, where the runs go one by one)."""
    if cfg['gpu_mem_gb']:
        return cfg['gpu_mem_gb']
    return card_budget_gb(device) if device.startswith('cuda') else float('inf')


def train_runs(cfg, runs, vocab_size, dev, on_row, on_skip):
    """Train `runs` on the device `dev` (training.device_setup's) and the others `devices` names, calling
    on_row(row, seconds) as each finishes and on_skip(run, message) for a run that does not fit in memory even
    alone (Schedule's rules). With cfg['ray'], on a Ray cluster (study/ray_pool.py)."""
    if cfg['ray']:
        from study.ray_pool import train_runs as train_on_ray
        return train_on_ray(cfg, runs, vocab_size, dev, on_row, on_skip)
    devices = sweep_devices(cfg, dev)
    per = workers_for(cfg, dev.type)
    if per > 0:  # round robin: with few runs, every device still gets one
        worker_device = [devices[i % len(devices)] for i in range(min(per * len(devices), len(runs)))]
    else:
        worker_device = devices[:1]
    plan = Schedule(runs, estimates(cfg, runs, vocab_size, dev.type), worker_device,
                    {d: memory_budget_gb(cfg, d) for d in devices}, lambda r: model_config(r, cfg, vocab_size))
    pool = ProcessPool(cfg, worker_device) if per > 0 else InlinePool(dict(cfg, device=worker_device[0]))
    with stop_on_ctrl_c() as stop:
        if per == 0:
            pool.runner.stop = stop.check  # a run in this process stops after its step
        try:
            while plan.pending or plan.busy:
                for wid, r in plan.start():
                    pool.submit(wid, r)
                while (result := pool.result(timeout=0.5)) is None:
                    stop.check()
                report(plan.finish(*result), on_row, on_skip)
                stop.check()
        finally:
            pool.close()


class stop_on_ctrl_c:
    """Ctrl-C (or SIGTERM, a scheduler's stop) is remembered, and check() raises KeyboardInterrupt where the
    driver (or a run training in this process, after its step) can take it: raised from the handler, it could land
    inside a weakref callback (queues and autograd run them), where Python prints it and drops it. A second one
    raises at once."""

    def __enter__(self):
        self.asked, main = False, threading.current_thread() is threading.main_thread()
        self.before = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)} if main else None
        return self

    def handle(self, signum, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True

    def check(self):
        if self.asked:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        for s, handler in (self.before or {}).items():
            signal.signal(s, handler)
