"""Regenerate everything under carbon_optimizer/data/ from the reference data set.

Why a script: the bundled files are derived (gzipped copies, compact NumPy forms, a small Lambda
region table), and a reviewer must be able to rebuild them byte for byte from the reference data
set (a directory with `cloud_regions.csv`, `annual_intensity.csv`, `timeseries/` and `pricing/`,
each with its README; see docs/data-sources.md §3) and see exactly what was changed. Outputs
are deterministic (gzip mtime 0, fixed zip timestamps), so re-running it on unchanged inputs
leaves `git status` clean.

Usage: `python scripts/build_data.py --source DIR [--out carbon_optimizer/data]` (or set
`REFERENCE_DATA_DIR` instead of `--source`).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import shutil
import sys
import zipfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = os.environ.get("REFERENCE_DATA_DIR")
DEFAULT_OUT = REPO / "carbon_optimizer" / "data"

HOURS_2023 = 8760
START_2023 = datetime(2023, 1, 1, tzinfo=UTC)

PRICE_TABLES = (
    "aws_ec2_ondemand_linux",
    "azure_vm_ondemand_linux",
    "gcp_compute_linux",
    "lambda_cloud_ondemand",
)
PRICE_PROVIDERS = ("aws", "azure", "gcp", "lambda")
PRICE_TYPES = ("on_demand", "spot")
PRICE_COLUMNS = (
    "provider",
    "region",
    "instance_type",
    "vcpus",
    "memory_gib",
    "gpu_count",
    "gpu_model",
    "price_usd_per_hour",
    "price_type",
    "as_of",
    "source",
)

LAMBDA_CONFIDENCE = "uncertain: zone inferred from the region description Lambda's API returns"
# (region, description as Lambda's API returns it, zone, why this zone).
# Descriptions: public client code that lists Lambda's /regions answer (e.g. dstack's Lambda
# backend, SkyPilot's Lambda catalog fetcher). asia-northeast-1/-2 are both in Japan; sources
# disagree on which one is Tokyo and which Osaka, so both map to the country-level zone JP.
LAMBDA_REGIONS: tuple[tuple[str, str, str, str], ...] = (
    ("us-west-1", "California, USA", "US-CAL-CISO", "California: CAISO balancing area"),
    ("us-west-2", "Arizona, USA", "US-SW-AZPS", "Arizona: Arizona Public Service balancing area"),
    ("us-west-3", "Utah, USA", "US-NW-PACE", "Utah: PacifiCorp East balancing area"),
    ("us-south-1", "Texas, USA", "US-TEX-ERCO", "Texas: ERCOT"),
    ("us-east-1", "Virginia, USA", "US-MIDA-PJM", "Virginia: PJM"),
    ("us-midwest-1", "Illinois, USA", "US-MIDA-PJM", "Illinois: northern Illinois (Chicago) is in PJM"),
    ("europe-central-1", "Germany", "DE", "Germany: one EM zone"),
    ("asia-south-1", "India", "IN", "India: no city given, EM's country-level zone IN"),
    ("asia-northeast-1", "Japan", "JP", "Japan: Tokyo vs Osaka unclear, EM's country-level zone JP"),
    ("asia-northeast-2", "Japan", "JP", "Japan: Tokyo vs Osaka unclear, EM's country-level zone JP"),
    ("me-west-1", "Israel", "IL", "Israel: one EM zone"),
)


def _gzip_bytes(data: bytes) -> bytes:
    """Gzip with mtime 0 and no file name, so the output depends on the input only."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _save_npz(path: Path, arrays: Mapping[str, npt.NDArray[np.generic]]) -> None:
    """Like np.savez_compressed, but with fixed zip timestamps (reproducible bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            zf.writestr(info, buffer.getvalue())


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def build_carbon(source: Path, out: Path) -> list[str]:
    """Gzip the 19 hourly files verbatim and derive carbon_2023_hourly.npz from them."""
    files = sorted((source / "timeseries").glob("*_2023_hourly.csv"))
    if len(files) != 19:
        raise SystemExit(f"expected 19 hourly files, found {len(files)}")
    expected = [(START_2023 + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(HOURS_2023)]
    zones: list[str] = []
    lifecycle = np.empty((len(files), HOURS_2023), dtype=np.float64)
    direct = np.empty((len(files), HOURS_2023), dtype=np.float64)
    for i, path in enumerate(files):
        raw = path.read_bytes()
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
        zone = path.name.removesuffix("_2023_hourly.csv")
        if {r["zone"] for r in rows} != {zone}:
            raise SystemExit(f"{path.name}: zone column does not match the file name")
        if [r["datetime_utc"] for r in rows] != expected:
            raise SystemExit(f"{path.name}: not 8760 consecutive hours of 2023")
        lifecycle[i] = [float(r["carbon_intensity_gco2_per_kwh"]) for r in rows]
        direct[i] = [float(r["carbon_intensity_direct_gco2_per_kwh"]) for r in rows]
        zones.append(zone)
        _write(out / "timeseries" / f"{path.name}.gz", _gzip_bytes(raw))
    if not (np.isfinite(lifecycle).all() and np.isfinite(direct).all()):
        raise SystemExit("non-finite intensity in hourly data")
    _save_npz(
        out / "carbon_2023_hourly.npz",
        {
            "zones": np.array(zones, dtype=np.str_),
            "start_epoch_s": np.array([int(START_2023.timestamp())], dtype=np.int64),
            "lifecycle": lifecycle,
            "direct": direct,
        },
    )
    return zones


def build_regions(source: Path, out: Path) -> None:
    """Copy cloud_regions.csv and annual_intensity.csv (gz); write lambda_regions.csv."""
    regions = _read_csv(source / "cloud_regions.csv")
    annual = _read_csv(source / "annual_intensity.csv")
    zones = {r["em_zone"] for r in annual if r["scope"] == "zone"}
    for r in regions:
        if r["region"] != r["region"].lower() or r["provider"] != r["provider"].lower():
            raise SystemExit(f"region codes are expected lower case: {r['provider']}/{r['region']}")
        if r["em_zone"] not in zones:
            raise SystemExit(f"{r['provider']}/{r['region']}: zone {r['em_zone']} has no annual data")
    shutil.copyfile(source / "cloud_regions.csv", out / "cloud_regions.csv")
    _write(out / "annual_intensity.csv.gz", _gzip_bytes((source / "annual_intensity.csv").read_bytes()))

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["provider", "region", "display_name", "location", "em_zone", "confidence", "notes"])
    for region, description, zone, why in LAMBDA_REGIONS:
        if zone not in zones:
            raise SystemExit(f"lambda {region}: zone {zone} has no annual data")
        writer.writerow(
            ["lambda", region, f"Lambda {region} ({description})", description, zone, LAMBDA_CONFIDENCE, why]
        )
    _write(out / "lambda_regions.csv", buffer.getvalue().encode("utf-8"))


def _codes(values: Iterable[str]) -> tuple[npt.NDArray[np.str_], dict[str, int]]:
    table = sorted(set(values))
    return np.array(table, dtype=np.str_), {v: i for i, v in enumerate(table)}


def build_prices(source: Path, out: Path) -> list[str]:
    """Gzip the four price tables verbatim and precompute pricing/offers.npz (columnar, sorted)."""
    rows: list[dict[str, str]] = []
    for name in PRICE_TABLES:
        path = source / "pricing" / f"{name}.csv"
        raw = path.read_bytes()
        table = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
        if tuple(table[0].keys()) != PRICE_COLUMNS:
            raise SystemExit(f"{name}: unexpected columns")
        rows.extend(table)
        target = out / "pricing" / (f"{name}.csv" if name == "lambda_cloud_ondemand" else f"{name}.csv.gz")
        _write(target, raw if target.suffix == ".csv" else _gzip_bytes(raw))
    shutil.copyfile(
        source / "pricing" / "carbon_price_reference.csv", out / "pricing" / "carbon_price_reference.csv"
    )

    # fallback_common.csv is not shipped: check that it really is a subset of the full tables.
    full = {tuple(r.values()) for r in rows}
    common = _read_csv(source / "pricing" / "fallback_common.csv")
    missing = [r for r in common if tuple(r.values()) not in full]
    if missing:
        raise SystemExit(f"fallback_common.csv has {len(missing)} rows not in the full tables")

    keys = [(r["provider"], r["region"], r["instance_type"], r["price_type"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise SystemExit("duplicate (provider, region, instance_type, price_type) rows")
    for r in rows:
        if r["provider"] not in PRICE_PROVIDERS or r["price_type"] not in PRICE_TYPES:
            raise SystemExit(f"unexpected provider/price_type in {r}")
        if not float(r["price_usd_per_hour"]) > 0:
            raise SystemExit(f"non-positive price in {r}")
    # Contiguous groups per (provider, region, price_type) let the loader slice, not search.
    rows.sort(key=lambda r: (r["provider"], r["region"], r["price_type"], r["instance_type"]))

    regions, region_code = _codes(r["region"] for r in rows)
    types, type_code = _codes(r["instance_type"] for r in rows)
    gpus, gpu_code = _codes(r["gpu_model"] for r in rows)  # "" = no GPU / unknown
    dates, date_code = _codes(r["as_of"] for r in rows)  # "" = undated
    sources, source_code = _codes(r["source"] for r in rows)

    def num(value: str) -> float:
        return float(value) if value else float("nan")

    _save_npz(
        out / "pricing" / "offers.npz",
        {
            "providers": np.array(PRICE_PROVIDERS, dtype=np.str_),
            "price_types": np.array(PRICE_TYPES, dtype=np.str_),
            "regions": regions,
            "instance_types": types,
            "gpu_models": gpus,
            "as_of": dates,
            "sources": sources,
            "provider": np.array([PRICE_PROVIDERS.index(r["provider"]) for r in rows], dtype=np.uint8),
            "price_type": np.array([PRICE_TYPES.index(r["price_type"]) for r in rows], dtype=np.uint8),
            "region": np.array([region_code[r["region"]] for r in rows], dtype=np.int32),
            "instance_type": np.array([type_code[r["instance_type"]] for r in rows], dtype=np.int32),
            "vcpus": np.array([num(r["vcpus"]) for r in rows], dtype=np.float64),
            "memory_gib": np.array([num(r["memory_gib"]) for r in rows], dtype=np.float64),
            # Exact count, float: GCP g4-standard-6/12/24 carry fractional RTX PRO 6000 GPUs
            # (0.125/0.25/0.5). Blank only on rows without any specs (never auto-selected): 0.
            "gpu_count": np.array([num(r["gpu_count"] or "0") for r in rows], dtype=np.float64),
            "gpu_model": np.array([gpu_code[r["gpu_model"]] for r in rows], dtype=np.int16),
            "price_usd_per_hour": np.array([float(r["price_usd_per_hour"]) for r in rows], dtype=np.float64),
            "as_of_code": np.array([date_code[r["as_of"]] for r in rows], dtype=np.int16),
            "source": np.array([source_code[r["source"]] for r in rows], dtype=np.int16),
        },
    )
    return [g for g in gpus.tolist() if g]


def main(argv: list[str] | None = None) -> int:
    """Build all bundled data files; print a summary with sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(DEFAULT_SOURCE) if DEFAULT_SOURCE else None,
        required=DEFAULT_SOURCE is None,
        help="the reference data directory (default: $REFERENCE_DATA_DIR)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    source: Path = args.source
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    zones = build_carbon(source, out)
    build_regions(source, out)
    gpu_models = build_prices(source, out)

    sys.path.insert(0, str(REPO))
    from carbon_optimizer.domain.gpu import KNOWN_GPU_MODELS

    print(f"hourly zones ({len(zones)}): {', '.join(zones)}")
    print(f"gpu models in price tables ({len(gpu_models)}): {gpu_models}")
    if tuple(gpu_models) != KNOWN_GPU_MODELS:
        print("WARNING: carbon_optimizer/domain/gpu.py KNOWN_GPU_MODELS differs; update it", file=sys.stderr)
    total = 0
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        size = path.stat().st_size
        total += size
        print(f"{size:>10,}  {path.relative_to(out)}")
    print(f"{total:>10,}  total")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
