"""Compile flash-linear-attention's autotuning configs in parallel, before study/bench.py times the fla-built LM.
Run on a GPU machine with fla-core installed (NOTES.md beside this file).

fla autotunes each Triton kernel anew at every head and hidden size; its first step at a new width takes
over 3 minutes (one H200, 2026-12-03), most of it compiling one config after another on one CPU core.
This runs --procs workers per width, worker i compiling only every procs-th config of every kernel
(one forward and backward of bench.fla_lm at batch 2: the tuning keys do not hold the batch, except the
cumsum's), so Triton's on-disk cache (TRITON_CACHE_DIR) holds every compiled config. The timed run
after it loads each from disk and benchmarks the full config list in a quiet process, so its picks are
fla's own. A worker's tuning results are kept apart: Triton keys them by the config list.

Some configs fault (illegal memory access: fla 0.6's chunk_bwd_kernel_dqkwg at width 256, head size 32,
on Triton 3.6 / Hopper). A worker writes the kernel and config whose benchmark faulted to the file named
by FLA_SKIP_CONFIGS and is run again without it while time is left; study/bench.py leaves those configs out too.

    export TRITON_CACHE_DIR=$HOME/.triton_fla FLA_SKIP_CONFIGS=$HOME/.triton_fla/fla_skip_configs.txt
    python -m study.experiments.fla_comparison.fla_warm --widths=1024,256 --secs=240
"""
import os
import subprocess
import sys
import time

from configurator import configure


def worker(width, i, procs):
    import torch
    from triton.runtime.autotuner import Autotuner

    from study import bench
    bench.load_fla()  # as study/bench.py times it: past fla's Triton-version guard, without the faulting configs
    prune, bench_one = Autotuner.prune_configs, Autotuner._bench

    def my_share(self, kwargs):  # this worker's slice of what the autotuner would benchmark
        configs = prune(self, kwargs)
        return configs[i::procs] or configs[i % len(configs):][:1]

    def noting_faults(self, *args, config, **kwargs):
        try:
            return bench_one(self, *args, config=config, **kwargs)
        except torch.AcceleratorError:  # sticky: this process is done, the next run skips the config
            with open(os.environ["FLA_SKIP_CONFIGS"], "a") as f:
                f.write(f"{self.base_fn.__name__} {config}\n")
            raise
    Autotuner.prune_configs, Autotuner._bench = my_share, noting_faults

    m = bench.fla_lm(width, 8, 50304).cuda()
    x = torch.randint(0, 50304, (2, 1025), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = m(x[:, :-1], x[:, 1:])[1]
    loss.backward()
    torch.cuda.synchronize()


def faults():
    path = os.environ["FLA_SKIP_CONFIGS"]
    return open(path).read().splitlines() if os.path.exists(path) else []


DEFAULTS = dict(
    widths='1024,1536,256',      # comma list: the widths to warm (8 layers, fla's LM)
    procs=5,                     # workers per width, each compiling every procs-th config
    secs=240.0,                  # deadline for all workers (seconds)
    worker='',                   # (internal) 'width,i,procs': run as one worker
)


def main():
    a = dict(DEFAULTS)
    configure(a)
    os.environ.setdefault("FLA_SKIP_CONFIGS", os.path.join(os.environ.get("TRITON_CACHE_DIR", "."),
                                                           "fla_skip_configs.txt"))
    if a['worker']:
        return worker(*map(int, a['worker'].split(",")))
    t0 = time.time()
    todo = [(w, i) for w in map(int, a['widths'].split(",")) for i in range(a['procs'])]
    while todo and time.time() - t0 < a['secs']:
        known = len(faults())
        me = [sys.executable, "-m", __spec__.name]  # this script, as one worker
        jobs = {wi: subprocess.Popen(me + [f"--worker={wi[0]},{wi[1]},{a['procs']}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for wi in todo}
        todo = []
        for (w, i), job in jobs.items():
            try:
                job.wait(timeout=max(1, a['secs'] - (time.time() - t0)))
            except subprocess.TimeoutExpired:
                job.kill()
            err = job.communicate()[1].strip().splitlines()
            state = {0: "done"}.get(job.returncode, f"rc {job.returncode}" + (f": {err[-1]}" if err else ""))
            print(f"width {w} worker {i}/{a['procs']}: {state} at {time.time() - t0:.0f} s", flush=True)
            if job.returncode and any("illegal memory access" in e for e in err):
                todo.append((w, i))
        new = faults()[known:]
        for line in new:
            print(f"  faulted, skipped from now on: {line}", flush=True)
        if not new:  # a fault that no benchmark owned: running again would only fault again
            break


if __name__ == "__main__":
    main()
