"""Fine-tuning across resolutions and between ViT and Funnel-ViT (the seed's Table 3): trained
checkpoints load into all four combinations at a new resolution with no missing or unexpected
keys, the position embedding is a bicubic resize of the old grid, the class token's embedding
is kept, and the same grid is the identity."""

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import funnelbench as fb
from funnelbench.cli import app
from funnelbench.train import TrainConfig, Trainer, proxy_layout, read_checkpoint
from funnelbench.weights import load_vit_weights

VIT = "B3(17), h64, a2, img32, patch8"  # the same widths and depth as test-funnel
FUNNEL = "test-funnel"  # B1(17)-1(9)-1(5), h64, a2, img32, patch8
TINY = dict(train_per_class=16, val_per_class=8, batch_size=32)
TINY_FLAGS = ["--train-per-class", "16", "--val-per-class", "8", "--batch-size", "32"]
runner = CliRunner()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache(cache, monkeypatch):
    monkeypatch.setenv("FUNNELBENCH_CACHE", str(cache))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, cache):
    """One trained epoch of a 3-layer ViT and of a 3-stage Funnel-ViT (32 px, 4 x 4 patches)."""
    root = tmp_path_factory.mktemp("runs")
    for name, layout in (("vit", VIT), ("funnel", FUNNEL)):
        fb.train(layout, out=root / name, epochs=1, cache_dir=cache, **TINY)
    return {"vit": root / "vit" / "checkpoint.pt", "funnel": root / "funnel" / "checkpoint.pt"}


def bicubic_grid(pos, old, new):
    """The patch part of a (1, 1 + old*old, C) embedding resized with F.interpolate."""
    C = pos.shape[-1]
    grid = pos[:, 1:].reshape(1, old, old, C).permute(0, 3, 1, 2)
    return (
        F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
        .permute(0, 2, 3, 1)
        .reshape(1, new * new, C)
    )


@pytest.mark.parametrize("source", ["vit", "funnel"])
@pytest.mark.parametrize("target", [VIT, FUNNEL])
def test_all_four_combinations_load_at_a_new_resolution(checkpoints, source, target):
    saved = read_checkpoint(checkpoints[source])["model"]
    model = fb.build_model(proxy_layout(target, 48), num_classes=8)
    report = load_vit_weights(model, read_checkpoint(checkpoints[source]))
    assert (report.new, report.unused, report.skipped, report.resized) == ([], [], [], ["pos_embed"])
    assert len(report.loaded) == len(model.state_dict()) - 1
    state = model.state_dict()
    assert state["pos_embed"].shape == (1, 1 + 6 * 6, 64)
    assert torch.equal(state["pos_embed"][:, 0], saved["pos_embed"][:, 0])  # class token's embedding unchanged
    assert torch.allclose(state["pos_embed"][:, 1:], bicubic_grid(saved["pos_embed"], 4, 6), atol=1e-6)
    for key in state:
        if key != "pos_embed":
            assert torch.equal(state[key], saved[key]), key
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 3, 48, 48))).all()


def test_14x14_to_24x24_is_a_bicubic_resize(tmp_path):
    vit = fb.build_model("B2(197), h32, a2", num_classes=10)  # 224 px, 16 px patches: 14 x 14
    torch.save(vit.state_dict(), tmp_path / "vit.pt")
    big = fb.build_model(proxy_layout("B1(197)-1(99), h32, a2", 384), num_classes=10)  # Funnel-ViT at 24 x 24
    report = load_vit_weights(big, read_checkpoint(tmp_path / "vit.pt"))
    assert report.resized == ["pos_embed"] and not report.new and not report.unused
    assert torch.equal(big.pos_embed[:, 0], vit.pos_embed[:, 0])
    assert torch.allclose(big.pos_embed[:, 1:], bicubic_grid(vit.pos_embed, 14, 24), atol=1e-6)


def test_same_grid_is_the_identity(checkpoints, tmp_path):
    trainer = Trainer(
        TrainConfig(layout=FUNNEL, finetune_from=str(checkpoints["funnel"]), epochs=1, **TINY), out=tmp_path / "same"
    )
    saved = read_checkpoint(checkpoints["funnel"])["model"]
    state = trainer.model.state_dict()
    assert trainer.init_report.resized == [] and all(torch.equal(state[k], saved[k]) for k in saved)


def test_finetune_into_a_funnel_at_48px_trains_on(checkpoints, tmp_path):
    record = fb.finetune(checkpoints["vit"], FUNNEL, image_size=48, out=tmp_path / "ft", epochs=1, classes=4, **TINY)
    assert record["status"] == "completed" and record["layout"] == "B1(37)-1(19)-1(10), h64, a2, img48, patch8"
    assert record["finetune_from"] == str(checkpoints["vit"])
    assert record["init_resized"] == "pos_embed" and record["init_new"] == ""
    assert record["init_skipped"] == "head.weight,head.bias"  # 4 classes now, 8 before: a new head


def test_finetune_command(checkpoints, tmp_path):
    result = runner.invoke(
        app,
        [
            "finetune",
            str(checkpoints["funnel"]),
            "--image-size",
            "48",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "ft"),
            "--json",
            *TINY_FLAGS,
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["layout"] == "B1(37)-1(19)-1(10), h64, a2, img48, patch8"  # the checkpoint's layout, at 48 px
    assert record["lr"] == 1e-4 and record["init_resized"] == "pos_embed"
    assert "resized pos_embed" in result.stderr


@pytest.mark.parametrize(
    "layout, words",
    [
        (None, ["does not say its layout", "--layout"]),
        ("test-vit", ["unexpected keys", "widths and depth must match"]),
        ("B3(17), h96, a2, img32, patch8", ["checkpoint (", "widths and depth must match"]),
    ],
)
def test_finetune_errors_are_one_line(checkpoints, tmp_path, layout, words):
    plain = tmp_path / "plain.pt"
    torch.save(read_checkpoint(checkpoints["vit"])["model"], plain)
    args = ["finetune", str(plain), "--out", str(tmp_path / "ft"), *TINY_FLAGS] + (
        ["--layout", layout] if layout else []
    )
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err
    for word in words:
        assert word in err
    ok = runner.invoke(
        app, ["finetune", str(plain), "--layout", FUNNEL, "--epochs", "1", "--out", str(tmp_path / "ok"), *TINY_FLAGS]
    )
    assert ok.exit_code == 0, ok.output


def test_missing_checkpoint(tmp_path):
    result = runner.invoke(app, ["finetune", str(tmp_path / "nope.pt"), "--layout", FUNNEL])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_a_resumed_finetune_needs_only_its_own_checkpoint(checkpoints, tmp_path):
    """Stopped after epoch 1 of 2, the source deleted, resumed (from the library and the command
    line, the layout read from the run's own checkpoint): the straight run's numbers."""
    source = tmp_path / "source.pt"
    source.write_bytes(checkpoints["funnel"].read_bytes())
    kw = dict(image_size=48, epochs=2, **TINY)
    straight = fb.finetune(source, out=tmp_path / "straight", **kw)
    for name, how in (("lib", "library"), ("cli", "command")):
        out = tmp_path / name
        stopped = fb.finetune(source, out=out, callback=lambda m: "stop", **kw)
        assert stopped["status"] == "stopped" and stopped["epochs_done"] == 1
        moved = source.with_suffix(".moved")
        source.rename(moved)
        try:
            if how == "library":
                done = fb.finetune(source, out=out, resume=True, **kw)
            else:
                result = runner.invoke(
                    app,
                    [
                        "finetune",
                        str(source),
                        "--out",
                        str(out),
                        "--resume",
                        "--json",
                        "--image-size",
                        "48",
                        "--epochs",
                        "2",
                        "--lr",
                        "1e-3",
                        "--warmup-epochs",
                        "1",
                        *TINY_FLAGS,
                    ],
                )
                assert result.exit_code == 0, result.output
                done = json.loads(result.stdout)
        finally:
            moved.rename(source)
        assert done["status"] == "completed" and done["epochs_done"] == 2
        assert done["val_loss"] == straight["val_loss"] and done["init_resized"] == "pos_embed"
