"""Where a server's time goes: py-spy sampling of a running process, summarized for the report.

:func:`py_spy_record` samples a live process (non-blocking, ``--format raw``: one collapsed
stack per line with its sample count) for a bounded duration; :func:`summarize` turns the stacks
into the three tables the report shows: time by package/module (where the leaf frame lives),
the hottest leaf functions (self time), and the functions with the most inclusive time.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy_path() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    if here.exists():
        return str(here)
    return shutil.which("py-spy")


def _mode_args() -> list[str]:
    # --native shows C frames, the only way to see the cyclic GC (gc_collect_main) at work; it
    # needs the blocking mode (py-spy pauses the process for each sample): fine for a profile
    # run, which is never the measured one.
    return ["--native"]


def py_spy_record(pid: int, duration_s: int, out: Path, rate: int = 200) -> str | None:
    """Sample ``pid`` for ``duration_s`` seconds into ``out``; an error message or None."""
    exe = py_spy_path()
    if exe is None:
        return "py-spy is not installed"
    argv = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(duration_s),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--output",
        str(out),
        *_mode_args(),
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=False)
    except subprocess.TimeoutExpired:
        return "py-spy did not finish in time"
    if done.returncode != 0 or not out.exists():
        return f"py-spy failed ({done.returncode}): {done.stderr.strip()[-500:]}"
    return None


def py_spy_start(pid: int, out: Path, rate: int = 200, max_s: int = 120) -> subprocess.Popen[bytes] | None:
    """Start sampling ``pid`` in the background (at most ``max_s`` s); stop with :func:`py_spy_stop`."""
    exe = py_spy_path()
    if exe is None:
        return None
    argv = [exe, "record", "--pid", str(pid), "--duration", str(max_s), "--rate", str(rate)]
    argv += ["--format", "raw", "--output", str(out), *_mode_args()]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # let it attach
    return proc


def py_spy_stop(proc: subprocess.Popen[bytes] | None, out: Path) -> ProfileSummary:
    """Stop a background py-spy (SIGINT makes it write its output) and summarize it."""
    if proc is None:
        return ProfileSummary(error="py-spy is not installed")
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if not out.exists():
        return ProfileSummary(error=f"py-spy wrote nothing (exit {proc.returncode})")
    return summarize(out)


def _frame(text: str) -> tuple[str, str]:
    match = _FRAME.match(text.strip())
    if match is None:
        return text.strip(), ""
    return match.group("func"), match.group("file")


def category(file: str) -> str:
    """A frame's package (``httpx``, ``pydantic``) or gateway module (``annotation_gateway/cache.py``)."""
    if "annotation_gateway/" in file:
        return "annotation_gateway/" + file.split("annotation_gateway/", 1)[1]
    if file.startswith("<frozen "):
        return file.removeprefix("<frozen ").removesuffix(">")
    if "/" not in file:
        return file.removesuffix(".py") or "?"
    if "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    head = file.split("/", 1)[0]
    return head.removesuffix(".py")


def is_python_frame(file: str) -> bool:
    path = file.rsplit(":", 1)[0] if file[-1:].isdigit() else file
    return path.endswith(".py") or path.startswith("<") or path == "annotation-gateway"


GC_FRAME = "gc_collect_main"
WAIT_FRAMES = frozenset(
    {
        "pthread_cond_timedwait",
        "pthread_cond_wait",
        "PyThread_acquire_lock_timed",
        "sem_wait",
        "sem_timedwait",
        "sem_clockwait",
        "epoll_wait",
        "epoll_pwait",
        "select",
        "poll",
        "nanosleep",
        "clock_nanosleep",
    }
)
"""Native frames of a thread that waits (for the GIL, a lock, a queue, I/O): not CPU time."""
GC_CATEGORY = "cyclic GC (gc_collect_main)"


@dataclass
class ProfileSummary:
    samples: int = 0
    gc_pct: float = 0.0
    by_category: list[tuple[str, float]] = field(default_factory=list)
    self_top: list[tuple[str, float]] = field(default_factory=list)
    inclusive_top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "gc_pct": self.gc_pct,
            "by_category_pct": self.by_category,
            "self_top_pct": self.self_top,
            "inclusive_top_pct": self.inclusive_top,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileSummary:
        def pairs(key: str) -> list[tuple[str, float]]:
            return [(str(name), float(value)) for name, value in data.get(key) or []]

        return cls(
            samples=int(data.get("samples", 0)),
            gc_pct=float(data.get("gc_pct", 0.0)),
            by_category=pairs("by_category_pct"),
            self_top=pairs("self_top_pct"),
            inclusive_top=pairs("inclusive_top_pct"),
            error=data.get("error"),
        )

    def markdown(self, top: int = 12) -> str:
        if self.error:
            return f"_profile unavailable: {self.error}_\n"
        lines = [
            f"py-spy (with native frames), {self.samples} samples of threads on CPU (samples of "
            f"threads waiting for the GIL, a lock, a queue or I/O left out); "
            f"**{self.gc_pct:.0f} %** of them inside Python's cyclic garbage collector.",
            "",
        ]
        lines += ["| where the leaf frame is | % of samples |", "|---|---:|"]
        lines += [f"| `{name}` | {pct:.1f} |" for name, pct in self.by_category[:top]]
        lines += ["", "| hottest functions (self) | % |", "|---|---:|"]
        lines += [f"| `{name}` | {pct:.1f} |" for name, pct in self.self_top[:top]]
        lines += ["", "| gateway functions with most inclusive time | % |", "|---|---:|"]
        lines += [f"| `{name}` | {pct:.1f} |" for name, pct in self.inclusive_top[:top]]
        return "\n".join(lines) + "\n"


def summarize(raw: Path, top: int = 25) -> ProfileSummary:
    by_category: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    gc_samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(part) for part in stack.split(";") if part]
        if any(func in WAIT_FRAMES for func, _ in frames):
            continue  # a waiting thread (GIL, lock, queue, epoll): no CPU
        in_gc = any(func == GC_FRAME for func, _ in frames)
        # native frames (the event loop's C code, libc...) are left out but for the GC marker
        frames = [f for f in frames if f[1] and is_python_frame(f[1])]
        if not frames:
            continue
        total += count
        func, file = frames[-1]
        if in_gc:
            gc_samples += count
            by_category[GC_CATEGORY] += count
            self_time[f"{GC_CATEGORY} under {func} ({category(file)})"] += count
        else:
            by_category[category(file)] += count
            self_time[f"{func} ({category(file)})"] += count
        seen: set[str] = set()
        for func, file in frames:
            key = f"{func} ({category(file)})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += count
    if total == 0:
        return ProfileSummary(error="no samples (the process was idle)")

    def pct(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100.0 * n / total) for name, n in counter.most_common(top)]

    # the gateway's own functions (frames of the server, the CLI and the event loop are on every
    # stack and say nothing), without the entry points that sit under everything
    own = Counter(
        {
            name: n
            for name, n in inclusive.items()
            if "(annotation_gateway/" in name and "annotation_gateway/cli" not in name and n < 0.9 * total
        }
    )
    inclusive = own or inclusive
    return ProfileSummary(
        samples=total,
        gc_pct=100.0 * gc_samples / total,
        by_category=pct(by_category),
        self_top=pct(self_time),
        inclusive_top=pct(inclusive),
    )
