"""Distributed training (torchrun, gloo on the CPU): the helpers, and bundles run on 2 ranks against 1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from s4mi_monai import distributed
from s4mi_monai.clustering import MiniBatchKMeans
from s4mi_monai.losses import DINOLoss, NTXentLoss

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.distributed


class ValidationHandler:  # named like MONAI's, which main_process_handlers recognises by name
    pass


class LrScheduleHandler:
    pass


@pytest.fixture
def one_rank_group():
    """A real gloo process group of one rank, as torchrun would set up."""
    store = torch.distributed.HashStore()
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def test_shutdown_leaves_the_group_and_is_a_no_op_outside_one(monkeypatch):
    monkeypatch.setattr(distributed, "EXIT_GRACE_SECONDS", 0.0)
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    distributed.shutdown()
    assert not distributed.is_distributed()
    distributed.shutdown()


def test_outside_torchrun_the_helpers_are_single_process_and_initialize_says_how_to_start(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.is_distributed() and distributed.rank() == 0 and distributed.world_size() == 1
    network = torch.nn.Linear(2, 2)
    assert distributed.wrap(network, torch.device("cpu")) is network and distributed.unwrap(network) is network
    assert distributed.mean_over_ranks(1.5) == 1.5
    with pytest.raises(RuntimeError, match="torchrun --nproc_per_node N"):
        distributed.initialize("cpu")


def test_other_ranks_drop_validation_and_logging_handlers(monkeypatch):
    handlers = [LrScheduleHandler(), ValidationHandler()]
    assert distributed.main_process_handlers(handlers) == handlers
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert [type(h) for h in distributed.main_process_handlers(handlers)] == [LrScheduleHandler]


def test_wrap_in_a_process_group_and_sync_batchnorm_needs_gpus(one_rank_group):
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    wrapped = distributed.wrap(network, torch.device("cpu"))
    assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel) and distributed.unwrap(wrapped) is network
    assert distributed.mean_over_ranks(2.0) == 2.0
    with pytest.raises(ValueError, match="sync_batchnorm needs GPUs"):
        distributed.wrap(torch.nn.Sequential(torch.nn.BatchNorm2d(4)), torch.device("cpu"), sync_batchnorm=True)


def torchrun(bundle: str, ranks: int, output_dir: Path, *knobs: str, run_id: str = "training") -> subprocess.Popen:
    """``torchrun --nproc_per_node ranks -m monai.bundle run RUN_ID`` with the bundle's multi-GPU overlay."""
    configs = f"['bundles/{bundle}/configs/train.json','bundles/{bundle}/configs/multi_gpu_train.json']"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    command += ["-m", "monai.bundle", "run", run_id, "--config_file", configs, "--output_dir", str(output_dir), *knobs]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = (output_dir.parent / f"{output_dir.name}.log").open("a")
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finished(process: subprocess.Popen, output_dir: Path) -> dict:
    assert process.wait(timeout=600) == 0, (output_dir.parent / f"{output_dir.name}.log").read_text()[-3000:]
    history = output_dir / "history.json"  # a PiCIE run (clusters, no supervised epochs) has none at the top
    return json.loads(history.read_text()) if history.is_file() else {}


def losses(history: dict) -> list[float]:
    return [epoch["loss"] for epoch in history["epochs"]]


# ViT (no BatchNorm) without augmentation: then 2 ranks x 5 images is the same optimisation as 1 rank x 10
EXACT = ["--backbone", "vit_ti16", "--image_size", "32", "--label_fraction", "0.1", "--augmentation", "[]", "--max_epochs", "10"]


@pytest.mark.slow
def test_two_ranks_match_one_rank_with_twice_the_batch_and_a_killed_run_resumes(tmp_path):
    one = finished(torchrun("supervised_cls_isic", 1, tmp_path / "one", *EXACT, "--batch_size", "10"), tmp_path / "one")
    two = finished(torchrun("supervised_cls_isic", 2, tmp_path / "two", *EXACT, "--batch_size", "5"), tmp_path / "two")
    assert losses(two) == pytest.approx(losses(one), rel=1e-4)
    weights_one = torch.load(tmp_path / "one" / "model.pt", weights_only=True)
    weights_two = torch.load(tmp_path / "two" / "model.pt", weights_only=True)
    assert max((weights_one[k] - weights_two[k]).abs().max().item() for k in weights_one) < 1e-3  # Adam after 10 steps
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["settings"]["n_labeled_training_items"] == 10 and metrics["validation"]["epoch"] == two["best"]["epoch"]
    samples = json.loads((tmp_path / "two" / "test_samples.json").read_text())
    assert len(samples["images"]) == 30  # rank 0 scored the whole test split, in dataset order

    # killed after its first checkpoint, then started again: it continues and ends where the uninterrupted run did
    killed = tmp_path / "killed"
    process = torchrun("supervised_cls_isic", 2, killed, *EXACT, "--batch_size", "5", "--checkpoint_interval_s", "0")
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint.pt").is_file():
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()[-3000:]
        time.sleep(0.1)
    # as when the node dies: torchrun and its workers (which run in sessions of their own) all at once
    pids = subprocess.run(["pgrep", "-f", str(killed)], capture_output=True, text=True).stdout.split()
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    process.wait()
    assert not (killed / "metrics.json").exists()  # killed before the end
    resumed = finished(torchrun("supervised_cls_isic", 2, killed, *EXACT, "--batch_size", "5"), killed)
    assert "Restored all variables" in (tmp_path / "killed.log").read_text()
    assert losses(resumed) == pytest.approx(losses(two), rel=1e-4)


def _centre_on_rank(rank: int, port: int, outputs: list[torch.Tensor], centres: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    loss = DINOLoss(out_dim=3, center_momentum=0.5)
    loss.update_center(outputs[rank])
    centres[rank] = loss.center.clone()
    distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_dino_centre_is_the_mean_teacher_output_over_all_ranks():
    outputs = [torch.tensor([[1.0, 0.0, 0.0], [3.0, 0.0, 0.0]]), torch.tensor([[0.0, 6.0, 0.0], [0.0, 0.0, 6.0], [0.0, 0.0, 3.0]])]
    centres = torch.multiprocessing.Manager().dict()
    torch.multiprocessing.spawn(_centre_on_rank, args=(_free_port(), outputs, centres), nprocs=2)
    expected = 0.5 * torch.cat(outputs).mean(dim=0, keepdim=True)  # from c = 0 with momentum 0.5: the mean of all 5 rows
    assert torch.allclose(centres[0], expected) and torch.allclose(centres[1], expected)


def _average_on_rank(rank: int, port: int, grads: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    names = ("used", "one_rank", "unused")
    module = torch.nn.ModuleDict({name: torch.nn.Linear(2, 1, bias=False) for name in names})
    module["used"].weight.grad = torch.tensor([[1.0, 2.0]]) * (rank + 1)  # rank 0: [1, 2], rank 1: [2, 4]
    if rank == 1:
        module["one_rank"].weight.grad = torch.tensor([[4.0, 0.0]])  # rank 0 has none: it counts as 0
    distributed.GradientAverage(module)()
    grads[rank] = {name: module[name].weight.grad for name in names}
    distributed.shutdown()


def test_gradient_average_over_ranks_counts_a_missing_gradient_as_zero_and_leaves_unused_parameters_alone():
    grads = torch.multiprocessing.Manager().dict()
    torch.multiprocessing.spawn(_average_on_rank, args=(_free_port(), grads), nprocs=2)
    for rank in range(2):
        assert torch.equal(grads[rank]["used"], torch.tensor([[1.5, 3.0]]))
        assert torch.equal(grads[rank]["one_rank"], torch.tensor([[2.0, 0.0]]))
        assert grads[rank]["unused"] is None  # no gradient anywhere: the optimizer skips it, as in one process


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bundle", "knobs", "outputs"),
    [
        ("supervised_seg_isic", ["--max_epochs", "2"], ["model.pt", "metrics.json"]),
        ("dino_isic", ["--pretrain_epochs", "2", "--max_epochs", "1"], ["pretrained_backbone.pt", "metrics.json"]),
        ("cass_isic", ["--pretrain_epochs", "2", "--max_epochs", "1", "--stabiliser", "predictor"], ["cnn/model.pt", "transformer/metrics.json"]),
        ("crossteach_seg_isic", ["--max_epochs", "2"], ["cnn/model.pt", "transformer/model.pt", "metrics.json"]),
        ("picie_seg_isic", ["--pretrain_epochs", "2"], ["pretrained_backbone.pt", "model.pt", "metrics.json"]),
        ("contrast_seg_isic", ["--global_epochs", "2", "--local_epochs", "2", "--max_epochs", "1"], ["pretrained_local_backbone.pt", "metrics.json"]),
    ],
)
def test_each_trainer_runs_on_two_ranks(tmp_path, bundle, knobs, outputs):
    out = tmp_path / "run"
    finished(torchrun(bundle, 2, out, "--image_size", "32", *knobs), out)
    assert all((out / name).is_file() for name in outputs)
    log = (tmp_path / "run.log").read_text()
    assert log.count("test metrics written to") == (2 if bundle in ("cass_isic", "crossteach_seg_isic") else 1)  # rank 0 only
    assert "Traceback" not in log


def _kmeans_batches() -> list[list[torch.Tensor]]:
    """Per rank, 2 initial and 3 online batches of 2-D points around 3 centres (rank 1's batches are smaller)."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [0.0, 8.0]])
    return [
        [centres[torch.randint(0, 3, (n,), generator=generator)] + torch.randn(n, 2, generator=generator) for _ in range(5)]
        for n in (12, 9)
    ]


def _kmeans_on_rank(rank: int, port: int, results: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    kmeans = MiniBatchKMeans(3, init_batches=2, generator=torch.Generator().manual_seed(1), across_ranks=True)
    for batch in _kmeans_batches()[rank]:
        kmeans.partial_fit(batch)
    results[rank] = (kmeans.centroids.clone(), kmeans.counts.clone(), kmeans.mean_squared_distance)
    distributed.shutdown()


def test_kmeans_across_ranks_equals_one_process_clustering_the_union_of_their_batches():
    results = torch.multiprocessing.Manager().dict()
    torch.multiprocessing.spawn(_kmeans_on_rank, args=(_free_port(), results), nprocs=2)
    first, second = _kmeans_batches()
    single = MiniBatchKMeans(3, init_batches=1, generator=torch.Generator().manual_seed(1))
    single.partial_fit(torch.cat([*first[:2], *second[:2]]))  # the initial points, gathered in rank order
    for step in range(2, 5):
        single.partial_fit(torch.cat([first[step], second[step]]))
    for rank in range(2):
        centroids, counts, distance = results[rank]
        assert torch.allclose(centroids, single.centroids, atol=1e-5) and torch.equal(counts, single.counts)
        assert distance == pytest.approx(single.mean_squared_distance, rel=1e-6)
    assert float(single.counts.sum()) == 5 * (12 + 9)


def _ntxent_inputs() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    network = torch.nn.Linear(4, 3)
    with torch.no_grad():
        network.weight.copy_(torch.randn(3, 4, generator=generator))
        network.bias.zero_()
    return network, torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)


def _ntxent_on_rank(rank: int, port: int, grads: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    network, view1, view2 = _ntxent_inputs()
    mine = slice(3 * rank, 3 * rank + 3)
    z1, z2 = network(view1[mine]), network(view2[mine])
    NTXentLoss(0.5)(distributed.gather_with_gradients(z1), distributed.gather_with_gradients(z2)).backward()
    distributed.GradientAverage(network)()
    grads[rank] = network.weight.grad.clone()
    distributed.shutdown()


def test_global_contrast_over_ranks_has_the_gradient_of_one_process_with_the_whole_batch():
    grads = torch.multiprocessing.Manager().dict()
    torch.multiprocessing.spawn(_ntxent_on_rank, args=(_free_port(), grads), nprocs=2)
    network, view1, view2 = _ntxent_inputs()
    NTXentLoss(0.5)(network(view1), network(view2)).backward()  # every view's negatives: the other 10 views of 6 images
    for rank in range(2):
        assert torch.allclose(grads[rank], network.weight.grad, atol=1e-6)


@pytest.mark.slow
def test_benchmark_on_two_ranks_reports_each_rank_and_the_total(tmp_path):
    out = tmp_path / "bench"
    process = torchrun("dino_isic", 2, out, "--benchmark_steps", "2", "--image_size", "32", "--pretrain_image_size", "32", run_id="benchmark")
    assert process.wait(timeout=600) == 0, (tmp_path / "bench.log").read_text()[-3000:]
    lines = [line for line in (tmp_path / "bench.log").read_text().splitlines() if line.startswith("benchmark {")]
    results = [json.loads(line.removeprefix("benchmark ")) for line in lines]
    assert [result["stage"] for result in results] == ["pretrain", "finetune"]  # printed once, by rank 0
    for result in results:
        assert result["world_size"] == 2 and len(result["images_per_second_per_rank"]) == 2
        assert result["total_images_per_second"] == pytest.approx(sum(result["images_per_second_per_rank"]))
