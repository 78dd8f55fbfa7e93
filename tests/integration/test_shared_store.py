"""Several OpsMedic processes on one MongoDB-wire store: one action per target at a time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

from tests.helpers import REPO, clean_env

MANAGED = {"opsmedic.managed": "true"}


def test_action_lease_lets_one_of_two_processes_restart(
    tmp_path, mongo_url, docker_host, docker_env
):
    box = docker_env.run("shared", labels=MANAGED)
    store_url = f"{mongo_url}/lease_{uuid.uuid4().hex[:8]}"
    start_at = time.time() + 6  # both imported and connected by then
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration._restart_worker",
                store_url,
                str(tmp_path / f"d{i}"),
                f"container:{box.name}",
                str(start_at),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=clean_env(DOCKER_HOST=docker_host),
        )
        for i in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    done = [r for r in results if not r["error"]]
    refused = [r for r in results if r["error"]]
    assert len(done) == 1, results
    assert len(refused) == 1
    assert "in progress" in refused[0]["text"] or "another OpsMedic" in refused[0]["text"]
