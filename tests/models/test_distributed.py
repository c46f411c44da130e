"""Distributed SASRec (DDP over gloo): real ``torchrun`` jobs of one and two processes on a synthetic stream.

The two jobs train the same configuration on the same data and seed. Asserted: both ranks end with
identical weights; two processes reach one process's validation NDCG@10 within ``NDCG_TOLERANCE``;
one process is bit for bit ``SASRec.fit``; a bad world fails before training with a clear message.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from liverec.cli.distributed import main
from liverec.data.loaders import load_source
from liverec.data.splits import make_split
from liverec.models.sasrec import SASRec, SASRecConfig
from liverec.models.sasrec.distributed import DistributedTraining, World, fit_distributed, resolve_dist_backend
from liverec.registry import ModelRegistry

#: ``--synthetic`` stream: 210 users, 105 items; every user has >= 2 training events, so 210 train
SYNTHETIC_EVENTS = 10_500
#: batch_size 19: 210 = 11 x 19 + 1, so each epoch ends with a one-user batch and rank 1 steps with an empty share
PARAMS: dict[str, Any] = {
    "dim": 16,
    "max_len": 20,
    "batch_size": 19,
    "learning_rate": 5e-3,
    "warmup_steps": 5,
    "max_epochs": 8,
    "patience": 8,
    "n_threads": 1,
    "dropout": 0.0,  # without dropout the two jobs differ only in floating-point summation order
}
#: Two processes vs one, validation NDCG@10 (about 0.19 here): the same gradients summed in another
#: order drift apart by far less than this over 8 epochs (measured: the same at every epoch to 6
#: decimals; losses within 3e-7 relative).
NDCG_TOLERANCE = 0.005

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def torchrun(n_processes: int, *extra: str) -> dict[str, Any]:
    """Run ``torchrun --nproc-per-node n_processes -m liverec.cli.distributed`` and return rank 0's report."""
    params = [f"--param={key}={value}" for key, value in PARAMS.items()]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={n_processes}",
        "-m",
        "liverec.cli.distributed",
        f"--synthetic={SYNTHETIC_EVENTS}",
        "--json",
        "--quiet",
        "--timeout=60",
        *params,
        *extra,
    ]
    env = {key: value for key, value in os.environ.items() if key not in ENV_KEYS}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout  # rank 0 prints, the other ranks stay silent
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    registry = tmp_path_factory.mktemp("registry")
    return {"one": torchrun(1, f"--save={registry}"), "two": torchrun(2), "registry": registry}


@pytest.fixture(scope="module")
def split() -> Any:
    dataset, _ = load_source(None, synthetic=SYNTHETIC_EVENTS, seed=0)
    return make_split(dataset, "loo", 0.2)


@pytest.mark.slow  # torchrun jobs
def test_both_ranks_end_with_identical_weights(reports: dict[str, Any]) -> None:
    two = reports["two"]
    assert two["world_size"] == 2
    assert two["dist_backend"] == "gloo"
    assert two["threads_per_process"] == 1
    assert two["replica_max_abs_difference"] == 0.0


@pytest.mark.slow  # torchrun jobs
def test_two_processes_reach_the_validation_ndcg_of_one(reports: dict[str, Any]) -> None:
    one, two = reports["one"], reports["two"]
    assert one["validation_ndcg@10"] > 0.1  # it learned something: popularity is far below
    assert abs(two["validation_ndcg@10"] - one["validation_ndcg@10"]) <= NDCG_TOLERANCE
    assert abs(two["test"]["ndcg@10"] - one["test"]["ndcg@10"]) <= NDCG_TOLERANCE
    assert two["best_epoch"] == one["best_epoch"]
    # the same global batches and the same gradient per step: the loss curves coincide
    np.testing.assert_allclose(
        [entry["loss"] for entry in two["history"]], [entry["loss"] for entry in one["history"]], rtol=1e-4
    )


@pytest.mark.slow  # torchrun jobs
def test_one_process_is_sasrec_fit_bit_for_bit(reports: dict[str, Any], split: Any) -> None:
    test, validation = split
    reference = SASRec(**PARAMS).fit(test.train, validation=validation)
    one = reports["one"]
    expected = [
        {key: round(float(value), 6) for key, value in entry.items() if key != "seconds"} for entry in reference.history
    ]
    assert [{key: value for key, value in entry.items() if key != "seconds"} for entry in one["history"]] == expected
    # the registered model (--save) is a plain SASRec with the reference's weights and config
    registry = ModelRegistry(reports["registry"] / "models")
    loaded = registry.load(one["version"])
    assert type(loaded.model) is SASRec
    assert loaded.model.config == reference.config
    assert loaded.manifest["training"]["distributed"] == {"world_size": 1, "dist_backend": "gloo"}
    mine, theirs = loaded.model._get_state(), reference._get_state()
    assert mine.keys() == theirs.keys()
    for key in theirs:
        np.testing.assert_array_equal(mine[key], theirs[key], err_msg=key)


# ------------------------------------------------------------------------------------------ a bad world
def torchrun_env(**values: str) -> dict[str, str]:
    return {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", **values}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT: not set; a distributed fit runs under torchrun"),
        (torchrun_env(WORLD_SIZE="two"), "WORLD_SIZE: expected an integer >= 1, got 'two'"),
        (torchrun_env(WORLD_SIZE="0"), "WORLD_SIZE: expected an integer >= 1, got 0"),
        (torchrun_env(RANK="2", WORLD_SIZE="2"), r"RANK: expected 0\.\.1 \(WORLD_SIZE=2\), got 2"),
        (torchrun_env(WORLD_SIZE="2", LOCAL_WORLD_SIZE="3"), "LOCAL_WORLD_SIZE: expected at most WORLD_SIZE=2, got 3"),
        (torchrun_env(MASTER_PORT="70000"), "MASTER_PORT: expected a TCP port in 1..65535, got 70000"),
    ],
)
def test_a_bad_environment_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        World.from_environment(env)


def test_a_batch_smaller_than_the_world_is_refused(monkeypatch: pytest.MonkeyPatch, split: Any) -> None:
    for key, value in torchrun_env(WORLD_SIZE="4").items():
        monkeypatch.setenv(key, value)
    test, validation = split
    with pytest.raises(ValueError, match=r"batch_size: .* expected batch_size >= 4, got 2"):
        fit_distributed(SASRecConfig(batch_size=2), test.train, validation)


def test_a_rank_trains_its_strided_share_weighted_by_its_positions() -> None:
    training = DistributedTraining(
        World.from_environment(torchrun_env(RANK="1", WORLD_SIZE="2")), torch.device("cpu"), 0
    )
    lengths = np.array([3, 5, 2, 4])  # positions (inputs): 2, 4, 1, 3
    rows, weight = training.share(np.array([0, 1, 2, 3]), lengths)
    assert rows.tolist() == [1, 3]
    assert weight == pytest.approx(2 * (4 + 3) / 10)  # world_size x this rank's share of the batch's positions
    rows, weight = training.share(np.array([2]), lengths)  # fewer users than ranks: step in time, add nothing
    assert rows.tolist() == [2] and weight == 0.0
    assert not training.reports  # only rank 0 shows progress


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without GPUs")
def test_nccl_without_gpus_is_refused() -> None:
    with pytest.raises(ValueError, match="dist_backend: 'nccl' needs CUDA GPUs and none is visible"):
        resolve_dist_backend("nccl", World.from_environment(torchrun_env()))


def test_a_missing_process_times_out_with_a_clear_error(monkeypatch: pytest.MonkeyPatch, split: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in torchrun_env(WORLD_SIZE="2", MASTER_PORT=str(port)).items():
        monkeypatch.setenv(key, value)
    test, validation = split
    with pytest.raises(RuntimeError, match=r"rank 0 of WORLD_SIZE=2 could not join the others .* within 1 s"):
        fit_distributed(SASRecConfig(**PARAMS), test.train, validation, dist_backend="gloo", timeout_s=1.0)
    assert not torch.distributed.is_initialized()


def test_the_command_outside_torchrun_says_how_to_start_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    assert main(["--synthetic", "1000"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("liverec.cli.distributed: error: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT: not set")
    assert "torchrun --standalone --nproc-per-node N -m liverec.cli.distributed" in error
    assert len(error.splitlines()) == 1
