"""What production runs (deploy/): the unit files, the container entrypoint and the Redis settings.

The entrypoint itself starts every worker group of this tier; here its other
roles, the units' restart and stop settings (checked against each other and by
``systemd-analyze verify``) and the Redis configuration on a real redis-server.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.servers import RedisServer
from tests.reliability.supervise import ENTRYPOINT, REPO

DEPLOY = REPO / "deploy"
UNITS = {
    name: DEPLOY / "systemd" / f"{name}.service" for name in ("taatom-jobs-worker", "taatom-jobs-scheduler")
}


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (keys may repeat, as Environment= does)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.parametrize("name", sorted(UNITS))
def test_units_restart_always_and_stop_with_one_sigterm_to_the_main_process(name: str) -> None:
    unit = unit_settings(UNITS[name])
    assert unit["Restart"] == ["always"]
    assert unit["StartLimitIntervalSec"] == ["0"]  # never give up restarting
    assert unit["KillSignal"] == ["SIGTERM"]
    # mixed: SIGTERM to the main process only (it forwards one to each worker), SIGKILL to all at the end.
    assert unit["KillMode"] == ["mixed"]
    stop_s = int(unit["TimeoutStopSec"][0])
    shutdown = re.search(r"--worker-shutdown-timeout (\d+)", unit["ExecStart"][0])
    if shutdown is not None:
        # systemd waits for the graceful shutdown, plus Dramatiq's own stop, before SIGKILL.
        assert stop_s * 1000 >= int(shutdown.group(1)) + 10_000
    assert "ENV_FILE=/etc/taatom-jobs/environment.env" in unit["Environment"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    venv = Path(sys.executable).parent
    for name, path in UNITS.items():
        text = (
            path.read_text()
            .replace("/opt/taatom-jobs/.venv/bin", str(venv))
            .replace("WorkingDirectory=/opt/taatom-jobs", f"WorkingDirectory={REPO}")
            .replace("User=taatom", "User=root")
            .replace("Group=taatom", "Group=root")
        )
        (tmp_path / f"{name}.service").write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.glob("*.service"))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_compose_waits_for_the_graceful_shutdown_and_restarts_always() -> None:
    compose = (DEPLOY / "docker" / "compose.yml").read_text()
    shutdown_ms = int(re.search(r'TAATOM_WORKER_SHUTDOWN_MS: "(\d+)"', compose).group(1))  # type: ignore[union-attr]
    grace = [int(s) for s in re.findall(r"stop_grace_period: (\d+)s", compose)]
    assert grace[0] * 1000 >= shutdown_ms + 10_000  # Docker's default (10 s) would SIGKILL jobs early
    assert len(re.findall(r"^ +restart: always$", compose, re.MULTILINE)) == 3
    assert len(re.findall(r"^ +init: true$", compose, re.MULTILINE)) == 2


def test_entrypoint_runs_any_other_command_as_given() -> None:
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=False).returncode == 0
    echoed = subprocess.run(
        ["sh", str(ENTRYPOINT), "echo", "hello"], capture_output=True, text=True, timeout=10, check=False
    )
    assert (echoed.returncode, echoed.stdout) == (0, "hello\n")
    failing = subprocess.run(["sh", str(ENTRYPOINT), "false"], timeout=10, check=False)
    assert failing.returncode == 1


def test_production_redis_config_turns_aof_on_and_eviction_off(
    redis_server: Callable[..., RedisServer],
) -> None:
    server = redis_server("production", config=DEPLOY / "redis" / "redis-production.conf")
    client = server.client()
    try:
        config = {**client.config_get("appendonly"), **client.config_get("appendfsync")}
        config |= client.config_get("maxmemory-policy") | client.config_get("save")
    finally:
        client.close()
    assert config == {
        "appendonly": "yes",
        "appendfsync": "everysec",
        "maxmemory-policy": "noeviction",
        "save": "",
    }
