"""
A sweep's runs as the tasks of a Ray cluster (python -m study.sweep ... --ray=auto): the same runs, rows,
resume, out-of-memory rule (study/schedule.py) and summary as study/pool.py's workers, over every GPU of every node. The sweep
imports this file, and Ray, only when --ray is given.

--ray=auto joins the cluster this machine is in (RAY_ADDRESS, or the one `ray start` started here) and, with
none, starts a local one for this sweep alone, which ends with it; --ray=HOST:PORT joins that one. Every node
needs the repo and the prepared data at the driver's paths (a shared file system, or a clone and
prepare_data.py on each). docs/scale_out.md says how to start a cluster.

A run is a task that asks for the share of a GPU its memory estimate is of the card's budget
(training.memory_estimate_gb over 90% of the card, or gpu_mem_gb), so Ray packs several small runs onto a
card and gives a large one a card alone (on a CPU cluster: one CPU a run). A task that dies (its process
killed, its node lost) is run again by Ray, up to RETRIES times; its result comes back once, and only the
driver writes the CSV, so a row is never lost or written twice.

Tasks, not actors: an actor holds its GPU share from birth to death, so a pool of actors cannot size each
run's share by its memory, and a lost actor loses its run unless the driver re-sends it. A task is sized per
run and re-run by Ray. What an actor would keep, the compiled model, a task's process keeps too: the worker
process is reused (max_calls=0) and holds the Runner of its last run for the next run of the same model on the
same GPU (the driver sends the runs of one model together). The process addresses the GPU its task was given
by index (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES), so a reused process is never bound to the card of
its first task.

Ctrl-C or SIGTERM of the driver cancels its tasks; a local cluster it started stops with it, even under
kill -9 (Ray ties its processes to the driver's); a cluster it joined kills the tasks of a driver that is gone.
"""
import math
import os
import signal
import socket
import sys
import threading

import torch

from study.run import Runner, model_config
from study.schedule import Runs, card_budget_gb, estimates, report, run_job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RETRIES = 3  # runs of a task whose process or node died, before the run is skipped (the next sweep tries again)
# the processes address their task's GPU by index and find this repo on any node
RUNTIME_ENV = {'env_vars': {'RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES': '1', 'PYTHONPATH': ROOT + ':${PYTHONPATH}'}}


def reachable(address, timeout=5.0):
    """Whether something answers at HOST:PORT (a Ray client keeps retrying an address for minutes)."""
    host, _, port = address.rpartition(':')
    try:
        with socket.create_connection((host or '127.0.0.1', int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def connect(spec, **local):
    """Join the cluster `spec` names ('auto' or HOST:PORT) or, for 'auto' with none to join, start one here
    (ray.init's keyword arguments `local`). Returns a line saying which, and whether this sweep started the
    connection (and so ends it). A process already in a cluster stays in it."""
    if spec != 'auto' and 'ray' not in sys.modules and os.path.exists(os.path.expanduser('~/.ray/auth_token')):
        os.environ.setdefault('RAY_AUTH_MODE', 'token')  # show the token `ray start` made to the cluster at an address
        # (one without tokens ignores it; 'auto' finds out itself); Ray reads this when it is imported
    try:
        import ray
    except ImportError:
        raise SystemExit("error: --ray needs the ray package: pip install ray") from None
    address = os.environ.get('RAY_ADDRESS', '') if spec == 'auto' else spec
    if address and not address.startswith('ray://') and not reachable(address):
        raise SystemExit(f"error: no Ray cluster answers at {address} ({'RAY_ADDRESS' if spec == 'auto' else '--ray'}):"
                         " start one there with `ray start --head` (docs/scale_out.md), or use --ray=auto")
    if ray.is_initialized():
        return 'the Ray cluster this process is in', False
    import logging
    quiet = dict(logging_level=logging.WARNING, runtime_env=RUNTIME_ENV)
    try:
        ray.init(address=spec, **quiet)
        return f"joined the Ray cluster at {address or 'this machine'}", True
    except ConnectionError as e:
        if spec != 'auto':
            raise SystemExit(f"error: --ray={spec}: {' '.join(str(e).split())[:160]} (a cluster that `ray start` "
                             "started asks for its token: copy the head's ~/.ray/auth_token here)") from None
    ray.init(include_dashboard=False, **quiet, **local)
    return "started a local Ray cluster for this sweep (it stops with it)", True


def gpu_index(gpu_id, visible):
    """The torch index of Ray's GPU id in a process whose CUDA_VISIBLE_DEVICES is `visible` (None: unset)."""
    if visible is None:
        return int(gpu_id)
    return [v.strip() for v in visible.split(',')].index(str(gpu_id))


WORKER = {}  # this Ray worker process's Runner and the (settings, device) it was made for


def run_task(cfg, r):
    """One run in a Ray worker process, on the GPU Ray gave its task or on the CPU: run_job's result. The
    process keeps its Runner (the model, compiled once) for its next run with the same settings and device."""
    import ray
    device, ids = cfg['device'], ray.get_gpu_ids()
    if ids:
        index = gpu_index(ids[0], os.environ.get('CUDA_VISIBLE_DEVICES'))
        device = f'cuda:{index}'
        torch.cuda.set_device(index)
    key = (sorted(cfg.items()), device)
    if WORKER.get('key') != key:
        if WORKER.get('runner') is not None:
            WORKER['runner'].release()
        WORKER['runner'], WORKER['key'] = Runner(dict(cfg, device=device)), key
    return run_job(WORKER['runner'], r)


def share_of(gb, budget):
    """The GPU share a run asks for: its estimate over the card's budget, in hundredths, at most the card."""
    return min(1.0, math.ceil(100 * gb / budget) / 100)


class Stop:
    """SIGTERM is Ctrl-C while the tasks run: the driver cancels them and says what it wrote."""

    def __enter__(self):
        self.main = threading.current_thread() is threading.main_thread()
        if self.main:
            self.before = signal.signal(signal.SIGTERM, signal.default_int_handler)

    def __exit__(self, *exc):
        if self.main:
            signal.signal(signal.SIGTERM, self.before)


def train_runs(cfg, runs, vocab_size, dev, on_row, on_skip):
    """study/pool.py's train_runs on a Ray cluster (see the module's docstring)."""
    how, own = connect(cfg['ray'])
    import ray
    flying = {}  # task -> (run, its share of a GPU or its CPUs)
    try:
        res = ray.cluster_resources()
        gpus, cpus = res.get('GPU', 0), res.get('CPU', 0)
        if cfg['device'].startswith('cuda') and not gpus:
            raise SystemExit(f"error: device={cfg['device']!r}, but the Ray cluster has no GPU: use device=cpu")
        on_gpu = gpus > 0 and not cfg['device'].startswith(('cpu', 'mps'))
        budget = (cfg['gpu_mem_gb'] or ray.get(ray.remote(num_gpus=0.01)(card_budget_gb).remote())) if on_gpu else 0
        plan = Runs([], estimates(cfg, runs, vocab_size, 'cuda' if on_gpu else 'cpu'))
        model = {id(r): repr(model_config(r, cfg, vocab_size)) for r in runs}
        plan.pending = sorted(runs, key=lambda r: (-plan.gb(r), model[id(r)]))  # largest first, a model's runs together
        task_cfg = dict(cfg, data_dir=os.path.abspath(cfg['data_dir']), device='' if on_gpu else 'cpu', ray='')
        remote = ray.remote(max_calls=0)(run_task)
        capacity = gpus if on_gpu else cpus
        print(f"ray: {how}: {len(ray.nodes())} node(s), {gpus:g} GPUs, {cpus:g} CPUs; each run asks for "
              + (f"its memory estimate's share of a card's {budget:.0f} GB" if on_gpu else "1 CPU"), flush=True)
        with Stop():
            while plan.pending or flying:
                while plan.pending and (not flying or sum(s for _, s in flying.values()) < 2 * capacity):
                    r = plan.pending.pop(0)  # queued beyond what the cluster holds: no card waits for the driver
                    share = share_of(plan.gb(r), budget) if on_gpu else 1
                    need = dict(num_gpus=share, num_cpus=1) if on_gpu else dict(num_cpus=1)
                    flying[remote.options(max_retries=RETRIES, **need).remote(task_cfg, r)] = (r, share)
                done, _ = ray.wait(list(flying), num_returns=1, timeout=1.0)  # a timeout: Ctrl-C is heard
                if not done:
                    continue
                r, share = flying.pop(done[0])
                try:
                    kind, row, info = ray.get(done[0])
                except ray.exceptions.RayError as e:  # its process or node died RETRIES + 1 times
                    on_skip(r, f"its task died {RETRIES + 1} times ({' '.join(str(e).split())[:200]}); "
                               "the same command tries it again")
                    continue
                report(plan.result(kind, row, info, on_gpu and share >= 1), on_row, on_skip)
    finally:
        for task in flying:
            ray.cancel(task, force=True)
        if own:
            ray.shutdown()
