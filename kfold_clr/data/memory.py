"""Memory estimates: refuse at validation what cannot fit, with the estimate, instead of an OOM kill.

The estimates are lower bounds (float32 weights, their gradients, optimizer
slots and the pool's saved initial state; float64 generated data and its float32
copies); a config is refused only when even that exceeds the machine's memory.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Optional

from kfold_clr.config.optimizers import slots_per_weight
from kfold_clr.errors import ConfigError, DataError

if TYPE_CHECKING:
    import keras

    from kfold_clr.config import ExperimentConfig, ModelConfig, OptimizerConfig


def memory_limit() -> Optional[int]:
    """Bytes of memory this process may use: the container's limit or the machine's RAM (None if unknown)."""
    limits = []
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as stream:
                text = stream.read().strip()
            if text.isdigit():
                limits.append(int(text))
        except OSError:
            continue
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        pass
    return min(limits) if limits else None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


def _refuse_if_too_big(needed: float, what: str, key: str, value: object, error: type[Exception] = ConfigError,
                       limit: int | None = None) -> None:
    limit = memory_limit() if limit is None else limit
    if limit is not None and needed > limit:
        raise error(f"{key}: {value!r} needs at least {human_bytes(needed)} of memory for {what}, "
                    f"more than the {human_bytes(limit)} this machine has")


def check_synthetic_size(params: dict, *, name: str, limit: Optional[int] = None) -> None:
    """Refuse generated data whose samples cannot fit in memory (before generating them)."""
    n_samples = params.get("n_samples", 200)
    n_features = params.get("n_features", 20 if name == "classification" else 100)  # scikit-learn's defaults
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n_samples, n_features)):
        return  # make_* reports bad types itself
    needed = n_samples * n_features * (8 + 4 + 4)  # generated float64, float32 copy, per-fold scaled copy
    _refuse_if_too_big(needed, f"{n_samples:,} samples x {n_features:,} features", "data.params",
                       {"n_samples": n_samples, "n_features": n_features}, error=DataError, limit=limit)


def model_parameters(model_cfg: "ModelConfig", *, input_shape: tuple, n_outputs: int) -> Optional[int]:
    """Weights of the built-in MLP or CNN for this input (None for a factory)."""
    if model_cfg.factory is not None or (model_cfg.kind == "pretrained" and len(input_shape) > 1):
        return None  # a factory's or a backbone's size is not ours to estimate
    shape = list(input_shape)
    total = 0
    if model_cfg.kind == "cnn" and len(shape) in (2, 3):
        spatial, channels = shape[:-1], shape[-1]
        for filters in model_cfg.filters:
            total += model_cfg.kernel_size ** len(spatial) * channels * filters + 2 * filters
            channels = filters
            if spatial[0] >= 2:
                spatial = [max(1, size // 2) for size in spatial]
        width = math.prod(spatial) * channels
    else:
        width = math.prod(shape)
    for units in [*model_cfg.hidden, n_outputs]:
        total += (width + 4) * units  # weights and at most 4 more per unit (bias or batch norm)
        width = units
    return total


def check_model_size(config: "ExperimentConfig", *, input_shape: tuple, n_outputs: int, branches: int = 1,
                     limit: Optional[int] = None) -> None:
    """Refuse a built-in model whose weights and training state cannot fit in memory."""
    weights = model_parameters(config.model, input_shape=input_shape, n_outputs=n_outputs)
    if weights is None:
        return
    copies = 3 + slots_per_weight(config.training.optimizer)  # weights, gradients, saved initial state, slots
    widest = max([*config.model.hidden, *config.model.filters, n_outputs])
    activations = config.training.batch_size * widest * 4 * 4
    needed = branches * (weights * 4 * copies + activations)
    key = "model.hidden" if config.model.kind == "mlp" else "model"
    value = config.model.hidden if config.model.kind == "mlp" else {"filters": config.model.filters,
                                                                     "hidden": config.model.hidden}
    what = f"{weights:,} weights" + (f" x {branches} fused folds" if branches > 1 else "")
    _refuse_if_too_big(needed, what, key, value, limit=limit)


def layer_output_sizes(model: keras.Model) -> list[int]:
    """Values per sample of each layer output the model exposes (functional models; [] otherwise)."""
    sizes = []
    for layer in model.layers:
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        sizes.append(math.prod(d or 1 for d in shape[1:]))
    return sizes


def branch_bytes(model: "keras.Model", *, batch_size: int, optimizer: "OptimizerConfig") -> int:
    """Memory one fused branch of a built Keras model needs: its weights, gradients and optimizer
    slots (float32), and the activations of one training batch kept for the backward pass."""
    weights = sum(math.prod(v.shape) for v in model.trainable_variables)
    state = sum(math.prod(v.shape) for v in model.non_trainable_variables)
    activations = sum(layer_output_sizes(model))
    copies = 3 + slots_per_weight(optimizer)  # weights, gradients, a saved copy, slots
    return 4 * (weights * copies + state + 3 * batch_size * activations)


def fused_group_size(model: "keras.Model", config: "ExperimentConfig", *, limit: Optional[int] = None) -> int:
    """Most branches of one fused model that fit in a quarter of this machine's memory
    (`execution.fused_group_size` caps it)."""
    limit = memory_limit() if limit is None else limit
    per_branch = branch_bytes(model, batch_size=config.training.batch_size, optimizer=config.training.optimizer)
    fits = max(1, int((limit or 8 * 2**30) // 4 // max(per_branch, 1)))
    cap = config.execution.fused_group_size
    return min(fits, cap) if cap is not None else fits
