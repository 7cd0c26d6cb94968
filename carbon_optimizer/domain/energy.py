"""Energy model: the average electrical draw of a workload, and its energy over a run.

Why one module: every number that turns "8 vCPUs for 3 hours" into kWh lives here, each with its
source, so a reviewer can check the model in one place and the API can state it
(`energy_model` in the response). Contract: `energy_kwh = watts × PUE × hours / 1000`.

Model (Cloud Carbon Footprint, "CCF"; cloud-carbon-footprint/cloud-carbon-footprint
`microsite/docs/Methodology.md` @1559c186, sections "Compute", "Memory", "GPUs", "Power Usage
Effectiveness", Appendix I and Appendix III):

    watts = vCPUs × (min + u·(max − min))          # per-provider W per vCPU, u = 50 % (CCF default)
          + GiB × 0.392                            # CCF memory coefficient, 0.000392 kWh/GB-h
          + GPUs × (idle + u·(max_gpu − idle))     # per GPU model (CCF Appendix III / datasheets)
    energy_kwh = watts × PUE × hours / 1000

Choices, documented because they change results:
- The size is the WORKLOAD's (vCPUs, GiB, GPU count), not the chosen instance's: a job that needs
  8 vCPUs draws the same wherever it runs, so locations compare like for like and an oversized
  instance in one region does not make that region look dirtier. (The instance only supplies the
  GPU model when the workload accepts several.)
- Memory: CCF adds memory energy only above the memory already inside its SPECpower server figures;
  we apply 0.392 W per GiB to all of the workload's memory (as docs/data-sources.md §2.6
  does) — simpler and a mild overestimate. CCF states the coefficient per GB; we apply it per GiB.
- GPUs use the same utilisation (50 %) as CPUs, as CCF does. GPU models CCF does not list get
  max = the vendor's published maximum board power / TDP and idle = max × 46/407 (CCF's A100
  idle:max ratio) — our assumption, flagged per model below. Unknown GPU → the A100 figure
  (conservative: the largest CCF GPU).
- Lambda Cloud is not in CCF: the mean of the AWS, GCP and Azure coefficients and PUEs (assumption).
- Grid zones (on-prem/colo): the same mean coefficients, PUE from the `onprem_pue` argument
  (settings default 1.56, the average annual PUE reported by the Uptime Institute Global Data
  Center Survey 2024).
- Azure PUE: CCF's Appendix I uses 1.125 while its PUE section lists 1.185 and quotes Microsoft:
  "fleet-wide PUE trailing 12-month average is 1.185, and our latest designs are achieving an
  annual PUE of 1.125". We use 1.125 (Appendix I, and the contract's example).

Check (pricing.md §7.3): Azure, 8 vCPU / 32 GiB → (8 × 2.27 + 32 × 0.392) × 1.125 = 34.54 W.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from carbon_optimizer.domain.models import InstanceOffer, Workload

CCF_SOURCE = (
    "Cloud Carbon Footprint methodology (github.com/cloud-carbon-footprint/cloud-carbon-footprint "
    "microsite/docs/Methodology.md, Appendix I and III)"
)
MODEL_NAME = "ccf (Cloud Carbon Footprint coefficients, 50% utilisation)"
OVERRIDE_MODEL_NAME = "override:power_watts"

# CCF: "we fall back to a projected estimate for the average server utilization of servers in
# hyperscale data centers in 2020 of 50%" (2016 U.S. Data Center Energy Usage Report).
AVERAGE_UTILIZATION = 0.5

# CCF Memory: "0.392 W/GB, or 0.000392 kW/GB" (mean of Crucial ~0.375 W/GB and Micron ~0.4083 W/GB).
MEMORY_WATTS_PER_GIB = 0.392

# Uptime Institute Global Data Center Survey 2024: average annual PUE 1.56 (settings default).
ONPREM_PUE_SOURCE = "Uptime Institute Global Data Center Survey 2024 (average PUE 1.56)"


@dataclass(frozen=True, slots=True)
class CpuCoefficients:
    """Watts per vCPU at 0 % and 100 % utilisation, and the data-centre PUE."""

    min_watts_per_vcpu: float
    max_watts_per_vcpu: float
    pue: float
    source: str

    def watts_per_vcpu(self, utilization: float) -> float:
        """CCF: Average Watts = Min Watts + Avg vCPU Utilization × (Max Watts − Min Watts)."""
        return self.min_watts_per_vcpu + utilization * (self.max_watts_per_vcpu - self.min_watts_per_vcpu)


# CCF Appendix I (AWS/Azure: averages over their micro-architectures; GCP: medians).
AWS = CpuCoefficients(0.74, 3.5, 1.135, f"{CCF_SOURCE}: AWS 0.74–3.5 W/vCPU, PUE 1.135")
GCP = CpuCoefficients(0.71, 4.26, 1.1, f"{CCF_SOURCE}: GCP 0.71–4.26 W/vCPU, PUE 1.1")
AZURE = CpuCoefficients(0.78, 3.76, 1.125, f"{CCF_SOURCE}: Azure 0.78–3.76 W/vCPU, PUE 1.125")
# Assumption: mean of the three (Lambda Cloud and on-prem servers are not in CCF).
MEAN_MIN_WATTS = (AWS.min_watts_per_vcpu + GCP.min_watts_per_vcpu + AZURE.min_watts_per_vcpu) / 3
MEAN_MAX_WATTS = (AWS.max_watts_per_vcpu + GCP.max_watts_per_vcpu + AZURE.max_watts_per_vcpu) / 3
MEAN_PUE = (AWS.pue + GCP.pue + AZURE.pue) / 3
LAMBDA = CpuCoefficients(
    MEAN_MIN_WATTS,
    MEAN_MAX_WATTS,
    MEAN_PUE,
    f"assumption: mean of the AWS, GCP and Azure coefficients and PUEs from {CCF_SOURCE}",
)
PROVIDER_COEFFICIENTS: dict[str, CpuCoefficients] = {"aws": AWS, "gcp": GCP, "azure": AZURE, "lambda": LAMBDA}


@dataclass(frozen=True, slots=True)
class GpuPower:
    """Per-GPU draw at idle and at 100 % load, with where the figures come from."""

    idle_watts: float
    max_watts: float
    source: str

    def watts(self, utilization: float) -> float:
        """Same linear interpolation as for CPUs (CCF applies it to GPU hours)."""
        return self.idle_watts + utilization * (self.max_watts - self.idle_watts)


_CCF_GPU = f"{CCF_SOURCE}, Appendix III"
# CCF's A100 idle:max ratio, used to give datasheet-only GPUs an idle figure (our assumption).
IDLE_RATIO = 46 / 407


def _datasheet(max_watts: float, what: str) -> GpuPower:
    return GpuPower(
        max_watts * IDLE_RATIO,
        max_watts,
        f"max {max_watts:g} W: {what} (product datasheet); "
        "idle = max × 46/407, CCF's A100 ratio (assumption)",
    )


# Keyed by the normalised names of carbon_optimizer.domain.gpu (plus CCF-only models).
GPU_POWER: dict[str, GpuPower] = {
    # CCF Appendix III (idle W, 100 % W).
    "T4": GpuPower(8, 71, f"{_CCF_GPU}: NVIDIA T4 8–71 W"),
    "A10G": GpuPower(18, 153, f"{_CCF_GPU}: NVIDIA A10G 18–153 W"),
    "V100-16GB": GpuPower(35, 306, f"{_CCF_GPU}: NVIDIA Tesla V100 35–306 W"),
    "V100-32GB": GpuPower(35, 306, f"{_CCF_GPU}: NVIDIA Tesla V100 35–306 W"),
    "A100-40GB": GpuPower(46, 407, f"{_CCF_GPU}: NVIDIA Tesla A100 46–407 W"),
    "A100-80GB": GpuPower(46, 407, f"{_CCF_GPU}: NVIDIA Tesla A100 46–407 W"),
    "K80": GpuPower(35, 306, f"{_CCF_GPU}: NVIDIA Tesla K80 35–306 W"),
    "M60": GpuPower(35, 306, f"{_CCF_GPU}: NVIDIA Tesla M60 35–306 W"),
    "P4": GpuPower(9, 76.5, f"{_CCF_GPU}: NVIDIA Tesla P4 9–76.5 W"),
    "P100": GpuPower(36, 306, f"{_CCF_GPU}: NVIDIA Tesla P100 36–306 W"),
    "P40": GpuPower(30, 255, f"{_CCF_GPU}: NVIDIA Tesla P40 30–255 W"),
    "K520": GpuPower(26, 229, f"{_CCF_GPU}: NVIDIA K520 26–229 W"),
    "Radeon-Pro-V520": GpuPower(26, 229, f"{_CCF_GPU}: AMD Radeon Pro V520 26–229 W"),
    # T4G (AWS g5g) is the T4 silicon paired with Graviton: CCF's T4 figure (assumption).
    "T4G": GpuPower(8, 71, f"{_CCF_GPU}: NVIDIA T4 8–71 W, applied to T4G (assumption)"),
    # Not in CCF: vendor maximum board power / TDP.
    "H100-80GB": _datasheet(700, "NVIDIA H100 SXM5 80GB, max TDP up to 700 W"),
    "H100-80GB-Mega": _datasheet(700, "NVIDIA H100 SXM5 80GB (GCP A3 Mega), max TDP up to 700 W"),
    "H100-80GB-PCIe": _datasheet(350, "NVIDIA H100 PCIe 80GB, max TDP 350 W"),
    "H100-NVL-94GB": _datasheet(400, "NVIDIA H100 NVL 94GB, max TDP 350–400 W (configurable)"),
    "H200-141GB": _datasheet(700, "NVIDIA H200 SXM 141GB, max TDP up to 700 W"),
    "B200": _datasheet(1000, "NVIDIA B200 (HGX B200), up to 1,000 W per GPU"),
    "B300": _datasheet(1100, "NVIDIA B300 (HGX B300), up to 1,100 W per GPU"),
    "GH200": _datasheet(
        1000, "NVIDIA GH200 Grace Hopper Superchip, module power 450–1,000 W incl. the Grace CPU"
    ),
    "L4": _datasheet(72, "NVIDIA L4, max thermal design power 72 W"),
    "L40S": _datasheet(350, "NVIDIA L40S, max power consumption 350 W"),
    "A10": _datasheet(150, "NVIDIA A10, max power consumption 150 W"),
    "RTX-A6000": _datasheet(300, "NVIDIA RTX A6000, max power consumption 300 W"),
    "Quadro-RTX-6000": _datasheet(295, "NVIDIA Quadro RTX 6000, max power consumption 295 W"),
    "RTX-PRO-6000": _datasheet(600, "NVIDIA RTX PRO 6000 Blackwell Server Edition, up to 600 W"),
    "RTX-PRO-4500": _datasheet(200, "NVIDIA RTX PRO 4500 Blackwell, max power consumption 200 W"),
    "MI300X": _datasheet(750, "AMD Instinct MI300X, peak board power 750 W"),
}
DEFAULT_GPU_MODEL = "A100-80GB"  # conservative default when the model is unknown: CCF's largest GPU


@dataclass(frozen=True, slots=True)
class PowerEstimate:
    """Average IT draw of a workload (before PUE), its parts, and where the numbers come from."""

    watts: float  # average IT draw before PUE
    pue: float
    model: str  # MODEL_NAME or OVERRIDE_MODEL_NAME
    source: str  # citation string
    utilization: float  # 0.0 when power_watts overrides the model (not applicable)
    cpu_watts: float
    memory_watts: float
    gpu_watts: float
    gpu_model: str | None

    @property
    def facility_watts(self) -> float:
        """Draw including data-centre overhead (watts × PUE)."""
        return self.watts * self.pue


def _coefficients(provider: str | None, onprem_pue: float) -> CpuCoefficients:
    if provider is None:
        return CpuCoefficients(
            MEAN_MIN_WATTS,
            MEAN_MAX_WATTS,
            onprem_pue,
            f"assumption: mean of the AWS, GCP and Azure coefficients from {CCF_SOURCE}; "
            f"PUE {onprem_pue:g} from settings (default: {ONPREM_PUE_SOURCE})",
        )
    try:
        return PROVIDER_COEFFICIENTS[provider.lower()]
    except KeyError:
        raise ValueError(f"no energy coefficients for provider {provider!r}") from None


def _gpu_model(workload: Workload, offer: InstanceOffer | None) -> tuple[str, GpuPower, str]:
    """(model name to report, its figures, note) for the workload's GPUs."""
    assert workload.gpu is not None
    models = workload.gpu.models
    if models is not None and len(models) == 1:
        name = models[0]
    elif offer is not None and offer.gpu_model:
        name = offer.gpu_model
    else:
        return (
            DEFAULT_GPU_MODEL,
            GPU_POWER[DEFAULT_GPU_MODEL],
            "GPU model unknown: A100 figure (conservative)",
        )
    power = GPU_POWER.get(name)
    if power is None:
        return name, GPU_POWER[DEFAULT_GPU_MODEL], f"no figure for {name}: A100 figure (conservative)"
    return name, power, power.source


def estimate_power(
    provider: str | None, workload: Workload, offer: InstanceOffer | None, *, onprem_pue: float
) -> PowerEstimate:
    """Average draw of `workload` at a cloud `provider` (None = grid zone / on-prem)."""
    coefficients = _coefficients(provider, onprem_pue)
    if workload.power_watts is not None:
        return PowerEstimate(
            watts=float(workload.power_watts),
            pue=coefficients.pue,
            model=OVERRIDE_MODEL_NAME,
            source=f"power_watts given by the client; PUE: {coefficients.source}",
            utilization=0.0,
            cpu_watts=0.0,
            memory_watts=0.0,
            gpu_watts=0.0,
            gpu_model=None,
        )
    u = AVERAGE_UTILIZATION
    cpu_watts = workload.vcpus * coefficients.watts_per_vcpu(u)
    memory_watts = workload.memory_gib * MEMORY_WATTS_PER_GIB
    gpu_watts = 0.0
    gpu_name: str | None = None
    sources = [coefficients.source, f"memory {MEMORY_WATTS_PER_GIB} W/GiB: {CCF_SOURCE}"]
    if workload.gpu is not None and workload.gpu.count > 0:
        gpu_name, power, note = _gpu_model(workload, offer)
        gpu_watts = workload.gpu.count * power.watts(u)
        sources.append(f"GPU {gpu_name}: {note}")
    return PowerEstimate(
        watts=cpu_watts + memory_watts + gpu_watts,
        pue=coefficients.pue,
        model=MODEL_NAME,
        source="; ".join(sources),
        utilization=u,
        cpu_watts=cpu_watts,
        memory_watts=memory_watts,
        gpu_watts=gpu_watts,
        gpu_model=gpu_name,
    )


def energy_kwh(power: PowerEstimate, duration: timedelta) -> float:
    """Energy of a run: watts × PUE × hours / 1000."""
    return power.watts * power.pue * (duration.total_seconds() / 3600.0) / 1000.0
