"""deploy/k8s/fennec-fda-job.yaml: each pod's script, run for real, starts a `fennec` command the CLI accepts."""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import yaml

from fennec_mlflow import cli
from fennec_mlflow.store import claims
from tests.helpers import REPO

TEMPLATE = REPO / "deploy" / "k8s" / "fennec-fda-job.yaml"


def _documents() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(TEMPLATE.read_text())}


def _pod_command(tmp_path: Path, container: dict, index: int) -> list[str]:
    """The argv the pod's script execs for ``index``: the script runs under /bin/sh with a stand-in
    ``fennec`` on PATH that writes its arguments down."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    out = tmp_path / f"argv-{index}"
    stand_in = bin_dir / "fennec"
    stand_in.write_text('#!/bin/sh\nfor a in fennec "$@"; do printf "%s\\0" "$a"; done > "$ARGV_OUT"\n')
    stand_in.chmod(0o755)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", JOB_COMPLETION_INDEX=str(index), ARGV_OUT=str(out))
    done = subprocess.run([*container["command"], *container["args"]], env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return out.read_text().split("\0")[:-1]


def test_the_job_runs_one_real_fennec_fda_command_per_slice(tmp_path):
    job = _documents()["Job"]
    assert job["spec"]["completionMode"] == "Indexed"
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    slices = env["FENNEC_SLICES"]["value"].split(";")
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == len(slices)
    seen = []
    for index, models in enumerate(slices):
        argv = _pod_command(tmp_path, container, index)
        assert argv[:2] == ["fennec", "fda"], shlex.join(argv)
        command = cli.main.get_command(None, argv[1])
        context = command.make_context(argv[1], argv[2:])  # unknown options or bad values raise here
        assert context.params["models"] == models
        assert context.params["tasks"] == env["FENNEC_TASKS"]["value"]
        seen.append(set(models.split(",")))
    assert any(a & b for i, a in enumerate(seen) for b in seen[i + 1:]), "the example should show overlapping slices"


def test_the_job_reads_the_tracking_uri_from_its_secret_and_sets_the_claim_lease():
    docs = _documents()
    job, secret = docs["Job"], docs["Secret"]
    assert secret["metadata"]["namespace"] == job["metadata"]["namespace"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert secret["stringData"][ref["key"]].startswith(("http://", "https://"))
    for name in ("FENNEC_CLAIM_LEASE_S", "FENNEC_CLAIM_POLL_S"):  # the names claims.py reads, valid values
        assert name in Path(claims.__file__).read_text()
        assert float(env[name]["value"]) > 0
    assert float(env["FENNEC_CLAIM_LEASE_S"]["value"]) > 4 * float(env["FENNEC_CLAIM_POLL_S"]["value"])
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1
