"""``bench.procfs``: parsing ``/proc`` text, and reading this process and a child."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from bench.procfs import (
    child_pids,
    cmdline,
    cpu_seconds,
    is_running,
    parse_cpu_ticks,
    parse_vmrss,
    pids_by_name,
    process_tree,
    read_rss_kib,
    split_stat,
    total_cpu_seconds,
    tree_rss_kib,
)

STATUS = """Name:\tpython
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t  300000 kB
VmRSS:\t  123456 kB
RssAnon:\t  100000 kB
"""
#: Fields 3 to 17 of a stat line: state, ppid, ..., utime 250, stime 50.
STAT_FIELDS = ["S", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "250", "50", "0", "0"]


def test_vmrss_is_read_in_kib() -> None:
    assert parse_vmrss(STATUS) == 123456


def test_a_status_without_vmrss_is_an_error() -> None:
    with pytest.raises(ValueError, match="no VmRSS"):
        parse_vmrss("Name:\tkworker\nState:\tI (idle)\n")


def test_an_unexpected_unit_is_an_error() -> None:
    with pytest.raises(ValueError, match="unit"):
        parse_vmrss("VmRSS:\t  12 MB\n")


def test_cpu_ticks_survive_a_command_name_with_spaces_and_parentheses() -> None:
    stat = "4242 (my (odd) name) " + " ".join(STAT_FIELDS)
    assert split_stat(stat) == STAT_FIELDS
    assert parse_cpu_ticks(stat) == 300


def test_a_stat_line_without_a_command_name_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_cpu_ticks("4242 S 1 2")


def test_this_process_can_be_read() -> None:
    assert read_rss_kib(os.getpid()) > 1000
    assert cpu_seconds(os.getpid()) > 0
    assert total_cpu_seconds([os.getpid()]) > 0
    assert is_running(os.getpid())


#: The child names itself (``/proc/self/comm``, at most 15 bytes) and says so once done:
#: until then its name is its parent's, or the interpreter's while it starts.
CHILD = """
import sys, time
with open("/proc/self/comm", "w") as comm:
    comm.write(sys.argv[1])
print("ready", flush=True)
time.sleep(30)
"""


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    name = f"tw-{uuid.uuid4().hex[:12]}"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, name], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_child_is_found_under_its_parent(child: subprocess.Popen[bytes]) -> None:
    me = os.getpid()
    assert child.pid in child_pids(me)
    tree = process_tree(me)
    assert me in tree and child.pid in tree
    assert "time.sleep(30)" in cmdline(child.pid)
    assert tree_rss_kib(me) > read_rss_kib(me)


def test_processes_are_found_by_command_name(child: subprocess.Popen[bytes]) -> None:
    with open(f"/proc/{child.pid}/comm", encoding="utf-8") as comm:
        name = comm.read().strip()
    assert name.startswith("tw-")
    assert pids_by_name(name) == [child.pid]  # a name of its own: no other process has it


def test_a_process_that_is_gone_counts_nothing(child: subprocess.Popen[bytes]) -> None:
    child.kill()
    child.wait()
    gone = child.pid
    assert not is_running(gone)
    assert cmdline(gone) == ""
    assert total_cpu_seconds([gone]) == 0.0
    assert tree_rss_kib(gone) == 0
    assert child_pids(gone) == []
    with pytest.raises(OSError):
        cpu_seconds(gone)
    with pytest.raises(OSError):
        read_rss_kib(gone)
