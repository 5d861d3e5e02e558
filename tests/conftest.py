"""Ray in tests writes under a temporary folder of its own, not the shared /tmp/ray; the
object-store tests get a real S3 endpoint on this machine."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = Path(__file__).parent


#: Folders whose tests start Ray clusters or whole studies: with ``-n 2`` (pytest-xdist)
#: they run one at a time on one worker, beside the other worker's lighter tests.
_SERIAL = ("integration", "cluster")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(part in _SERIAL for part in item.path.relative_to(_TESTS).parts[:1]):
            item.add_marker(pytest.mark.xdist_group("ray"))
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
