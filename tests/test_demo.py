"""The README's demo command runs end to end on embedded defaults."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.services.workers import REPO, clean_environ


@pytest.mark.slow
def test_demo_console_script_runs_every_sample(tmp_path: Path) -> None:
    script = shutil.which("taatom-jobs") or str(Path(__import__("sys").executable).with_name("taatom-jobs"))
    # Even with real-mode variables set, the demo stays embedded and needs no service.
    env = clean_environ(
        {
            "EMBEDDED_DATA_DIR": str(tmp_path),
            "ENABLE_BACKGROUND_JOBS": "true",
            "REDIS_URL": "redis://127.0.0.1:1/0",
        }
    )
    out = subprocess.run(
        [script, "demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    table = out.stdout.split("job ", 1)[1]
    rows = {line.split("  ")[0]: line for line in table.splitlines()[2:] if line.strip()}
    assert "FILE_4001" in rows["email: no recipient"] and "refused" in rows["email: no recipient"]
    assert "VAL_2001" in rows["cleanup: 3 days"]
    # every accepted sample reached a final state through the worker
    for name in ("email: OTP", "image: thumbnail", "analytics: hourly", "cleanup: dry run"):
        assert any(state in rows[name] for state in ("succeeded", "failed")), rows[name]
    # the OTP never reaches the output
    assert "418203" not in out.stdout + out.stderr
