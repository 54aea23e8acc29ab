"""Networks for the two xrp tasks, their losses, and the xrp model file.

A model is a torchvision ResNet-18/34/50 trunk with a one-channel stem and a small task head:

* ``lattice``: one logit of P(multi-lattice).
* ``resolution``: two raw outputs mapped by :func:`resolution_params` to a Gaussian over 1/d
  (mean, sigma in 1/Å); :func:`resolution_from_output` turns that into d and its sigma in Å.

A model file (:func:`save_model` / :func:`load_model`, format in io/model_file.py) carries its
metadata (task, depth, preprocessing, label, ...), so the architecture never has to be passed
around.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from xray_platform.core.preprocess import Preprocessing
from xray_platform.io.model_file import read_metadata, read_model_file, write_model_file

TASKS = ("lattice", "resolution")
DEPTHS = (18, 34, 50)
INITS = ("scratch", "imagenet", "transfer")

#: Resolution head starts at mu = 0.4 1/Å (d = 2.5 Å) and sigma = 0.05 1/Å.
MU0_INV_D = 0.4
SIGMA0_INV_D = 0.05
SIGMA_FLOOR = 1e-4
_MU_FLOOR = 1e-6  # keeps d = 1/mu finite
#: Predicted 1/d is bounded to (MU_MIN, MU_MAX) 1/Å, i.e. d in (0.8, 12) Å: a sigmoid keeps a
#: half-trained network from predicting absurd resolutions (d = 1/mu explodes as mu -> 0).
MU_MIN_INV_D = 1.0 / 12.0
MU_MAX_INV_D = 1.0 / 0.8

_RESNETS: dict[int, Callable[..., torchvision.models.ResNet]] = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
}
_HEAD_OUT = {"lattice": 1, "resolution": 2}
_REQUIRED_METADATA = ("preprocessing", "label")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP, torch.compile


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r} (choose from: "
                         f"{', '.join(str(c) for c in choices)})")


def _softplus_inv(y: float) -> float:
    return math.log(math.expm1(y))


class XrpNet(nn.Module):
    """ResNet trunk (1-channel stem, fc = Identity) plus a linear task head.

    ``forward`` returns raw outputs: (N, 1) lattice logits or (N, 2) resolution raw values.
    """

    def __init__(self, task: str, depth: int) -> None:
        super().__init__()
        _check_choice("task", task, TASKS)
        _check_choice("depth", depth, DEPTHS)
        self.task = task
        self.depth = depth
        trunk = _RESNETS[depth](weights=None)
        trunk.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.num_features: int = trunk.fc.in_features
        trunk.fc = nn.Identity()
        self.trunk = trunk
        self.head = nn.Linear(self.num_features, _HEAD_OUT[task])
        self.init_scratch()

    def init_scratch(self) -> None:
        """Kaiming-normal (fan_out, relu) convs, BN weight 1 / bias 0, fresh head."""
        for m in self.trunk.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.reset_head()

    def reset_head(self) -> None:
        """Small random head weights; resolution bias so mu ~ 0.4 and sigma ~ 0.05 1/Å."""
        nn.init.normal_(self.head.weight, std=0.01)
        with torch.no_grad():
            if self.task == "resolution":
                frac = (MU0_INV_D - MU_MIN_INV_D) / (MU_MAX_INV_D - MU_MIN_INV_D)
                self.head.bias.copy_(torch.tensor([math.log(frac / (1 - frac)),
                                                   _softplus_inv(SIGMA0_INV_D - SIGMA_FLOOR)]))
            else:
                self.head.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"XrpNet expects input (N, 1, H, W), got {tuple(x.shape)}")
        return self.head(self.trunk(x))

    def extra_repr(self) -> str:
        return f"task={self.task!r}, depth={self.depth}"


# --------------------------------------------------------------------------- outputs and losses

def _check_out(out: Tensor, width: int, what: str) -> None:
    if out.ndim != 2 or out.shape[1] != width:
        raise ValueError(f"{what} output must be (N, {width}), got {tuple(out.shape)}")


def resolution_params(out: Tensor) -> tuple[Tensor, Tensor]:
    """Raw (N, 2) resolution output -> (mu, sigma) of 1/d in 1/Å, each (N,)."""
    _check_out(out, 2, "resolution")
    mu = MU_MIN_INV_D + (MU_MAX_INV_D - MU_MIN_INV_D) * torch.sigmoid(out[:, 0])
    sigma = F.softplus(out[:, 1]) + SIGMA_FLOOR
    return mu, sigma


def resolution_from_output(out: Tensor) -> tuple[Tensor, Tensor]:
    """Raw (N, 2) resolution output -> (d, sigma_d) in Å: d = 1/mu, sigma_d = sigma/mu²."""
    mu, sigma = resolution_params(out)
    mu = mu.clamp_min(_MU_FLOOR)
    return 1.0 / mu, sigma / mu**2


def gaussian_nll(out: Tensor, target_inv_d: Tensor) -> Tensor:
    """Mean Gaussian negative log-likelihood (without the constant) of target 1/d (1/Å)."""
    mu, sigma = resolution_params(out)
    target = target_inv_d.to(mu.dtype).reshape(-1)
    if target.shape != mu.shape:
        raise ValueError(f"target 1/d has {target.numel()} values for {mu.numel()} outputs")
    return (torch.log(sigma) + 0.5 * ((target - mu) / sigma) ** 2).mean()


def beta_nll(out: Tensor, target_inv_d: Tensor, beta: float = 0.5) -> Tensor:
    """The training loss of the resolution head: the Gaussian NLL of each shot weighted by
    sigma^(2 beta), the weight held constant (beta-NLL, Seitzer et al., ICLR 2022). With beta = 0
    it is gaussian_nll; with beta = 0.5 the gradient on mu no longer grows as 1/sigma^2, so
    shots the network is (over)confident about cannot blow up a step; sigma still converges to
    the calibrated value (the weight carries no gradient)."""
    mu, sigma = resolution_params(out)
    target = target_inv_d.to(mu.dtype).reshape(-1)
    if target.shape != mu.shape:
        raise ValueError(f"target 1/d has {target.numel()} values for {mu.numel()} outputs")
    nll = torch.log(sigma) + 0.5 * ((target - mu) / sigma) ** 2
    return (nll * sigma.detach() ** (2 * beta)).mean()


def lattice_loss(out: Tensor, is_multi: Tensor) -> Tensor:
    """Mean binary cross-entropy of (N, 1) logits against 0/1 multi-lattice labels."""
    _check_out(out, 1, "lattice")
    target = is_multi.to(out.dtype).reshape(-1)
    if target.numel() != out.shape[0]:
        raise ValueError(f"{target.numel()} labels for {out.shape[0]} outputs")
    return F.binary_cross_entropy_with_logits(out[:, 0], target)


def p_multi(out: Tensor) -> Tensor:
    """(N, 1) lattice logits -> P(multi-lattice), (N,)."""
    _check_out(out, 1, "lattice")
    return torch.sigmoid(out[:, 0])


# --------------------------------------------------------------------------- building

def _strip_prefixes(sd: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for p in _WRAPPER_PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def _guess_resnet_depth(keys: set[str]) -> str:
    """Best guess of which ResNet a torchvision-layout state dict holds (for error messages)."""
    blocks = [len({k.split(".")[1] for k in keys if k.startswith(f"layer{i}.")})
              for i in range(1, 5)]
    bottleneck = any(".conv3." in k for k in keys)
    table = {(2, 2, 2, 2, False): "resnet18", (3, 4, 6, 3, False): "resnet34",
             (3, 4, 6, 3, True): "resnet50", (3, 4, 23, 3, True): "resnet101",
             (3, 8, 36, 3, True): "resnet152"}
    return table.get((*blocks, bottleneck), "not a recognisable torchvision ResNet")


def _load_imagenet_trunk(model: XrpNet, weights: str | Path | None) -> None:
    if weights is None:
        raise ValueError(
            "imagenet init needs a local weights file: pass imagenet_weights=<path to a "
            f"torchvision resnet{model.depth} state dict (.pth)>; xrp never downloads weights")
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"imagenet weights file not found: {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read imagenet weights {path} as a torch state dict "
                         f"(weights_only=True): {e}") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{path} is not a torchvision ResNet state dict (name -> tensor)")
    sd = _strip_prefixes(sd)
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    expected = model.trunk.state_dict()
    missing = {k for k in expected if k not in sd and not k.endswith("num_batches_tracked")}
    unexpected = set(sd) - set(expected)
    want = f"resnet{model.depth}"
    if missing or unexpected:
        got = _guess_resnet_depth(set(sd))
        detail = [f"{len(ks)} {what} keys (e.g. {sorted(ks)[:3]})"
                  for what, ks in (("missing", missing), ("unexpected", unexpected)) if ks]
        raise ValueError(f"imagenet weights {path} do not fit a {want} trunk (file looks like: "
                         f"{got}); {', '.join(detail)}")
    w = sd.get("conv1.weight")
    if w is None or w.ndim != 4 or w.shape[1] not in (1, 3) or w.shape[0] != 64:
        raise ValueError(f"imagenet weights {path}: conv1.weight has shape "
                         f"{None if w is None else tuple(w.shape)}, expected (64, 3, 7, 7)")
    sd["conv1.weight"] = w.float().mean(dim=1, keepdim=True)  # RGB -> grey
    for k, v in sd.items():
        if v.shape != expected[k].shape:
            raise ValueError(f"imagenet weights {path}: {k} has shape {tuple(v.shape)}, "
                             f"a {want} needs {tuple(expected[k].shape)}")
    model.trunk.load_state_dict(sd, strict=False)


def _load_transfer_trunk(model: XrpNet, source: str | Path | None) -> None:
    if source is None:
        raise ValueError("transfer init needs transfer_from=<path to an xrp model file>")
    sd, meta = _read_model_file(source, "cpu")
    if meta["depth"] != model.depth:
        raise ValueError(f"cannot transfer from {source}: it is a ResNet-{meta['depth']} "
                         f"model, this one is ResNet-{model.depth} (depths must match)")
    trunk = {k[len("trunk."):]: v for k, v in sd.items() if k.startswith("trunk.")}
    try:
        model.trunk.load_state_dict(trunk, strict=True)
        if meta["task"] == model.task:  # same task: the whole network (training continues)
            model.head.load_state_dict({"weight": sd["head.weight"], "bias": sd["head.bias"]})
    except RuntimeError as e:
        raise ValueError(f"trunk weights in {source} do not fit: {e}") from e


def build_model(task: str, depth: int, init: str = "scratch", *,
                imagenet_weights: str | Path | None = None,
                transfer_from: str | Path | None = None) -> XrpNet:
    """New :class:`XrpNet`, trunk from scratch, local ImageNet weights, or another xrp model
    (its trunk; its head too when that model is of the same task)."""
    _check_choice("task", task, TASKS)
    _check_choice("depth", depth, DEPTHS)
    _check_choice("init", init, INITS)
    model = XrpNet(task, depth)  # scratch-initialised, head fresh
    if init == "imagenet":
        _load_imagenet_trunk(model, imagenet_weights)
    elif init == "transfer":
        _load_transfer_trunk(model, transfer_from)
    return model


# --------------------------------------------------------------------------- model files

def _json_problem(obj: Any, where: str) -> str | None:
    """Path of the first value json cannot encode, or None."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                return f"{where}[{k!r}] (key type {type(k).__name__})"
            bad = _json_problem(v, f"{where}.{k}" if where else str(k))
            if bad:
                return bad
        return None
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad = _json_problem(v, f"{where}[{i}]")
            if bad:
                return bad
        return None
    try:
        json.dumps(obj)
    except (TypeError, ValueError):
        return f"{where} ({type(obj).__name__})"
    return None


def save_model(path: str | Path, model: XrpNet, metadata: dict,
               dtype: torch.dtype | None = None) -> Path:
    """Write an xrp model file atomically (io/model_file.py); returns its path.

    ``metadata`` needs ``preprocessing`` (a ``Preprocessing.to_dict()``) and ``label``; task,
    depth and xrp_version are filled in. Everything must be JSON-serialisable. ``dtype``
    (e.g. torch.float16) stores the weights compactly."""
    from xray_platform import __version__

    net = model
    while not isinstance(net, XrpNet) and isinstance(getattr(net, "module", None), nn.Module):
        net = net.module  # DDP / DataParallel wrapper
    if not isinstance(net, XrpNet):
        net = getattr(net, "_orig_mod", net)  # torch.compile wrapper
    if not isinstance(net, XrpNet):
        raise TypeError(f"save_model needs an XrpNet, got {type(model).__name__}")
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    meta = dict(metadata)
    if isinstance(meta.get("preprocessing"), Preprocessing):
        meta["preprocessing"] = meta["preprocessing"].to_dict()
    missing = [k for k in _REQUIRED_METADATA if k not in meta]
    if missing:
        raise ValueError(f"model metadata lacks required key(s) {missing} "
                         f"(required: {list(_REQUIRED_METADATA)})")
    if not isinstance(meta["preprocessing"], dict):
        raise ValueError("metadata['preprocessing'] must be a Preprocessing.to_dict()")
    try:
        Preprocessing.from_dict(meta["preprocessing"])
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"metadata['preprocessing'] is not a valid Preprocessing: {e}") from e
    for key, value in (("task", net.task), ("depth", net.depth)):
        if meta.setdefault(key, value) != value:
            raise ValueError(f"metadata {key}={meta[key]!r} contradicts the model's {value!r}")
    meta.setdefault("xrp_version", __version__)
    for k, v in meta.items():
        bad = _json_problem(v, str(k))
        if bad:
            raise ValueError(f"model metadata key {k!r} is not JSON-serialisable: {bad}")
    return write_model_file(path, _strip_prefixes(net.state_dict()), meta, dtype=dtype)


def _check_meta(path: str | Path, meta: dict) -> dict:
    if meta.get("task") not in TASKS or meta.get("depth") not in DEPTHS:
        raise ValueError(f"{path}: metadata names task={meta.get('task')!r} "
                         f"depth={meta.get('depth')!r}; known tasks {TASKS}, depths {DEPTHS}")
    return meta


def _read_model_file(path: str | Path,
                     map_location: str | torch.device) -> tuple[dict[str, Tensor], dict]:
    """Validated (state_dict, metadata) of an xrp model file."""
    sd, meta = read_model_file(path, map_location)
    return sd, _check_meta(path, meta)


def model_metadata(path: str | Path) -> dict:
    """The metadata of an xrp model file without loading its weights."""
    return _check_meta(path, read_metadata(path))


def load_model(path: str | Path,
               map_location: str | torch.device = "cpu") -> tuple[XrpNet, dict]:
    """Load an xrp model file (weights_only) -> (eval-mode float32 XrpNet, metadata)."""
    sd, meta = _read_model_file(path, "cpu")
    model = XrpNet(meta["task"], meta["depth"])
    try:
        model.load_state_dict(sd, strict=True)  # float16 weights are cast on copy
    except RuntimeError as e:
        raise ValueError(f"{path}: corrupt xrp model file (weights do not fit a "
                         f"{meta['task']} ResNet-{meta['depth']}): {e}") from e
    model.temperature = temperature_of(meta)
    return model.to(map_location).eval(), meta


def temperature_of(meta: dict) -> float:
    """The lattice model's fitted temperature (core/calibration.py), 1 when uncalibrated."""
    t = (meta.get("calibration") or {}).get("temperature", 1.0)
    if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
        raise ValueError(f"model calibration temperature must be a positive number, got {t!r}")
    return float(t)


def model_preprocessing(metadata: dict) -> Preprocessing:
    """A model's input (grid, background, d_max): its file's metadata["preprocessing"]."""
    return Preprocessing.from_dict(metadata["preprocessing"])


def model_summary(metadata: dict) -> str:
    """One-line summary: task, depth, init, label, key metrics."""
    parts = [f"{metadata.get('task', '?')} ResNet-{metadata.get('depth', '?')}",
             f"init={metadata.get('init', '?')}", f"label={metadata.get('label', '?')}"]
    prep = metadata.get("preprocessing")
    if isinstance(prep, dict) and "grid_size" in prep:
        try:
            parts += Preprocessing.from_dict(prep).summary_parts()
        except ValueError:  # (a summary names what it can)
            parts.append(f"grid={prep['grid_size']}")
    metrics = metadata.get("metrics")
    if isinstance(metrics, dict):
        shown = []
        for k, v in metrics.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            shown.append(f"{k}={v:.4g}")
            if len(shown) == 6:
                break
        if shown:
            parts.append(", ".join(shown))
    if "xrp_version" in metadata:
        parts.append(f"xrp {metadata['xrp_version']}")
    return " | ".join(parts)


def provenance_summary(metadata: dict) -> str:
    """One line of how a model was made: its file's "provenance" (io/provenance.py)."""
    p = metadata.get("provenance")
    if not isinstance(p, dict):
        return "not recorded (a model file from before provenance records)"
    code, data = p.get("code") or {}, p.get("data") or {}
    commit = str(code.get("commit", "unknown"))[:12] + (" (dirty)" if code.get("dirty") else "")
    if data.get("kind") == "preset":
        name = data.get("preset", "?") + ("" if data.get("version") in (None, "current")
                                          else f"@{data['version']}")
        source = f"preset {name} seed {data.get('seed')}"
    else:
        source = f"{data.get('path', '?')} ({data.get('n_shots', '?')} shots)"
    hyper = p.get("hyperparameters") or {}
    shown = ", ".join(f"{k} {hyper[k]}" for k in ("epochs", "batch_size", "lr", "weight_decay")
                      if k in hyper)
    return (f"commit {commit} | data {source}, fingerprint {data.get('fingerprint', '?')} | "
            f"{shown} | seed {(p.get('seeds') or {}).get('seed', '?')}")
