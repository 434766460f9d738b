"""The batch-size experiment (``fastopt.experiments.batch_size``): its claim, and parity with PyTorch.

PyTorch runs the same plain loop from the same weights on the same shuffles, so in float64 the
training and validation losses of every epoch must agree to rounding (the two differ only in
summation order: measured relative differences ~1e-15 after 100 epochs; 1e-9 allows for other
BLAS builds). The lecture's claim at reduced size: after a fixed number of epochs, smaller
batches (more updates) reach lower training and validation losses.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastopt.experiments import batch_size


def test_losses_agree_with_the_same_loop_in_pytorch():
    pytest.importorskip("torch")
    r = batch_size.run(batch_sizes=(100, 700, 2000), epochs=4, torch=True)
    for row in r["rows"]:
        ours, theirs = np.array(row["history"]), np.array(row["torch_history"])
        assert ours.shape == theirs.shape == (4, 2)
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=0, err_msg=f"batch {row['batch_size']}")
        assert row["speedup"] > 0 and row["torch_time_s"] > 0


def test_smaller_batches_reach_lower_losses_in_the_same_epochs():
    r = batch_size.run(batch_sizes=(100, 500, 2000), epochs=100)      # the lecture's set-up (~0.2 s)
    train = [row["train_loss"] for row in r["rows"]]
    val = [row["val_loss"] for row in r["rows"]]
    assert train[0] < train[1] < train[2]
    assert val[0] < val[1] < val[2]
    assert train[0] < 0.25 * train[2]                 # not a marginal difference: 0.018 against 0.205
    assert [row["steps"] for row in r["rows"]] == [2000, 400, 100]
    noise_floor = r["noise"] ** 2
    assert train[0] > 0.5 * noise_floor          # no loss below what the noise allows on this data


def test_float32_runs_and_is_close_to_float64():
    r64 = batch_size.run(batch_sizes=(100,), epochs=5, n_train=500, n_val=100)
    r32 = batch_size.run(batch_sizes=(100,), epochs=5, n_train=500, n_val=100, dtype=np.float32)
    assert r32["dtype"] == "float32"
    assert abs(r32["rows"][0]["train_loss"] / r64["rows"][0]["train_loss"] - 1) < 1e-3
