"""The trainer as a component of a search: injected data, the callback's decisions (also
across two gloo processes), checkpoint policies, the proxy's width, release of memory over
many runs in one process, and the caller's global state left alone (by fb.profile too)."""

import csv
import io
import json
import os
import random
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pytest
import torch

import funnelbench as fb
from funnelbench import profiling
from funnelbench.data import CACHE_ENV
from funnelbench.train import CONTINUE, PRUNE, STOP, TrainConfig, Trainer, proxy_layout, remove_checkpoint

train_module = sys.modules["funnelbench.train"]  # (funnelbench.train, the attribute, is the function)
TINY = dict(train_per_class=16, val_per_class=8, batch_size=32)  # 128 / 64 images, 4 steps an epoch


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture
def data(tmp_path):
    return fb.load_data(None, image_size=32, train_per_class=16, val_per_class=8, cache_dir=tmp_path / "cache")


def history(out):
    with open(out / "history.csv") as f:
        return list(csv.DictReader(f))


def no_timing(rows):
    return [{k: v for k, v in r.items() if k not in ("train_img_per_s", "epoch_s", "eval_s")} for r in rows]


# ----------------------------------------------------------------------------- injected data


def test_injected_data_is_not_loaded_again_and_trains_the_same(tmp_path, data, monkeypatch):
    loaded = fb.train("test-vit", out=tmp_path / "loaded", epochs=2, **TINY)

    def no_loading(*args, **kwargs):
        raise AssertionError("the trainer loaded data although it was given")

    monkeypatch.setattr(train_module, "load_data", no_loading)
    given = fb.train("test-vit", data=data, out=tmp_path / "given", epochs=2, **TINY)
    assert no_timing(history(tmp_path / "given")) == no_timing(history(tmp_path / "loaded"))
    assert given["val_top1"] == loaded["val_top1"] and given["train_images"] == 128
    with pytest.raises(fb.UsageError, match="at 32 px but the proxy trains at 48 px; load it with image_size=48"):
        fb.train("test-vit", data=data, out=tmp_path / "wrong", image_size=48, **TINY)
    assert not (tmp_path / "wrong").exists()


# ----------------------------------------------------------------------------- decisions


@pytest.mark.parametrize("decision, status", [(PRUNE, "pruned"), (STOP, "stopped"), (True, "stopped")])
def test_the_callback_prunes_or_stops(tmp_path, data, decision, status):
    seen = []

    def callback(metrics):
        seen.append(metrics["epoch"])
        return decision if metrics["epoch"] == 2 else CONTINUE

    record = fb.train("test-vit", data=data, out=tmp_path / "r", epochs=4, callback=callback, **TINY)
    assert seen == [1, 2] and record["status"] == status and record["epochs_done"] == 2
    assert [row["status"] for row in history(tmp_path / "r")] == ["running", status]
    assert json.loads((tmp_path / "r" / "record.json").read_text())[0]["status"] == status


def test_a_callback_returning_nonsense_is_named(tmp_path, data):
    with pytest.raises(fb.UsageError, match="returned 'maybe'; return None, 'continue', 'prune' or 'stop'"):
        fb.train("test-vit", data=data, out=tmp_path / "r", epochs=2, callback=lambda m: "maybe", **TINY)
    assert json.loads((tmp_path / "r" / "record.json").read_text())[0]["status"] == "interrupted"


_DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch.distributed as dist
    import funnelbench as fb
    from funnelbench.train import PRUNE

    out = sys.argv[1]
    dist.init_process_group("gloo")  # owned by the script: both runs share it
    rank = dist.get_rank()
    seen = []
    def prune(metrics):
        seen.append(metrics["epoch"])
        return PRUNE
    rec = fb.train("test-vit", out=out + "/pruned", epochs=3, device="cpu", callback=prune,
                   train_per_class=16, val_per_class=8, batch_size=32)
    def boom(metrics):
        raise RuntimeError("rank 0's callback broke")
    try:
        fb.train("test-vit", out=out + "/failed", epochs=3, device="cpu", callback=boom,
                 train_per_class=16, val_per_class=8, batch_size=32)
        failed = "no error"
    except Exception as err:
        failed = type(err).__name__
    print(json.dumps({"rank": rank, "status": rec["status"], "epochs": rec["epochs_done"], "seen": seen,
                      "failed": failed}))
    dist.destroy_process_group()
""")


def test_two_gloo_processes_prune_after_epoch_1_and_survive_a_failing_callback(tmp_path):
    """Rank 0 alone asks the callback; its PRUNE reaches rank 1 (nobody waits in a collective),
    and when its callback raises, rank 1 stops too instead of hanging."""
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = sorted(
        (json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")), key=lambda r: r["rank"]
    )
    assert [r["rank"] for r in lines] == [0, 1]
    assert all(r["status"] == "pruned" and r["epochs"] == 1 for r in lines)
    assert lines[0]["seen"] == [1] and lines[1]["seen"] == []  # the callback runs on rank 0 only
    assert lines[0]["failed"] == "RuntimeError" and lines[1]["failed"] == "_RankZeroFailed"
    record = json.loads((tmp_path / "pruned" / "record.json").read_text())[0]
    assert record["status"] == "pruned" and record["world_size"] == 2 and record["epochs_done"] == 1
    assert json.loads((tmp_path / "failed" / "record.json").read_text())[0]["status"] == "interrupted"


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_policies(tmp_path, data):
    saved = {}
    for policy in ("every-epoch", "last", "none"):
        epochs_checkpointed = []

        def callback(metrics, out=tmp_path / policy, seen=epochs_checkpointed):
            path = out / "checkpoint.pt"
            seen.append(torch.load(path, weights_only=True)["epoch"] if path.exists() else None)

        record = fb.train(
            "test-vit", data=data, out=tmp_path / policy, epochs=2, checkpoint=policy, callback=callback, **TINY
        )
        saved[policy] = record
        assert record["status"] == "completed" and (tmp_path / policy / "record.json").exists()
        assert len(history(tmp_path / policy)) == 2
        # the callback runs before the epoch's checkpoint is written
        assert epochs_checkpointed == {"every-epoch": [None, 1], "last": [None, None], "none": [None, None]}[policy]
    assert torch.load(tmp_path / "last" / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert not (tmp_path / "none" / "checkpoint.pt").exists()
    assert saved["none"]["val_top1"] == saved["every-epoch"]["val_top1"]  # the policy changes no number
    with pytest.raises(fb.UsageError, match="no checkpoint in .* --checkpoint last or none"):
        fb.train("test-vit", data=data, out=tmp_path / "none", epochs=3, checkpoint="none", resume=True, **TINY)
    # the caller removes a finished run's checkpoint; record and history stay
    assert remove_checkpoint(tmp_path / "last") and not remove_checkpoint(tmp_path / "last")
    assert not (tmp_path / "last" / "checkpoint.pt").exists() and (tmp_path / "last" / "record.json").exists()


def test_the_checkpoint_is_saved_straight_into_a_temporary_file(tmp_path, data, monkeypatch):
    targets = []
    real = torch.save

    def spy(obj, f, *args, **kwargs):
        targets.append(f)
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", spy)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # from a killed save
    fb.train("test-vit", data=data, out=tmp_path / "r", epochs=1, **TINY)
    assert len(targets) == 1 and not isinstance(targets[0], io.BytesIO)
    name = os.path.basename(targets[0].name)
    assert name.startswith(".checkpoint.pt.") and name.endswith(".tmp")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["checkpoint.pt", "history.csv", "record.json"]


# ----------------------------------------------------------------------------- the proxy


def test_width_scale_keeps_the_heads_and_rounds_the_width():
    base = proxy_layout("vit-b16")
    quarter = proxy_layout("vit-b16", width_scale=0.25)
    assert [(s.hidden, s.heads, s.mlp) for s in quarter.stages] == [(192, 12, 768)]
    assert quarter.stages[0].layers == base.stages[0].layers and quarter.stages[0].tokens == 197
    odd = proxy_layout("B2(17)-2(9), h96, a3, img32, patch8", width_scale=0.3)  # 28.8 -> 30 (a multiple of 3)
    assert [(s.hidden, s.heads, s.mlp) for s in odd.stages] == [(30, 3, 115), (30, 3, 115)]
    assert str(odd) == str(fb.parse_layout(str(odd)))  # a valid layout: it parses back to itself
    small = proxy_layout("B6(197)-6(99)", 56, 4, width_scale=0.5)
    assert [s.tokens for s in small.stages] == [197, 99] and small.stages[0].hidden == 384
    for bad in (0, -0.5, 1.5, float("nan")):
        with pytest.raises(fb.UsageError, match="--width-scale"):
            proxy_layout("test-vit", width_scale=bad)
        with pytest.raises(fb.UsageError, match="--width-scale"):
            TrainConfig(layout="test-vit", width_scale=bad)


def test_the_record_carries_the_target_beside_the_proxy(tmp_path, data):
    target = "B2(17), h128, a4, img32, patch8"
    record = fb.train(target, data=data, out=tmp_path / "r", epochs=1, width_scale=0.5, **TINY)
    assert record["target_layout"] == target and record["layout"] == "B2(17), h64, a4, img32, patch8"
    assert record["target_params"] == fb.count(target, num_classes=8).params
    assert record["target_macs"] == fb.count(target, num_classes=8).macs
    assert record["params"] == fb.count(record["layout"], num_classes=8).params < record["target_params"]
    assert record["width_scale"] == 0.5


# ----------------------------------------------------------------------------- release and global state


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_thirty_runs_in_one_process_release_their_memory(tmp_path):
    """A model of ~0.4 M parameters: a run that kept its model, gradients and AdamW state would
    keep ~6 MB, so 27 of them would add ~160 MB. The model and optimizer are freed as the trainer
    closes, by reference counting alone (no gc.collect)."""
    data = fb.load_data(None, image_size=32, train_per_class=4, val_per_class=2, cache_dir=tmp_path / "cache")
    layout = "B2(17), h128, a2, img32, patch8"
    rss = []
    for i in range(30):
        fb.train(layout, data=data, out=tmp_path / "runs" / str(i), epochs=1, batch_size=16, checkpoint="none")
        rss.append(_rss())
    assert rss[29] - rss[2] < 16 * 2**20, [r // 2**20 for r in rss]
    with Trainer(TrainConfig(layout=layout, epochs=1, batch_size=16), out=tmp_path / "t", data=data) as trainer:
        model, optimizer = weakref.ref(trainer.model), weakref.ref(trainer.optimizer)
        trainer.fit()
    assert model() is None and optimizer() is None and trainer.data is None and trainer.train_loader is None


def test_the_callers_random_states_and_threads_are_unchanged(tmp_path, data):
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    threads = torch.get_num_threads()
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    seen_threads = []
    fb.train(
        "test-vit",
        data=data,
        out=tmp_path / "r",
        epochs=1,
        threads=threads + 1,
        mixup=0.2,
        callback=lambda m: seen_threads.append(torch.get_num_threads()),
        **TINY,
    )
    assert seen_threads == [threads + 1] and torch.get_num_threads() == threads
    after = (torch.get_rng_state(), np.random.get_state()[1], random.getstate())
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]
    # a failure restores them too
    with pytest.raises(fb.UsageError):
        fb.train("test-vit", data=data, out=tmp_path / "bad", threads=threads + 1, batch_size=4096)
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), before[0])


def test_profile_warms_the_process_once_and_keeps_the_callers_rng(monkeypatch):
    warmed = []
    monkeypatch.setattr(profiling, "_WARMED", set())
    monkeypatch.setattr(profiling, "_warm_up_process", lambda *args: warmed.append(str(args[0])))
    torch.manual_seed(7)
    random.seed(7)
    state, py = torch.get_rng_state(), random.getstate()
    fast = dict(batch_size=2, warmup=0, repeats=1, memory=False, device="cpu")
    for _ in range(3):
        fb.profile("test-vit", **fast)
    assert len(warmed) == 1
    assert torch.equal(torch.get_rng_state(), state) and random.getstate() == py
