"""CI and Kubernetes recipes: the GitHub Action, the GitLab job template, the gated Job example.

The Action's script runs for real with the environment its action.yml maps the inputs to, and a
temporary file as $GITHUB_OUTPUT; the GitLab template's script runs in `sh` with its variables.
The Kubernetes example's init-container arguments are parsed by the real CLI parser (rendering and
schema validation of the manifest are in .ci/validate-deploy.sh).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from carbon_optimizer.cli import build_parser, parse_minutes
from tests.callers.conftest import clean_env
from tests.deployment.harness import ROOT, free_port

ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
GITLAB = yaml.safe_load((ROOT / "deploy/ci/gitlab-carbon-gate.yml").read_text())
BIN = str(Path(sys.executable).parent)


def gate_step() -> dict[str, Any]:
    steps: list[dict[str, Any]] = [s for s in ACTION["runs"]["steps"] if s.get("id") == "gate"]
    assert len(steps) == 1
    return steps[0]


def action_env(inputs: dict[str, str]) -> dict[str, str]:
    """The gate step's env as the runner would build it: ${{ inputs.x }} from `inputs` or defaults."""
    values = {name: spec.get("default", "") for name, spec in ACTION["inputs"].items()}
    values.update(inputs)
    env: dict[str, str] = {}
    for key, template in gate_step()["env"].items():
        env[key] = re.sub(
            r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", lambda m: values[m.group(1)], template
        ).replace("${{ github.action_path }}", str(ROOT))
    return env


def run_action(tmp_path: Path, **inputs: str) -> tuple[int, dict[str, str], str]:
    output = tmp_path / "github_output"
    output.write_text("")
    env = clean_env(
        GITHUB_OUTPUT=str(output),
        CARBON_OPTIMIZER=f"{sys.executable} -m carbon_optimizer",
        **action_env(inputs),
    )
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/gha_gate.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if line)
    return done.returncode, outputs, done.stderr


def test_action_declares_the_inputs_and_outputs_its_script_provides() -> None:
    assert {"locations", "duration", "max-delay"} <= ACTION["inputs"].keys()
    assert ACTION["inputs"]["locations"]["required"] is True
    assert ACTION["runs"]["using"] == "composite"
    for name in ("start", "location", "saving"):
        assert ACTION["outputs"][name]["value"] == "${{ steps.gate.outputs." + name + " }}"
    script = (ROOT / "scripts/gha_gate.sh").read_text()
    assert os.access(ROOT / "scripts/gha_gate.sh", os.X_OK)
    for variable in gate_step()["env"]:
        if variable.startswith("GATE_"):
            assert variable in script
    # Inputs reach the script only through env, never spliced into the shell line.
    assert "inputs." not in gate_step()["run"]


def test_action_reports_the_choice_through_github_output(tmp_path: Path) -> None:
    code, outputs, stderr = run_action(
        tmp_path,
        **{"locations": "zone:DE,\n zone:FR", "duration": "1h", "max-delay": "6h", "dry-run": "true"},
    )
    assert code == 0, stderr
    assert outputs["location"] in {"zone:DE", "zone:FR"}
    start = datetime.fromisoformat(outputs["start"].replace("Z", "+00:00"))
    now = datetime.now(UTC)
    assert now - timedelta(minutes=2) <= start <= now + timedelta(hours=6)
    assert float(outputs["saving"]) >= 0
    assert outputs["fail-open"] == "false"
    assert "carbon-optimizer: start" in stderr


def test_action_fails_open_and_fail_closed_stops_the_job(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    code, outputs, stderr = run_action(tmp_path, locations="zone:DE", server=dead)
    assert code == 0
    assert outputs["fail-open"] == "true"
    assert outputs["location"] == ""
    assert "fail open" in stderr
    code, outputs, _ = run_action(tmp_path, locations="zone:DE", server=dead, **{"fail-closed": "true"})
    assert code == 69
    assert outputs == {}


def test_gitlab_template_runs_and_writes_a_dotenv_report(tmp_path: Path) -> None:
    job = GITLAB[".carbon-gate"]
    assert job["artifacts"]["reports"]["dotenv"] == "carbon-gate.env"
    variables = {k: str(v) for k, v in job["variables"].items()}
    variables.update(CARBON_GATE_LOCATIONS="zone:DE,zone:FR", CARBON_GATE_MAX_DELAY="0")
    env = clean_env(**variables, PATH=BIN + os.pathsep + os.environ["PATH"])
    for line in job["script"]:
        done = subprocess.run(
            ["sh", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    report = dict(
        line.split("=", 1) for line in (tmp_path / "carbon-gate.env").read_text().splitlines() if line
    )
    assert report["CARBON_GATE_LOCATION"] in {"zone:DE", "zone:FR"}
    start = datetime.fromisoformat(report["CARBON_GATE_START"].replace("Z", "+00:00"))
    assert abs(start - datetime.now(UTC)) < timedelta(minutes=2)  # max delay 0: start now
    assert report["CARBON_GATE_FAIL_OPEN"] == "false"
    assert float(report["CARBON_GATE_SAVING"]) >= 0


def test_kubernetes_example_init_container_is_a_valid_wait() -> None:
    documents = list(yaml.safe_load_all((ROOT / "k8s/examples/green-job.yaml").read_text()))
    job = next(d for d in documents if d["kind"] == "Job")
    policy = next(d for d in documents if d["kind"] == "NetworkPolicy")
    pod = job["spec"]["template"]
    [init] = pod["spec"]["initContainers"]
    assert init["command"] == ["carbon-optimizer", "wait"]
    args = build_parser().parse_args(["wait", *init["args"]])
    assert args.command == "wait"
    assert args.server.startswith("http://carbon-optimizer.")
    delay_plus_run = timedelta(minutes=parse_minutes(args.max_delay) + parse_minutes(args.duration))
    assert job["spec"]["activeDeadlineSeconds"] > delay_plus_run.total_seconds()
    # The policy admits exactly the gated pods, to the API pods of the base deployment.
    selector = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    deployment = next(
        d
        for d in yaml.safe_load_all((ROOT / "k8s/base/deployment.yaml").read_text())
        if d["kind"] == "Deployment"
    )
    api_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= api_labels.items()


@pytest.mark.parametrize(
    "path", ["action.yml", "deploy/ci/gitlab-carbon-gate.yml", "k8s/examples/green-job.yaml"]
)
def test_recipes_document_how_to_use_them(path: str) -> None:
    head = (ROOT / path).read_text().splitlines()[0]
    assert head.startswith("#")
