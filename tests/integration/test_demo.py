"""`opsmedic demo` runs the whole loop on embedded defaults, as a user would run it."""

from __future__ import annotations

import subprocess

from tests.helpers import OPSMEDIC, clean_env


def test_demo_runs_the_whole_loop(tmp_path, docker_host, busybox_image):
    out = subprocess.run(
        [*OPSMEDIC, "demo"],
        env=clean_env(DOCKER_HOST=docker_host),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    for step in ("[1/6]", "[3/6] detected", "[4/6] RCA by rules", "[5/6] restart", "[6/6] audit"):
        assert step in out.stdout, out.stdout
    assert "verified" in out.stdout
    # with a Docker engine and the busybox image, a container goes through the loop too
    assert "container:opsmedic-demo-" in out.stdout and out.stdout.count("[5/6]") == 2
