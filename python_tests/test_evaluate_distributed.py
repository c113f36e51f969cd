"""Evaluation over two gloo processes: robust_accuracy (eps grid and curve mode) and autoattack shard
the samples over the ranks, gather what they found, and every rank returns what one process returns."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import nonrobust_ext
from nonrobust_ext.attacks.autoattack import autoattack

_WORKER = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[3])
    from _helpers import end_gloo_worker
    from test_evaluate_distributed import evaluate

    def main(rank, world, store_path, out):
        dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world)
        torch.save(evaluate(f"{out}/model.pt", distributed=True), f"{out}/rank{rank}.pt")
        end_gloo_worker()

    if __name__ == "__main__":
        import torch.multiprocessing as mp
        mp.spawn(main, args=(2, sys.argv[1], sys.argv[2]), nprocs=2)
""")


def _train(path) -> None:
    """A SmallCNN trained on the 10-class pattern task, saved to ``path`` (every process loads the same
    weights: training in each would differ in the last bits with the thread count)."""
    from _helpers import SmallCNN, pattern_task

    torch.manual_seed(0)
    x, y = pattern_task(512, seed=0, num_classes=10)
    model = SmallCNN(in_channels=1, num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    torch.save(model.state_dict(), path)


def evaluate(path, distributed: bool) -> dict:
    """What the test compares: the same evaluations in one process or on every rank (one thread each,
    so that the arithmetic is the same in every process)."""
    from _helpers import SmallCNN, pattern_task

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _evaluate(path, distributed, SmallCNN, pattern_task)
    finally:
        torch.set_num_threads(threads)


def _evaluate(path, distributed, SmallCNN, pattern_task) -> dict:  # noqa: N803 (classes passed in)
    model = SmallCNN(in_channels=1, num_classes=10)
    model.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    x, y = pattern_task(75, seed=1, num_classes=10)  # 75: the shards and blocks are uneven
    grid = nonrobust_ext.robust_accuracy(model, (x, y), eps=[0.0, 0.03, 0.06], attack="pgd", steps=5, seed=0,
                                         batch_size=16, distributed=distributed)
    curve = nonrobust_ext.robust_accuracy(model, (x, y), curve=True, attack="fmn", norm="linf", steps=10,
                                          batch_size=16, distributed=distributed)
    aa = autoattack(model, x, y, eps=0.05, steps=5, queries=30, target_classes=2, batch_size=16,
                    distributed=distributed, return_result=True)
    return {
        "grid": (grid.num_samples, grid.clean_correct, grid.robust_correct, grid.clean_confidence,
                 grid.adversarial_confidence, grid.correct, grid.robust),
        "radii": curve.radii,
        "aa": (aa.x_adv, aa.broken_by, [(line.attacked, line.broken) for line in aa.log]),
    }


@pytest.mark.slow
def test_two_gloo_processes_return_what_one_process_returns(tmp_path):
    _train(tmp_path / "model.pt")
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(script), str(tmp_path / "store"), str(tmp_path), os.path.dirname(__file__)]
    subprocess.run(command, check=True, timeout=600, env=env)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    want = evaluate(tmp_path / "model.pt", distributed=False)
    for got in ranks:
        n, clean, robust, clean_conf, adv_conf, correct, robust_rows = got["grid"]
        assert (n, clean, robust) == want["grid"][:3], "counts are exact"
        assert torch.equal(correct, want["grid"][5]) and torch.equal(robust_rows, want["grid"][6])
        assert clean_conf == pytest.approx(want["grid"][3], abs=1e-9)
        assert adv_conf == pytest.approx(want["grid"][4], abs=1e-9)
        assert torch.equal(got["radii"], want["radii"])
        assert torch.equal(got["aa"][0], want["aa"][0]) and torch.equal(got["aa"][1], want["aa"][1])
        assert got["aa"][2] == want["aa"][2]
    assert 0 < want["grid"][2][-1] < want["grid"][1], "the grid should leave some, not all, samples robust"
