"""clean_disk with Docker leftovers on a real engine: dangling images, stopped unmanaged
containers. Managed containers and images in use are never offered."""

from __future__ import annotations

import json

from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.deps import Deps
from tests.helpers import make_settings
from tests.services import busybox_rootfs_tar


async def test_plan_and_apply_docker_leftovers(tmp_path, docker_host, docker_client, docker_env):
    repo = f"opsmedic-test/dangle-{tmp_path.name[-6:].lower()}"
    tar = busybox_rootfs_tar()
    docker_client.api.import_image_from_data(tar, repository=repo, tag="v")
    old = docker_client.images.get(f"{repo}:v").id
    docker_client.api.import_image_from_data(tar + b"\0" * 1024, repository=repo, tag="v")
    assert docker_client.images.get(f"{repo}:v").id != old  # the first one is dangling now
    stray = docker_env.run("stray", "exit 0")
    keep = docker_env.run("keep", "exit 0", labels={"opsmedic.managed": "true"})
    docker_env.wait_status(stray, "exited")
    docker_env.wait_status(keep, "exited")
    root = tmp_path / "junk"
    root.mkdir()
    clean = {"docker_dangling_images": True, "docker_stopped_unmanaged": True}
    settings = make_settings(tmp_path, mode="heal", clean_roots=[str(root)], clean=clean)
    deps = Deps.build(settings)
    await deps.start()
    async with Client(create_server(settings, deps)) as c:
        plan = (await c.call_tool("clean_disk", {"action": "plan"})).structured_content
        text = json.dumps(plan)
        assert old.split(":")[1][:12] in text and stray.id[:12] in text
        assert keep.id[:12] not in text  # managed: never offered
        done = await c.call_tool("clean_disk", {"action": "apply", "plan_id": plan["plan_id"]})
    await deps.stop()
    result = json.dumps(done.structured_content)
    assert stray.id[:12] in result
    assert old not in {i.id for i in docker_client.images.list(all=True)}
    assert keep.id in {b.id for b in docker_client.containers.list(all=True)}
    docker_client.images.remove(f"{repo}:v", force=True)
