"""The two distributions, built as wheels without -e and installed each in a fresh virtual environment: the client
(`keyscope`, protos/pyproject.toml) imports and calls a running server with none of the server's code or
dependencies; the server (`keyscope-server`, ./pyproject.toml) starts and answers, with the client distribution as
its one dependency of ours (the contract it serves). Neither wheel holds a file of the other's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyscope
from tests.processes import ROOT, free_port, run, start_serve, stop

PIP_TIMEOUT = 600


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH (the repository must not be importable) and the pins of constraints.txt."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("KEYSCOPE_")
    }
    return {**env, "PIP_CONSTRAINT": str(ROOT / "constraints.txt"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _pip(python: Path, *args: str) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", *args], env=_clean_env(), capture_output=True, text=True, timeout=PIP_TIMEOUT
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _venv(directory: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True, timeout=120)
    return directory / "bin" / "python"


def _files(python: Path, distribution: str, cwd: Path) -> list[str]:
    script = f"import importlib.metadata as m, json; print(json.dumps([str(f) for f in m.files({distribution!r})]))"
    result = subprocess.run(
        [str(python), "-c", script], env=_clean_env(), cwd=cwd, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def _importable(python: Path, module: str, cwd: Path) -> bool:
    script = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    return subprocess.run([str(python), "-c", script], env=_clean_env(), cwd=cwd).returncode == 0


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both wheels, built from copies of the sources (so that no build output lands in the repository)."""
    work = tmp_path_factory.mktemp("build")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(ROOT / "protos", work / "protos", ignore=ignore)
    server = work / "server"
    shutil.copytree(ROOT / "keyscope_server", server / "keyscope_server", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, server / name)
    out = work / "wheels"
    for source in (work / "protos", server):
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
        result = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=PIP_TIMEOUT)
        assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name.split("-")[0] for p in out.glob("*.whl")) == ["keyscope", "keyscope_server"]
    return out


@pytest.fixture(scope="module")
def client_env(wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = _venv(tmp_path_factory.mktemp("client-env") / "venv")
    [wheel] = wheels.glob("keyscope-*.whl")
    _pip(python, "install", "-q", str(wheel))
    return python


@pytest.fixture(scope="module")
def server_env(wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = _venv(tmp_path_factory.mktemp("server-env") / "venv")
    [wheel] = wheels.glob("keyscope_server-*.whl")
    _pip(python, "install", "-q", "--find-links", str(wheels), str(wheel))
    return python


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """This repository's server, as a process: a port and a root key with every permission."""
    db = tmp_path / "keyscope.db"
    created = run(tmp_path, "create-root-key", "--db", str(db), "--all")
    assert created.returncode == 0, created.stderr
    root_key = created.stdout.strip()
    port = free_port()
    process = start_serve(tmp_path, db, port)
    yield port, root_key
    stop(process, signal.SIGTERM)


def test_ok_client_wheel_holds_only_the_client(client_env: Path, tmp_path: Path) -> None:
    files = _files(client_env, "keyscope", tmp_path)
    assert files and all(f.startswith(("keyscope/", "keyscope-0.1.0.dist-info/")) for f in files)
    assert "keyscope/v1/keys_pb2.pyi" in files and "keyscope/py.typed" in files and "keyscope/clients.py" in files
    for absent in ("keyscope_server", "server", "asyncpg", "grpc_health", "grpc_reflection"):
        assert not _importable(client_env, absent, tmp_path), absent


def test_ok_client_alone_calls_a_running_server(client_env: Path, running: tuple[int, str], tmp_path: Path) -> None:
    port, root_key = running
    script = textwrap.dedent(
        f"""
        import asyncio, sys, keyscope

        async def main():
            async with keyscope.AsyncClient("127.0.0.1:{port}", root_key=sys.stdin.read().strip()) as client:
                api = (await client.apis.CreateApi(keyscope.CreateApiRequest(name="from a wheel"))).api
                try:
                    await client.keys.GetKey(keyscope.GetKeyRequest(key_id="key_none"))
                except keyscope.NotFound as error:
                    print(api.name, error.resources[0][1], keyscope.__file__)

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [str(client_env), "-c", script], input=root_key, env=_clean_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    name, missing, location = result.stdout.rsplit(" ", 2)
    assert (name, missing) == ("from a wheel", "key_none")
    assert Path(location.strip()).is_relative_to(client_env.parent.parent)  # the installed copy, not the repository's


def test_ok_server_wheel_holds_only_the_server(server_env: Path, tmp_path: Path) -> None:
    files = _files(server_env, "keyscope-server", tmp_path)
    assert files and all(
        f.startswith(("keyscope_server/", "keyscope_server-0.1.0.dist-info/", "../../../bin/keyscope-server"))
        for f in files
    ), [f for f in files if not f.startswith("keyscope_server")]
    assert "keyscope_server/store/postgresql/batches.py" in files and "keyscope_server/py.typed" in files
    assert not any(f.startswith("keyscope/") for f in files)


def test_ok_server_alone_starts_and_answers(server_env: Path, tmp_path: Path) -> None:
    db = tmp_path / "installed.db"
    created = subprocess.run(
        [str(server_env.with_name("keyscope-server")), "create-root-key", "--db", str(db), "--all"],
        env=_clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    port = free_port()
    process = start_serve(tmp_path, db, port, env=_clean_env(), python=str(server_env))
    try:
        with keyscope.Client(f"127.0.0.1:{port}", root_key=created.stdout.strip()) as client:
            api = client.apis.CreateApi(keyscope.CreateApiRequest(name="served from a wheel")).api
            assert client.apis.GetApi(keyscope.GetApiRequest(api_id=api.id)).api == api
    finally:
        code, output = stop(process, signal.SIGTERM)
    assert code == 0, output
