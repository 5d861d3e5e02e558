"""Ray's processes go with the command that started them, however it ends.

Ray ties the processes a driver starts itself (GCS, raylet, …) to the driver's life, but
not those the raylet starts: its agents and idle workers outlive a SIGKILLed driver and
keep their ports. Every process of a local Ray inherits a marker in its environment; a
small watchdog, started before Ray, keeps a list of the marked processes and of every
process below them (once reparented, an agent no longer shows whose it was), waits for
the driver's end (the pipe it reads from closes, whatever way the driver ended), and then
stops every process on its list.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

__all__ = ["MARKER_ENV", "start_watchdog"]

#: The environment variable each process of one local Ray carries, with that Ray's id.
MARKER_ENV = "MTLSTUDY_RAY_SESSION"

# Run by a bare interpreter: no Ray, nothing to import but the standard library.
_WATCH = r"""
import os, select, signal, sys, time

marker = ("{name}=" + sys.argv[1]).encode()
spared = {os.getpid(), int(sys.argv[2])}  # the driver is never stopped by this
tracked = {}  # pid -> start time: the marked processes and everything below them

def table():
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in spared:
            try:
                with open(f"/proc/{entry}/stat") as file:
                    fields = file.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(entry)] = (int(fields[1]), fields[19])
    return found

def marked(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as file:
            return marker in file.read().split(b"\0")
    except OSError:
        return False  # gone, or another user's

def look():
    procs = table()
    for pid, (parent, started) in procs.items():
        if pid not in tracked and (parent in tracked or marked(pid)):
            tracked[pid] = started
    # Children found before their parents in this pass; a title set by Ray (which
    # overwrites the environment) hides the mark, never the parent.
    grew = True
    while grew:
        grew = False
        for pid, (parent, started) in procs.items():
            if pid not in tracked and parent in tracked:
                tracked[pid] = started
                grew = True
    return [pid for pid, started in tracked.items() if procs.get(pid, (0, ""))[1] == started]

def stop(sig):
    alive = look()
    for pid in alive:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    return alive

signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the driver, not this
stdin = sys.stdin.buffer.raw
while True:  # until the driver's end of the pipe closes, however the driver ended
    ready, _, _ = select.select([stdin], [], [], 1.0)
    if ready and not stdin.read(4096):
        break
    look()
stop(signal.SIGTERM)
deadline = time.monotonic() + 5
while look() and time.monotonic() < deadline:
    time.sleep(0.2)
stop(signal.SIGKILL)
""".replace("{name}", MARKER_ENV)


def start_watchdog() -> subprocess.Popen[bytes] | None:
    """Mark this process's environment (so every Ray process started until the mark is
    removed carries it) and start the watchdog; close its ``stdin`` to stop the marked
    processes. None where processes cannot be listed (no ``/proc``)."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc"):
        return None
    session = uuid.uuid4().hex
    os.environ[MARKER_ENV] = session
    env = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
    return subprocess.Popen(
        [sys.executable, "-I", "-c", _WATCH, session, str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # not in the driver's group: a group kill leaves it working
    )
