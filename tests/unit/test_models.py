"""Tests for xray_platform.core.models: architecture, init, losses, model files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torchvision

from xray_platform import __version__
from xray_platform.core.models import (
    DEPTHS,
    INITS,
    TASKS,
    XrpNet,
    beta_nll,
    build_model,
    gaussian_nll,
    lattice_loss,
    load_model,
    model_summary,
    p_multi,
    resolution_from_output,
    resolution_params,
    save_model,
)
from xray_platform.core.preprocess import Preprocessing
from xray_platform.io.model_file import MODEL_FORMAT, MODEL_FORMAT_VERSION


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _x(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 1, size, size)


def _meta(**extra) -> dict:
    return {"preprocessing": Preprocessing(grid_size=64).to_dict(), "label": "d_vis", **extra}


def test_constants() -> None:
    assert TASKS == ("lattice", "resolution")
    assert DEPTHS == (18, 34, 50)
    assert INITS == ("scratch", "imagenet", "transfer")
    assert MODEL_FORMAT == "xrp-model" and MODEL_FORMAT_VERSION == 1


@pytest.mark.parametrize("depth", DEPTHS)
def test_output_shapes_every_task_and_depth(depth: int) -> None:
    x = _x()
    for task in TASKS:
        model = build_model(task, depth).eval()
        assert model.task == task and model.depth == depth
        assert model.trunk.conv1.weight.shape == (64, 1, 7, 7)
        assert isinstance(model.trunk.fc, torch.nn.Identity)
        assert model.head.in_features == (2048 if depth == 50 else 512)
        with torch.no_grad():
            out = model(x)
        assert out.shape == ((2, 1) if task == "lattice" else (2, 2))
        assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_bad_input_shape() -> None:
    model = XrpNet("lattice", 18)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(torch.rand(2, 3, 64, 64))


def test_unknown_choices_list_valid_ones() -> None:
    with pytest.raises(ValueError, match="lattice, resolution"):
        build_model("mosaicity", 18)
    with pytest.raises(ValueError, match="18, 34, 50"):
        build_model("lattice", 101)
    with pytest.raises(ValueError, match="scratch, imagenet, transfer"):
        build_model("lattice", 18, "random")


def test_scratch_init_kaiming_and_bn() -> None:
    model = build_model("lattice", 18)
    for name in ("conv1", "layer4.1.conv2"):
        w = model.trunk.get_submodule(name).weight
        fan_out = w.shape[0] * w.shape[2] * w.shape[3]
        expected = math.sqrt(2.0 / fan_out)
        assert w.std().item() == pytest.approx(expected, rel=0.06), name
        assert abs(w.mean().item()) < 0.1 * expected
    bn = model.trunk.layer2[0].bn1
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))


def test_resolution_head_starting_point() -> None:
    model = build_model("resolution", 18).eval()
    with torch.no_grad():
        mu, sigma = resolution_params(model(_x()))
    assert mu.shape == sigma.shape == (2,)
    assert torch.allclose(mu, torch.full_like(mu, 0.4), atol=0.05)
    assert torch.allclose(sigma, torch.full_like(sigma, 0.05), atol=0.01)


# --------------------------------------------------------------------------- imagenet init

def _save_resnet(tmp_path: Path, depth: int) -> tuple[Path, dict]:
    sd = getattr(torchvision.models, f"resnet{depth}")(weights=None).state_dict()
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(sd, path)
    return path, sd


def test_imagenet_init_from_local_file(tmp_path: Path) -> None:
    path, sd = _save_resnet(tmp_path, 18)
    model = build_model("resolution", 18, "imagenet", imagenet_weights=path)
    assert torch.allclose(model.trunk.conv1.weight, sd["conv1.weight"].mean(dim=1, keepdim=True))
    assert torch.equal(model.trunk.layer1[0].conv1.weight, sd["layer1.0.conv1.weight"])
    assert torch.equal(model.trunk.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])
    assert model.head.out_features == 2  # fc ignored
    with torch.no_grad():
        assert model.eval()(_x()).shape == (2, 2)


def test_imagenet_init_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="imagenet init needs a local weights file"):
        build_model("lattice", 18, "imagenet")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model("lattice", 18, "imagenet", imagenet_weights=tmp_path / "nope.pth")
    path34, _ = _save_resnet(tmp_path, 34)
    with pytest.raises(ValueError, match=r"resnet18.*resnet34"):
        build_model("lattice", 18, "imagenet", imagenet_weights=path34)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match="cannot read imagenet weights"):
        build_model("lattice", 18, "imagenet", imagenet_weights=junk)


# --------------------------------------------------------------------------- transfer init

def test_transfer_from_lattice_model(tmp_path: Path) -> None:
    src = build_model("lattice", 18)
    path = save_model(tmp_path / "lattice.pt", src, _meta(label="is_multi"))
    model = build_model("resolution", 18, "transfer", transfer_from=path)
    src_trunk, new_trunk = src.trunk.state_dict(), model.trunk.state_dict()
    assert src_trunk.keys() == new_trunk.keys()
    assert all(torch.equal(src_trunk[k], new_trunk[k]) for k in src_trunk)
    assert model.task == "resolution" and model.head.out_features == 2
    fresh = build_model("resolution", 18)
    assert not torch.equal(model.trunk.layer1[0].conv1.weight, fresh.trunk.layer1[0].conv1.weight)


def test_transfer_from_a_model_of_the_same_task_takes_its_head_too(tmp_path: Path) -> None:
    src = build_model("lattice", 18)
    torch.nn.init.normal_(src.head.weight)
    path = save_model(tmp_path / "lattice.pt", src, _meta(label="is_multi"))
    model = build_model("lattice", 18, "transfer", transfer_from=path)
    assert torch.equal(model.head.weight, src.head.weight)
    assert torch.equal(model.head.bias, src.head.bias)
    other = build_model("resolution", 18, "transfer", transfer_from=path)
    assert not torch.equal(other.head.weight[:1], src.head.weight[:1])


def test_transfer_errors(tmp_path: Path) -> None:
    path = save_model(tmp_path / "m18.pt", build_model("lattice", 18), _meta())
    with pytest.raises(ValueError, match=r"ResNet-18.*ResNet-34"):
        build_model("lattice", 34, "transfer", transfer_from=path)
    resnet_path, _ = _save_resnet(tmp_path, 18)
    with pytest.raises(ValueError, match="not an xrp model file"):
        build_model("lattice", 18, "transfer", transfer_from=resnet_path)
    with pytest.raises(ValueError, match="transfer_from"):
        build_model("lattice", 18, "transfer")


# --------------------------------------------------------------------------- model files

def test_save_load_round_trip(tmp_path: Path) -> None:
    model = build_model("resolution", 18)
    model.train()
    with torch.no_grad():
        model(_x(4))  # move BN running stats away from their defaults
    model.eval()
    meta = _meta(init="scratch", training_data="sim-v1", metrics={"val_nll": -1.5, "mae_A": 0.2})
    path = save_model(tmp_path / "sub" / "res.pt", model, meta)
    assert path == tmp_path / "sub" / "res.pt" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["res.pt"]  # no temp files left
    assert "task" not in meta  # caller's dict untouched

    raw = torch.load(path, weights_only=True)
    assert raw["format"] == MODEL_FORMAT and raw["format_version"] == 1
    assert isinstance(raw["metadata"], str)
    assert all(t.device.type == "cpu" for t in raw["state_dict"].values())

    loaded, meta2 = load_model(path)
    assert isinstance(loaded, XrpNet) and not loaded.training
    assert (loaded.task, loaded.depth) == ("resolution", 18)
    assert meta2 == {**meta, "task": "resolution", "depth": 18, "xrp_version": __version__}
    assert Preprocessing.from_dict(meta2["preprocessing"]) == Preprocessing(grid_size=64)
    x = _x()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_save_strips_ddp_prefix(tmp_path: Path) -> None:
    model = build_model("lattice", 18)
    wrapped = torch.nn.Module()
    wrapped.module = model  # what DDP looks like to state_dict()
    path = save_model(tmp_path / "m.pt", wrapped, _meta())  # type: ignore[arg-type]
    raw = torch.load(path, weights_only=True)
    assert not any(k.startswith("module.") for k in raw["state_dict"])
    loaded, _ = load_model(path)
    assert torch.equal(loaded.head.weight, model.head.weight)


def test_save_metadata_errors(tmp_path: Path) -> None:
    model = build_model("lattice", 18)
    with pytest.raises(ValueError, match="metrics"):
        save_model(tmp_path / "m.pt", model, _meta(metrics={"auc": torch.tensor(0.9)}))
    with pytest.raises(ValueError, match="when"):
        save_model(tmp_path / "m.pt", model, _meta(when=object()))
    with pytest.raises(ValueError, match="label"):
        save_model(tmp_path / "m.pt", model, {"preprocessing": Preprocessing().to_dict()})
    with pytest.raises(ValueError, match="preprocessing"):
        save_model(tmp_path / "m.pt", model, {"label": "is_multi"})
    with pytest.raises(ValueError, match="task"):
        save_model(tmp_path / "m.pt", model, _meta(task="resolution"))
    assert list(tmp_path.iterdir()) == []  # nothing written on failure


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(ValueError, match="not an xrp model file"):
        load_model(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not an xrp model file"):
        load_model(other)
    good = save_model(tmp_path / "good.pt", build_model("lattice", 18), _meta())
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ValueError, match="corrupt"):
        load_model(truncated)
    raw = torch.load(good, weights_only=True)
    raw["format_version"] = 99
    newer = tmp_path / "newer.pt"
    torch.save(raw, newer)
    with pytest.raises(ValueError, match="v99"):
        load_model(newer)


def test_model_summary() -> None:
    meta = {**_meta(init="imagenet", metrics={"mae_A": 0.1234567, "note": "x"}),
            "task": "resolution", "depth": 34}
    s = model_summary(meta)
    assert "\n" not in s
    for part in ("resolution", "34", "imagenet", "d_vis", "mae_A=0.1235"):
        assert part in s
    assert "note" not in s and "background" not in s
    assert json.dumps(meta)  # summary does not mutate / require anything exotic
    meta["preprocessing"] = {**meta.get("preprocessing", {}), "grid_size": 128,
                             "background": "radial-median"}
    assert "background=radial-median" in model_summary(meta)


# --------------------------------------------------------------------------- losses and outputs

def test_resolution_from_output_by_hand() -> None:
    raw = torch.tensor([[0.3, -1.0], [2.0, 0.5]])
    lo, hi = 1 / 12, 1 / 0.8  # predicted 1/d is bounded to (1/12, 1/0.8) 1/Å
    mu_exp = lo + (hi - lo) / (1 + torch.exp(-raw[:, 0]))
    sigma_exp = torch.log1p(torch.exp(raw[:, 1])) + 1e-4
    mu, sigma = resolution_params(raw)
    assert torch.allclose(mu, mu_exp) and torch.allclose(sigma, sigma_exp)
    d, sd = resolution_from_output(raw)
    assert torch.allclose(d, 1.0 / mu_exp)
    assert torch.allclose(sd, sigma_exp / mu_exp**2)
    # mu = 0.5 1/Å, sigma = 0.05 -> d = 2 Å, sigma_d = 0.2 Å
    d, sd = resolution_from_output(_raw(0.5, 0.05))
    assert d.item() == pytest.approx(2.0, rel=1e-5)
    assert sd.item() == pytest.approx(0.2, rel=1e-4)


def _raw(mu: float, sigma: float, n: int = 1) -> torch.Tensor:
    """Raw head outputs that map to (mu, sigma) of 1/d."""
    lo, hi = 1 / 12, 1 / 0.8
    frac = (mu - lo) / (hi - lo)
    return torch.tensor([[math.log(frac / (1 - frac)), math.log(math.expm1(sigma - 1e-4))]] * n)


def test_gaussian_nll() -> None:
    target = torch.tensor([0.5])
    near, far = gaussian_nll(_raw(0.48, 0.05), target), gaussian_nll(_raw(0.30, 0.05), target)
    assert near < far
    # error 0.1: sigma = 0.1 (calibrated) beats over- and under-confident sigmas
    err_t = torch.tensor([0.6])
    calibrated = gaussian_nll(_raw(0.5, 0.1), err_t)
    assert calibrated < gaussian_nll(_raw(0.5, 0.01), err_t)
    assert calibrated < gaussian_nll(_raw(0.5, 1.0), err_t)
    # value by hand (no constant): log(sigma) + 0.5 z^2
    assert calibrated.item() == pytest.approx(math.log(0.1) + 0.5, rel=1e-4)
    # mean over the batch; gradients flow
    raw = _raw(0.4, 0.05, n=3).requires_grad_(True)
    loss = gaussian_nll(raw, torch.tensor([0.4, 0.5, 0.6]))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0


def test_lattice_loss_and_p_multi() -> None:
    out = torch.tensor([[0.0], [2.0], [-3.0]])
    p = p_multi(out)
    assert p.shape == (3,)
    assert torch.allclose(p, torch.tensor([0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(3))]))
    labels = torch.tensor([1, 1, 0])
    expected = -(math.log(0.5) + math.log(p[1].item()) + math.log(1 - p[2].item())) / 3
    assert lattice_loss(out, labels).item() == pytest.approx(expected, rel=1e-5)
    assert lattice_loss(out, labels) < lattice_loss(out, 1 - labels)
    with pytest.raises(ValueError):
        p_multi(torch.zeros(3, 2))


def test_channels_last_same_outputs() -> None:
    for task in TASKS:
        model = build_model(task, 18).eval()
        x = _x()
        with torch.no_grad():
            ref = model(x)
            model = model.to(memory_format=torch.channels_last)
            assert model.trunk.conv1.weight.is_contiguous(memory_format=torch.channels_last)
            out = model(x.to(memory_format=torch.channels_last))
        assert torch.allclose(ref, out, atol=1e-5, rtol=1e-4)


def test_beta_nll_keeps_the_calibrated_sigma_and_damps_overconfident_steps() -> None:
    target = torch.tensor([0.4, 0.5, 0.45])
    raw = _raw(0.48, 0.05, 3)
    assert beta_nll(raw, target, beta=0.0) == pytest.approx(float(gaussian_nll(raw, target)))
    # d loss / d sigma vanishes at the calibrated sigma for any beta (the weight is constant)
    err = torch.tensor([0.1])
    for beta in (0.0, 0.5):
        r = _raw(0.5, 0.1).clone().requires_grad_(True)
        beta_nll(r, 0.5 + err, beta).backward()
        assert abs(float(r.grad[0, 1])) < 1e-4  # vs 0.15 at sigma 0.05
    # an overconfident shot (sigma 0.001, error 0.1): the step on mu is sigma times smaller
    grads = []
    for beta in (0.0, 0.5):
        r = _raw(0.45, 0.001).clone().requires_grad_(True)
        beta_nll(r, torch.tensor([0.55]), beta).backward()
        grads.append(float(r.grad[0, 0]))
    assert grads[1] == pytest.approx(grads[0] * 0.001, rel=1e-2)
