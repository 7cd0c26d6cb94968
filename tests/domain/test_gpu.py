"""GPU model normalisation and family expansion."""

from __future__ import annotations

import pytest

from carbon_optimizer.domain.gpu import GPU_FAMILIES, KNOWN_GPU_MODELS, expand_gpu_models, normalize_gpu_model
from carbon_optimizer.providers.catalog import read_csv


def test_known_models_match_bundled_price_tables() -> None:
    found: set[str] = set()
    for name in (
        "aws_ec2_ondemand_linux.csv.gz",
        "azure_vm_ondemand_linux.csv.gz",
        "gcp_compute_linux.csv.gz",
        "lambda_cloud_ondemand.csv",
    ):
        found |= {r["gpu_model"] for r in read_csv("pricing", name) if r["gpu_model"]}
    assert tuple(sorted(found)) == KNOWN_GPU_MODELS


def test_families_only_name_known_models() -> None:
    for family, members in GPU_FAMILIES.items():
        assert members, family
        assert set(members) <= set(KNOWN_GPU_MODELS)
        assert family not in KNOWN_GPU_MODELS


@pytest.mark.parametrize("model", KNOWN_GPU_MODELS)
def test_every_known_model_normalises_to_itself(model: str) -> None:
    assert normalize_gpu_model(model) == model
    assert normalize_gpu_model(model.lower()) == model
    assert expand_gpu_models(model) == (model,)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("nvidia a100 80gb", "A100-80GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("a100_40gb", "A100-40GB"),
        ("Tesla V100-16GB", "V100-16GB"),
        ("tesla t4", "T4"),
        ("a10g", "A10G"),
        ("A10", "A10"),
        ("NVIDIA A10 24GB", "A10"),
        ("l40s", "L40S"),
        ("NVIDIA L4", "L4"),
        ("h100 sxm", "H100-80GB"),
        ("H100 SXM5 80GB", "H100-80GB"),
        ("H100 PCIe", "H100-80GB-PCIe"),
        ("h100_nvl", "H100-NVL-94GB"),
        ("H200", "H200-141GB"),
        ("B200 180GB", "B200"),
        ("GH200 96GB", "GH200"),
        ("RTX A6000", "RTX-A6000"),
        ("A6000", "RTX-A6000"),
        ("Quadro RTX 6000", "Quadro-RTX-6000"),
        ("AMD Instinct MI300X", "MI300X"),
        ("radeon pro v520", "Radeon-Pro-V520"),
        ("  rtx pro 6000 ", "RTX-PRO-6000"),
    ],
)
def test_normalize(given: str, expected: str) -> None:
    assert normalize_gpu_model(given) == expected


def test_family_is_not_one_model() -> None:
    with pytest.raises(ValueError, match=r"family.*A100-40GB, A100-80GB"):
        normalize_gpu_model("A100")


def test_unknown_model_lists_close_matches() -> None:
    with pytest.raises(ValueError, match=r"unknown GPU model 'A1000' \(did you mean .*A100"):
        normalize_gpu_model("A1000")
    with pytest.raises(ValueError, match="known models: A10, "):
        normalize_gpu_model("potato")


def test_memory_suffix_never_picks_a_family_member() -> None:
    with pytest.raises(ValueError, match="unknown GPU model"):
        normalize_gpu_model("H100 94GB")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("A100", ("A100-40GB", "A100-80GB")),
        ("nvidia a100", ("A100-40GB", "A100-80GB")),
        ("H100", ("H100-80GB", "H100-80GB-Mega", "H100-80GB-PCIe", "H100-NVL-94GB")),
        ("Tesla V100", ("V100-16GB", "V100-32GB")),
        ("A100-80GB", ("A100-80GB",)),
        ("h100 pcie", ("H100-80GB-PCIe",)),
        ("T4", ("T4",)),  # an exact model never widens to T4G
    ],
)
def test_expand(given: str, expected: tuple[str, ...]) -> None:
    assert expand_gpu_models(given) == expected


def test_expand_unknown() -> None:
    with pytest.raises(ValueError, match="unknown GPU model"):
        expand_gpu_models("Z9000")
