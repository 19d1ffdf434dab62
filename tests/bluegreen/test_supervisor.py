from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import httpx
import pytest

from bluegreen.config import Colour
from bluegreen.errors import ReadyTimeout
from bluegreen.release import Release
from bluegreen.supervisor import Instance, Supervisor

FIXTURES = Path(__file__).parent / "fixtures"
TINYAPP = FIXTURES / "tinyapp.py"

pytestmark = pytest.mark.slow


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def eventually(cond: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


class Changes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def release(tmp_path: Path) -> Release:
    return Release(
        id="r-test",
        dir=FIXTURES,
        python=Path(sys.executable),
        deps_hash="none",
        source="test",
        venv=Path(sys.prefix),
    )


@pytest.fixture
def changes() -> Changes:
    return Changes()


@pytest.fixture
async def sup(tmp_path: Path, changes: Changes) -> AsyncIterator[Supervisor]:
    s = Supervisor(on_change=changes, log_dir=tmp_path / "logs", poll_interval=0.2)
    try:
        yield s
    finally:
        await s.stop_all(timeout=5)


def tinyapp(port: int) -> Sequence[str]:
    return [sys.executable, str(TINYAPP), "--port", str(port)]


async def start(
    sup: Supervisor, release: Release, id: str, colour: Colour = "blue", **env: str
) -> Instance:
    return await sup.start_instance(
        id=id,
        colour=colour,
        release=release,
        command_for=tinyapp,
        env=env,
        cwd=FIXTURES,
        live_path="/healthz/live",
        ready_path="/healthz/ready",
    )


async def test_start_two_crash_one_restart_same_port(
    sup: Supervisor, release: Release, changes: Changes, tmp_path: Path
) -> None:
    a = await start(sup, release, "blue-1")
    b = await start(sup, release, "blue-2")
    assert a.port != b.port
    await sup.wait_ready([a, b], timeout=15)
    assert a.healthy and b.healthy
    async with httpx.AsyncClient(trust_env=False) as client:
        resp = await client.get(f"{a.url}/version")
    assert resp.json() == {"release": "r-test", "color": "blue"}

    old_pid, old_port = a.pid, a.port
    assert old_pid is not None
    before = changes.count
    os.kill(old_pid, signal.SIGKILL)
    await eventually(lambda: not a.healthy, 1.0, "killed instance marked unhealthy")
    assert changes.count > before
    assert b.healthy
    await eventually(lambda: a.healthy, 8.0, "crashed instance restarted and healthy")
    assert a.pid != old_pid and a.port == old_port
    assert a.restarts == 1 and a.exits == 1
    assert not pid_alive(old_pid)
    assert any("exited with code -9" in line for line in a.logs())
    assert (tmp_path / "logs" / "blue-1.log").read_text().count("tinyapp: starting") == 2


async def test_never_ready_raises_ready_timeout_with_log_tail(
    sup: Supervisor, release: Release
) -> None:
    inst = await start(sup, release, "green-1", "green", TINYAPP_NEVER_READY="1")
    # Its first output line is in before the wait starts: on a busy machine the process may
    # take longer than the timeout to say anything, and the message quotes its log tail.
    await eventually(
        lambda: any("configured never to be ready" in line for line in inst.logs()),
        30.0,
        "tinyapp started",
    )
    with pytest.raises(ReadyTimeout) as info:
        await sup.wait_ready([inst], timeout=1.5)
    # It gave up because its timeout ran out (the message says so), not because the
    # instance died or was stopped: that one is still running, never having exited.
    assert inst.state == "running" and inst.exits == 0 and inst.pid is not None
    assert pid_alive(inst.pid) and not inst.healthy
    assert info.value.instance_ids == ("green-1",)
    msg = str(info.value)
    assert "green-1" in msg and "did not become ready within 1.5s" in msg
    assert "tinyapp: configured never to be ready" in msg


async def test_crashing_command_fails_fast(sup: Supervisor, release: Release) -> None:
    inst = await sup.start_instance(
        id="blue-1",
        colour="blue",
        release=release,
        command_for=lambda port: [
            sys.executable,
            "-c",
            "import sys; print('bad config'); sys.exit(4)",
        ],
        env={},
        cwd=FIXTURES,
        live_path="/healthz/live",
        ready_path="/healthz/ready",
    )
    with pytest.raises(ReadyTimeout) as info:
        await sup.wait_ready([inst], timeout=30)
    msg = str(info.value)
    # It gave up because the command crashed, not because the 30 s ran out.
    assert "did not become ready within" not in msg
    assert "crashed repeatedly" in msg and "bad config" in msg and "last code 4" in msg


async def test_missing_executable_reported(sup: Supervisor, release: Release) -> None:
    inst = await sup.start_instance(
        id="blue-1",
        colour="blue",
        release=release,
        command_for=lambda port: ["/nonexistent/app", str(port)],
        env={},
        cwd=FIXTURES,
        live_path="/healthz/live",
        ready_path="/healthz/ready",
    )
    with pytest.raises(ReadyTimeout, match="cannot start /nonexistent/app"):
        await sup.wait_ready([inst], timeout=30)


async def test_mark_failed_until_next_good_check(
    sup: Supervisor, release: Release, changes: Changes
) -> None:
    inst = await start(sup, release, "blue-1")
    await sup.wait_ready([inst], timeout=15)
    before = changes.count
    sup.mark_failed("blue-1")
    assert not inst.healthy
    assert changes.count == before + 1
    await eventually(lambda: inst.healthy, 3.0, "healthy again after a good check")
    sup.mark_failed("no-such-instance")  # ignored


async def test_stop_all_leaves_no_process(
    tmp_path: Path, release: Release, changes: Changes
) -> None:
    async with Supervisor(on_change=changes, log_dir=tmp_path / "logs") as s:
        insts = [await start(s, release, f"green-{n}", "green") for n in range(2)]
        await s.wait_ready(insts, timeout=15)
        pids = [i.pid for i in insts]
    assert all(p is not None and not pid_alive(p) for p in pids)
    assert s.instances() == []
    assert all(i.state == "stopped" and not i.healthy for i in insts)


async def test_stop_kills_process_group_and_stubborn_process(
    sup: Supervisor, release: Release
) -> None:
    # Ignores SIGTERM and has a child in its group: both must be gone after stop.
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('child', c.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    inst = await sup.start_instance(
        id="blue-1",
        colour="blue",
        release=release,
        command_for=lambda port: [sys.executable, "-c", code],
        env={},
        cwd=FIXTURES,
        live_path="/healthz/live",
        ready_path="/healthz/ready",
    )
    await eventually(lambda: any(line.startswith("child ") for line in inst.logs()), 5, "child")
    child = int(next(line for line in inst.logs() if line.startswith("child ")).split()[1])
    pid = inst.pid
    assert pid is not None
    await sup.stop_instance(inst, timeout=0.5)
    await eventually(lambda: not pid_alive(pid) and not pid_alive(child), 3, "group gone")
    assert sup.get("blue-1") is None


async def test_backoff_grows_between_restarts(tmp_path: Path, release: Release) -> None:
    s = Supervisor(
        on_change=lambda: None,
        log_dir=tmp_path / "logs",
        backoff_initial=0.1,
        backoff_max=0.4,
        max_start_crashes=100,
    )
    try:
        inst = await s.start_instance(
            id="blue-1",
            colour="blue",
            release=release,
            command_for=lambda port: [sys.executable, "-c", "raise SystemExit(1)"],
            env={},
            cwd=FIXTURES,
            live_path="/healthz/live",
            ready_path="/healthz/ready",
        )
        await eventually(lambda: inst.exits >= 5, 15, "five crashes")
        delays = [
            line.rsplit("restarting in ", 1)[1] for line in inst.logs() if "restarting in" in line
        ]
        assert delays[:5] == ["0.1s", "0.2s", "0.4s", "0.4s", "0.4s"]
    finally:
        await s.stop_all()


async def test_instance_env_has_identity_and_no_admin_token(
    sup: Supervisor, release: Release, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLUEGREEN_ADMIN_TOKEN", "secret")
    code = (
        "import os\n"
        "for k in ('BLUEGREEN_RELEASE', 'BLUEGREEN_COLOUR', 'BLUEGREEN_INSTANCE', "
        "'BLUEGREEN_PORT', 'EXTRA', 'BLUEGREEN_ADMIN_TOKEN'):\n"
        "    print(k, os.environ.get(k), flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    inst = await sup.start_instance(
        id="green-7",
        colour="green",
        release=release,
        command_for=lambda port: [sys.executable, "-c", code],
        env={"EXTRA": "yes"},
        cwd=FIXTURES,
        live_path="/healthz/live",
        ready_path="/healthz/ready",
    )
    # The program's last line (the supervisor's own "started" line quotes the command too).
    await eventually(
        lambda: any(x.startswith("BLUEGREEN_ADMIN_TOKEN ") for x in inst.logs()), 5, "env"
    )
    logs = inst.logs()
    assert "BLUEGREEN_RELEASE r-test" in logs
    assert "BLUEGREEN_COLOUR green" in logs
    assert "BLUEGREEN_INSTANCE green-7" in logs
    assert f"BLUEGREEN_PORT {inst.port}" in logs
    assert "EXTRA yes" in logs
    assert "BLUEGREEN_ADMIN_TOKEN None" in logs


async def test_duplicate_instance_id_rejected(sup: Supervisor, release: Release) -> None:
    await start(sup, release, "blue-1")
    with pytest.raises(ValueError, match="already supervised"):
        await start(sup, release, "blue-1")


async def test_empty_command_rejected_at_start(sup: Supervisor, release: Release) -> None:
    with pytest.raises(ValueError, match="empty command"):
        await sup.start_instance(
            id="blue-1",
            colour="blue",
            release=release,
            command_for=lambda port: [],
            env={},
            cwd=FIXTURES,
            live_path="/healthz/live",
            ready_path="/healthz/ready",
        )
    assert sup.instances() == []
