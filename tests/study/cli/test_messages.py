"""Messages a user can act on: each names the argument at fault and what would work."""

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from study.cli import main


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_report_on_a_missing_study_blames_the_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-study"
    out = tmp_path / "no-such-folder" / "report.html"  # wrong too, but not the first fault
    err = _error(capsys, ["report", str(missing), "--out", str(out)])
    assert err.startswith(f"mtlstudy: error: report: results {missing}: no such folder;"), err
    assert "--out" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _error(capsys, ["report", str(empty), "--out", str(tmp_path / "r.html")])
    assert f"report: results {empty}: no trials results" in err and "--out" not in err


def test_jobs_without_a_cluster_say_how_to_name_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    err = _error(capsys, ["jobs", "list"])
    assert err.startswith(
        f"mtlstudy: error: cannot reach the Ray Jobs API at http://127.0.0.1:{port}"
    )
    assert "--address" in err and "RAY_ADDRESS" in err


def _outward_address() -> str:
    """This machine's address on its network (not loopback), or skip."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # no packet is sent: routing only
        except OSError:
            pytest.skip("no network interface but loopback")
        address = sock.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("no network interface but loopback")
    return address


class _TokenHead(BaseHTTPRequestHandler):
    """A dashboard that wants a token; it records the Authorization headers it gets."""

    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.headers.get("authorization"):
            self.seen.append(self.headers["authorization"])
        if self.path == "/api/authentication_mode":
            body = json.dumps({"authentication_mode": "token"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
        else:
            body = b"{}"
            self.send_response(404)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def token_head() -> Iterator[str]:
    server = ThreadingHTTPServer((_outward_address(), 0), _TokenHead)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _TokenHead.seen = []
    yield f"http://{server.server_address[0]}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_token_crosses_plain_http_only_when_the_user_says_so(
    token_head: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "ab" * 32
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    monkeypatch.delenv("MTLSTUDY_TOKEN_OVER_HTTP", raising=False)
    err = _error(capsys, ["jobs", "list", "--address", token_head])
    assert f"the Ray cluster at {token_head} wants its token" in err and "https://" in err
    assert "--token-over-http" in err and token not in err
    assert _TokenHead.seen == []  # asked, never sent

    main(["jobs", "list", "--address", token_head, "--token-over-http"])
    assert capsys.readouterr().err.count("\n") <= 1
    assert f"Bearer {token}" in _TokenHead.seen
    os.environ.pop("MTLSTUDY_TOKEN_OVER_HTTP", None)


def _read_only_folder(folder: Path) -> Iterator[Path]:
    """A folder no one can write to, root included: a read-only mount where allowed."""
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mount.returncode != 0:
        pytest.skip("root, and no read-only mount allowed here: permissions bind no one")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    yield from _read_only_folder(tmp_path / "results" / "study")


def test_a_read_only_results_folder_is_one_line(
    read_only: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTLSTUDY_SECRET_DIR", str(read_only.parent.parent / "secret"))
    spec = read_only.parent.parent / "spec.yaml"
    spec.write_text(f"name: study\ntasks: [depth]\nresults: {read_only.parent}\n")
    err = _error(capsys, ["run", str(spec)])
    assert err.startswith(f"mtlstudy: error: results: cannot write the study's folder {read_only}")
    assert "Read-only file system" in err or "Permission denied" in err
    # The root itself read-only: the spec's check says so before anything starts.
    err = _error(capsys, ["run", str(spec), "--results", str(read_only)])
    assert str(read_only) in err and "writable" in err
