"""docs/sites.md runs as written: its shell blocks, in order, in an empty directory (with free
ports in place of the walkthrough's), simulate three hospitals and then deploy them on a
loopback Flower deployment."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr")

WALKTHROUGH = Path(__file__).resolve().parents[1] / "docs" / "sites.md"
PORTS = ("9091", "9094", "9095", "9096")


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _script() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", WALKTHROUGH.read_text(), flags=re.S)
    script = "set -e\n" + "\n".join(blocks)
    for port in PORTS:
        script = script.replace(port, _free_port())
    return script


def _summary(run_parent: Path) -> dict:
    (summary,) = run_parent.glob("three-hospitals-*/summary.json")
    return json.loads(summary.read_text())


@pytest.mark.slow
def test_the_three_hospitals_walkthrough_runs_as_written(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                  os.environ.get("PATH", "")])}
    process = subprocess.Popen(["bash", "-c", _script()], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=900)
    finally:
        with contextlib.suppress(ProcessLookupError):  # a SuperNode or SuperLink left behind
            os.killpg(process.pid, signal.SIGKILL)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-4000:] + (tmp_path / "superlink.log").read_text()[-2000:]
    assert sorted(p.name for p in tmp_path.glob("hospital_*.csv")) == [
        "hospital_a.csv", "hospital_b.csv", "hospital_c.csv"]
    for parent in ("runs", "deployed"):
        summary = _summary(tmp_path / parent)
        pooled = summary["federated_metrics"]["pooled"]
        assert pooled["n"] > 0 and 0.0 <= pooled["accuracy"] <= 1.0
        assert summary["privacy_mechanism"] == "local" and summary["epsilon"] <= 8.0 + 1e-6
        assert summary["secure_aggregation"] == "masking"
