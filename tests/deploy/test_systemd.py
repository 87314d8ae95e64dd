"""The systemd unit (issue 18, docs/deploy.md "systemd"): ``systemd-analyze verify`` (unit
syntax, every key known, the command executable) and ``systemd-analyze security --offline``
(the hardening's exposure score) on ``deploy/fechatter.service``. Neither needs a running
systemd. The unit's ExecStart names where the single file is installed on a server
(/usr/local/bin/fechatter.pyz); here it is pointed at this environment's ``fechatter`` entry
point so verify's executable check has something real to check.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "fechatter.service"
# systemd-analyze security's scale: 0 (locked down) … 10 (exposed); "OK" is below 2.0.
MAX_EXPOSURE = 2.0
HARDENING = (
    "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "DynamicUser=yes",
    "ProtectHome=yes", "CapabilityBoundingSet=",
)  # fmt: skip


@pytest.fixture
def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing (.ci/run installs the systemd package)")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return found


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at an executable that exists here."""
    entry = Path(sys.executable).parent / "fechatter"
    assert entry.exists()
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/fechatter.pyz serve\n" in text
    copy = tmp_path / "fechatter.service"
    copy.write_text(text.replace("/usr/local/bin/fechatter.pyz", str(entry)))
    return copy


def test_the_unit_is_hardened() -> None:
    lines = UNIT.read_text().splitlines()
    assert [h for h in HARDENING if h not in lines] == []
    # The one writable place is the data directory the database URL points into.
    assert "ReadWritePaths=/var/lib/fechatter" in lines
    assert "Environment=FECHATTER_DATABASE_URL=sqlite:////var/lib/fechatter/fechatter.db" in lines


def test_systemd_analyze_verify_passes(analyze: str, unit: Path) -> None:
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_exposure_score_is_ok(analyze: str, unit: Path) -> None:
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found is not None, result.stdout
    assert float(found.group(1)) < MAX_EXPOSURE, result.stdout
