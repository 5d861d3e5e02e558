"""Ray in tests writes under a temporary folder of its own, not the shared /tmp/ray; the
object-store tests get a real S3 endpoint on this machine, and the search's databases a
real PostgreSQL and a real Redis server, each asking for a password."""

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu:
        import torch

        if not torch.cuda.is_available():
            for item in gpu:
                item.add_marker(pytest.mark.skip(reason="no CUDA GPU visible to torch"))


@pytest.fixture(autouse=True, scope="session")
def _ray_tmpdir() -> Iterator[None]:
    if os.environ.get("RAY_TMPDIR"):
        yield
        return
    # Short: Ray's socket paths under it must stay within the OS's 107 bytes.
    folder = tempfile.mkdtemp(prefix="r.", dir="/tmp")
    os.environ["RAY_TMPDIR"] = folder
    yield
    del os.environ["RAY_TMPDIR"]
    shutil.rmtree(folder, ignore_errors=True)


#: What pyarrow, boto3 and Ray's trial processes read to reach it.
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_bucket() -> Iterator[str]:
    """A real S3 endpoint on this machine (moto's server, over HTTP) with a bucket; the
    environment points pyarrow, boto3 and Ray's trial processes at it. Yields the
    bucket's URI."""
    bucket = "mtlstudy-test"
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = {k: os.environ.get(k) for k in [*_CREDENTIALS, "AWS_ENDPOINT_URL"]}
    os.environ.update(_CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)  # noqa: S310
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the local S3 server did not start") from None
                time.sleep(0.2)
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield f"s3://{bucket}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    # Tiny models: one thread avoids OpenMP overhead and stalls on a busy machine.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class Server:
    """A database server for the search: its URL (no password) and its password."""

    url: str
    password: str


def _wait_until(ready, server: subprocess.Popen | None, what: str) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        if time.monotonic() > deadline or (server is not None and server.poll() is not None):
            raise RuntimeError(f"the local {what} server did not start")
        time.sleep(0.1)


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(versions[-1]).parent if versions else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """A real PostgreSQL server on 127.0.0.1 and a socket in a temporary folder; TCP
    connections need the password (scram-sha-256), given to clients as ``PGPASSWORD``."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb is not installed (apt-get install postgresql)")
    run_as: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="pg."))
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no user 'postgres' to run PostgreSQL as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    password = secrets.token_hex(8)
    (folder / "pw").write_text(password)
    if run_as:
        os.chown(folder / "pw", user.pw_uid, user.pw_gid)
    data, port = folder / "data", free_port()
    env = {**os.environ, "LC_ALL": "C"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    subprocess.run(
        [*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "mtlstudy", "--no-sync",
         # UTF-8 as a real server's: SQL_ASCII (the C locale's) gives clients bytes.
         "-E", "UTF8", f"--pwfile={folder / 'pw'}", "--auth-local=trust",
         "--auth-host=scram-sha-256"],
        check=True, **quiet,
    )  # fmt: skip
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*ctl, "-l", str(folder / "log"), "-o", options, "-w", "start"], check=True, **quiet
    )
    try:
        yield Server(f"postgresql://mtlstudy@127.0.0.1:{port}/postgres", password)
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], check=False, **quiet)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Server]:
    """A real Redis server on 127.0.0.1 that keeps nothing on disk and asks for a password."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    folder, port, password = tempfile.mkdtemp(prefix="redis."), free_port(), secrets.token_hex(8)
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", folder, "--requirepass", password],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    try:
        _wait_until(ready, server, "Redis")
        yield Server(f"redis://127.0.0.1:{port}/0", password)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgresql_url(postgres_server: Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """The PostgreSQL server's URL, its password in the environment as libpq reads it."""
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    return postgres_server.url


@pytest.fixture
def redis_url(redis_server: Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Redis server's URL, its password in the environment as the search reads it."""
    from study.spec import REDIS_PASSWORD_ENV

    monkeypatch.setenv(REDIS_PASSWORD_ENV, redis_server.password)
    return redis_server.url
