"""Torch under shared cores: one pre-training step loop, quiet and beside CPU-bound competitors.

    python benchmarks/bench_shared_cores.py --competitors 2 --repeats 3

Each measurement is a fresh process running 15 SGD steps of resnet20 (batch 64, 32 px), with
torch's default threads (all cores) and with fennec's fair-share policy
(:func:`fennec_mlflow.data.threads.use_fair_share_threads`), first on a quiet machine, then with
``--competitors`` busy-loop processes. The ratio loaded / quiet is what a user sees when their
machine is not idle.
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import subprocess
import sys
import time

STEP_LOOP = """
import sys, time, torch
from pytorchcv.model_provider import get_model
if sys.argv[1] == "fair":
    from fennec_mlflow.data.threads import use_fair_share_threads
    use_fair_share_threads()
torch.manual_seed(0)
model = get_model("resnet20_cifar10", pretrained=False)
optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
def step():
    optimiser.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); optimiser.step()
step(); step()
start = time.perf_counter()
for _ in range(15):
    step()
print(torch.get_num_threads(), time.perf_counter() - start)
"""


def burn() -> None:
    while True:
        pass


def measure(policy: str) -> tuple[int, float]:
    out = subprocess.run([sys.executable, "-c", STEP_LOOP, policy], capture_output=True, text=True, check=True).stdout
    threads, seconds = out.split()
    return int(threads), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--competitors", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for label, competitors in (("quiet", 0), (f"{args.competitors} competitors", args.competitors)):
        burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(competitors)]
        for b in burners:
            b.start()
        if burners:
            time.sleep(65)  # let the 1-minute load average see the competitors
        try:
            for policy in ("default", "fair"):
                runs = [measure(policy) for _ in range(args.repeats)]
                results[(label, policy)] = (runs[0][0], [s for _, s in runs])
        finally:
            for b in burners:
                b.terminate()
    print("| machine | policy | threads | seconds (each run) | median |")
    print("|---|---|---:|---|---:|")
    for (label, policy), (threads, seconds) in results.items():
        print(f"| {label} | {policy} | {threads} | {', '.join(f'{s:.2f}' for s in seconds)} | {statistics.median(seconds):.2f} |")
    for policy in ("default", "fair"):
        quiet = statistics.median(results[("quiet", policy)][1])
        loaded = statistics.median(results[(f"{args.competitors} competitors", policy)][1])
        print(f"{policy}: loaded / quiet = {loaded / quiet:.1f}x")


if __name__ == "__main__":
    main()
