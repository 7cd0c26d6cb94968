"""GPU model names: one normalised spelling per model, and families that accept several variants.

Why: prices, the energy model and user requests all name GPUs, and they spell them differently
("NVIDIA A100 80GB", "a100-80gb", "Tesla V100"). The bundled price tables already use one
normalised name per model (see `carbon_optimizer/data/README.md`); this module is the single
place that maps user spellings onto those names, so a request for "A100" can accept every A100
variant while "A100-80GB" accepts exactly one.

`KNOWN_GPU_MODELS` is hard-coded (not read from the data at import time, which must stay free of
I/O); `tests/domain/test_gpu.py` fails if it drifts from the models in the bundled tables.
"""

from __future__ import annotations

import difflib
import re

# Every `gpu_model` value in the bundled price tables (aws, azure, gcp, lambda), sorted.
KNOWN_GPU_MODELS: tuple[str, ...] = (
    "A10",
    "A100-40GB",
    "A100-80GB",
    "A10G",
    "B200",
    "B300",
    "GH200",
    "H100-80GB",
    "H100-80GB-Mega",
    "H100-80GB-PCIe",
    "H100-NVL-94GB",
    "H200-141GB",
    "K80",
    "L4",
    "L40S",
    "M60",
    "MI300X",
    "Quadro-RTX-6000",
    "RTX-A6000",
    "RTX-PRO-4500",
    "RTX-PRO-6000",
    "Radeon-Pro-V520",
    "T4",
    "T4G",
    "V100-16GB",
    "V100-32GB",
)

# What `gpu: {count: n}` without a model means: the NVIDIA data-centre compute GPUs ML jobs are
# built for (CUDA). Selection prefers these and falls back to any model only where a region has
# none of them. Left out: AMD (MI300X, Radeon-Pro-V520: ROCm, not CUDA; the Radeon is a graphics
# card), NVIDIA workstation/graphics cards (Quadro-RTX-6000, RTX-A6000, RTX-PRO-*, M60).
DEFAULT_GPU_MODELS: tuple[str, ...] = (
    "A10",
    "A100-40GB",
    "A100-80GB",
    "A10G",
    "B200",
    "B300",
    "GH200",
    "H100-80GB",
    "H100-80GB-Mega",
    "H100-80GB-PCIe",
    "H100-NVL-94GB",
    "H200-141GB",
    "K80",
    "L4",
    "L40S",
    "T4",
    "T4G",
    "V100-16GB",
    "V100-32GB",
)

# A family name accepts every listed variant. Exact model names always win over families.
GPU_FAMILIES: dict[str, tuple[str, ...]] = {
    "A100": ("A100-40GB", "A100-80GB"),
    "H100": ("H100-80GB", "H100-80GB-Mega", "H100-80GB-PCIe", "H100-NVL-94GB"),
    "H200": ("H200-141GB",),
    "V100": ("V100-16GB", "V100-32GB"),
    "RTX-PRO": ("RTX-PRO-4500", "RTX-PRO-6000"),
}

# Other common spellings of one exact model (keys are compared after `_key`).
_ALIASES: dict[str, str] = {
    "H100SXM": "H100-80GB",
    "H100SXM5": "H100-80GB",
    "H100SXM580GB": "H100-80GB",
    "H100SXM80GB": "H100-80GB",
    "H100PCIE": "H100-80GB-PCIe",
    "H100PCIE80GB": "H100-80GB-PCIe",
    "H100NVL": "H100-NVL-94GB",
    "H100MEGA": "H100-80GB-Mega",
    "H100MEGA80GB": "H100-80GB-Mega",
    "H200SXM": "H200-141GB",
    "A6000": "RTX-A6000",
    "QUADRORTX6000": "Quadro-RTX-6000",
    "INSTINCTMI300X": "MI300X",
    "RADEONPROV520": "Radeon-Pro-V520",
}

# Vendor prefixes and form-factor words that never change which model is meant.
_PREFIXES = ("NVIDIA", "TESLA", "AMD", "INSTINCT")
_NOISE = re.compile(r"SXM[2-6]?|PCIE|HBM3E?|GDDR\d")
_MEMORY = re.compile(r"[\s_\-]+\d+\s*GB\s*$", re.IGNORECASE)


def _key(name: str) -> str:
    """Compare key: upper case, vendor prefixes dropped, no spaces, hyphens or underscores."""
    key = re.sub(r"[\s_\-]+", " ", name.strip().upper())
    words = key.split(" ")
    while words and words[0] in _PREFIXES:
        words = words[1:]
    return "".join(words)


_BY_KEY: dict[str, str] = {_key(m): m for m in KNOWN_GPU_MODELS}
_BY_KEY.update(_ALIASES)
_FAMILY_BY_KEY: dict[str, str] = {_key(f): f for f in GPU_FAMILIES}


def _lookup(name: str) -> tuple[str, ...] | None:
    """Exact model (1-tuple), family (its variants) or None."""
    key = _key(name)
    if key in _BY_KEY:
        return (_BY_KEY[key],)
    if key in _FAMILY_BY_KEY:
        return GPU_FAMILIES[_FAMILY_BY_KEY[key]]
    # "A100 SXM4 80GB" → "A10080GB": form factor words do not change the model here.
    stripped = _NOISE.sub("", key)
    if stripped != key:
        if stripped in _BY_KEY:
            return (_BY_KEY[stripped],)
        if stripped in _FAMILY_BY_KEY:
            return GPU_FAMILIES[_FAMILY_BY_KEY[stripped]]
    # "L4 24GB", "B200 180GB": a memory size on a model that has only one size is redundant.
    # Never for families: "H100 94GB" must not silently become every H100.
    without_memory = _key(_MEMORY.sub("", name))
    if without_memory != key and without_memory in _BY_KEY:
        return (_BY_KEY[without_memory],)
    return None


def _unknown(name: str) -> ValueError:
    candidates = list(KNOWN_GPU_MODELS) + list(GPU_FAMILIES)
    key = _key(name)
    close = difflib.get_close_matches(name.strip(), candidates, n=5, cutoff=0.5)
    close += [c for c in candidates if key and key in _key(c) and c not in close]
    hint = f" (did you mean {', '.join(close[:6])}?)" if close else ""
    return ValueError(
        f"unknown GPU model {name!r}{hint}; known models: {', '.join(KNOWN_GPU_MODELS)}; "
        f"families: {', '.join(GPU_FAMILIES)}"
    )


def normalize_gpu_model(name: str) -> str:
    """Return the one normalised model name meant by `name` (ValueError if unknown or ambiguous)."""
    found = _lookup(name)
    if found is None:
        raise _unknown(name)
    if len(found) > 1:
        raise ValueError(
            f"{name!r} is a GPU family with several models: {', '.join(found)}; name one of them"
        )
    return found[0]


def expand_gpu_models(name: str) -> tuple[str, ...]:
    """Normalised models accepted by `name`: a family gives all its variants, a model itself."""
    found = _lookup(name)
    if found is None:
        raise _unknown(name)
    return found
