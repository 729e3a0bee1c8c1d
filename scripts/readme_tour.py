"""Check the README's tour against a real run of orgplane, or rewrite its outputs from one.

    .venv/bin/python scripts/readme_tour.py            # exit 1 and a diff per command that drifted
    .venv/bin/python scripts/readme_tour.py --write    # rewrite the README's outputs from this run

It does what a reader does after `make run`, on a fresh SQLite database in a temporary directory:
migrate, bootstrap, serve (on a free port), then the tour's set-up lines (its ```sh block, with
the README's root id and admin key replaced by this run's) and every `$ ` command of the README's
```console blocks, in order, in one bash session. Each output is compared with the README's after
normalizing only what differs on every run: timestamps, Date headers, request ids and hashes,
curl's version, and the ids, uuids and secrets, which are paired up in order of first appearance
(the README's values with this run's), so that a literal id in a README command runs as this
run's id and an id shown in the wrong place is a difference.
"""

from __future__ import annotations

import argparse
import difflib
import os
import queue
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
README_API = "http://127.0.0.1:8000"
TOUR_HEADING = "## A five-minute tour"
EXIT_SKIPPED = 77  # curl or jq is missing: the tour cannot run here (automake's "skipped")

# What differs on every run. The `id` group also matches 12-letter words: a bare one counts as an
# id only when it has a digit, or, on this run's side, when it is an org id in the database.
TOKEN = re.compile(
    r"(?P<time>\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?)"
    r"|(?P<date>\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT)"
    r"|(?P<uuid>\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b)"
    r"|(?P<hex>\b(?:[0-9a-f]{64}|[0-9a-f]{32})\b)"
    r"|(?P<secret>\b(?:op[a-z]|whsec)_[0-9A-Za-z_+/=-]+)"
    r"|(?P<id>\b(?:evt_[0-9a-f]{32}\b|(?:(?:key|usr|inv|rol|whk)_)?[0-9a-z]{12}\b))"
    r"|(?P<curl>\bcurl/[0-9.]+)"
)
PAIRED = ("id", "uuid", "secret")
FIXED = {"time": "<time>", "date": "<date>", "hex": "<hex>", "curl": "curl/<version>"}


@dataclass
class Step:
    """One `$ ` command of a console block, and the lines of the README that show its output."""

    line: int  # index of the `$ ` line in the README
    command: str
    output: tuple[int, int]  # the output's lines, without the blank lines that follow it


@dataclass
class Tour:
    lines: list[str]
    startup: tuple[int, int]  # the lines `make run` prints (the block with "root org:")
    setup: list[int]  # the lines of the tour's ```sh block
    steps: list[Step]


def parse(text: str) -> Tour:
    lines = text.split("\n")
    startup: tuple[int, int] | None = None
    setup: list[int] = []
    steps: list[Step] = []
    section = ""
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i]
        if not lines[i].startswith("```"):
            i += 1
            continue
        info, start = lines[i][3:].strip(), i + 1
        end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
        if any(line.startswith("root org:") for line in lines[start:end]):
            startup = (start, end)
        elif info == "sh" and section == TOUR_HEADING:
            setup += [j for j in range(start, end) if lines[j].strip()]
        elif info == "console":
            steps += _steps(lines, start, end)
        i = end + 1
    if startup is None:
        raise SystemExit("README.md: no block shows what `make run` prints ('root org: ...')")
    return Tour(lines, startup, setup, steps)


def _steps(lines: list[str], start: int, end: int) -> list[Step]:
    steps = []
    i = start
    while i < end:
        if not lines[i].startswith("$ "):
            raise SystemExit(f"README.md:{i + 1}: a console block's line before its first `$ `")
        first, command = i, lines[i][2:]
        while command.endswith("\\"):
            i += 1
            command += "\n" + lines[i]
        i += 1
        out = i
        while i < end and not lines[i].startswith("$ "):
            i += 1
        last = i
        while last > out and not lines[last - 1].strip():
            last -= 1
        steps.append(Step(first, command, (out, last)))
    return steps


class Literals:
    """The README's ids, uuids and secrets, each paired with the value this run printed instead.

    Within each text (a command, an output) the README's values not yet paired are paired, kind
    by kind, in order of appearance, with this run's values not yet paired. Both are rendered as
    the README value's number of first appearance, so the same object is the same placeholder on
    both sides and one shown in the wrong place differs.
    """

    def __init__(self) -> None:
        self.run_of: dict[str, str] = {}
        self.readme_of: dict[str, str] = {}
        self.number: dict[str, int] = {}
        self.run_org_ids: set[str] = set()

    def kind(self, match: re.Match[str], run: bool) -> str | None:
        kind = match.lastgroup
        value = match[0]
        if kind == "id" and "_" not in value and not any(c.isdigit() for c in value):
            return kind if run and value in self.run_org_ids else None
        return kind

    def _values(self, text: str, kind: str, run: bool) -> list[str]:
        found = [m[0] for m in TOKEN.finditer(text) if self.kind(m, run) == kind]
        return list(dict.fromkeys(found))

    def pair(self, readme_text: str, run_text: str) -> None:
        for kind in PAIRED:
            ours = [v for v in self._values(readme_text, kind, False) if v not in self.run_of]
            theirs = [v for v in self._values(run_text, kind, True) if v not in self.readme_of]
            for readme_value, run_value in zip(ours, theirs, strict=False):
                self.run_of[readme_value] = run_value
                self.readme_of[run_value] = readme_value

    def normalize(self, text: str, run: bool) -> str:
        def placeholder(match: re.Match[str]) -> str:
            kind = self.kind(match, run)
            if kind is None:
                return match[0]
            if kind in FIXED:
                return FIXED[kind]
            value = self.readme_of.get(match[0]) if run else match[0]
            if value is None:
                return f"<{kind} not in the README>"
            number = self.number.setdefault(value, len(self.number) + 1)
            return f"<{kind}{number}>"

        return TOKEN.sub(placeholder, text)

    def to_run(self, text: str, api: str = README_API) -> str:
        """The README's text with each of its paired values (and its API's URL) this run's."""
        return TOKEN.sub(lambda m: self.run_of.get(m[0], m[0]), text).replace(README_API, api)


class Shell:
    """One bash session: commands run one at a time, so exports carry over."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, command: str, timeout: float = 60) -> str:
        """What the command prints (stdout and stderr), without its trailing newlines."""
        assert self.proc.stdin is not None
        marker = f"--- end of command {uuid.uuid4().hex} ---"
        self.proc.stdin.write(f"{{\n{command}\n}} </dev/null 2>&1\nprintf '\\n%s\\n' '{marker}'\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        printed: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no end after {timeout} s: {command}") from None
            if line is None:
                raise RuntimeError(f"bash exited while running: {command}\n{''.join(printed)}")
            if line.rstrip("\n") == marker:
                return "".join(printed).rstrip("\n")
            printed.append(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def missing_tools() -> str | None:
    """Why the tour cannot run on this machine, or None."""
    if shutil.which("jq") is None:
        return "jq is not installed"
    if shutil.which("curl") is None:
        return "curl is not installed"
    version = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout
    found = re.match(r"curl (\d+)\.(\d+)", version)
    if found is None or (int(found[1]), int(found[2])) < (7, 82):
        return (
            f"the tour needs curl 7.82 or later (for --json); this is {version.split(chr(10))[0]}"
        )
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Orgplane:
    """`make run` in a temporary directory: migrate, bootstrap and serve on a fresh database."""

    def __init__(self, workdir: Path) -> None:
        venv = Path(sys.prefix)
        self.cli = venv / "bin" / "orgplane"
        if not self.cli.exists():
            raise SystemExit(f"{self.cli} is missing: run this with the project's .venv/bin/python")
        # The tour runs `.venv/bin/orgplane` from the project's directory; here is one like it.
        (workdir / ".venv").symlink_to(venv)
        (workdir / "examples").symlink_to(README.parent / "examples")
        self.db = workdir / "orgplane.db"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ORGPLANE_")}
        self.env["ORGPLANE_DATABASE_URL"] = f"sqlite+aiosqlite:///{self.db}"
        # As `make run` serves (its DEMO_WEBHOOK_NETWORKS): the tour's receiver is on 127.0.0.1.
        self.env["ORGPLANE_WEBHOOK_ALLOWED_NETWORKS"] = "127.0.0.0/8"
        self.workdir = workdir
        self.api = f"http://127.0.0.1:{free_port()}"
        self.server: subprocess.Popen[bytes] | None = None

    def start(self) -> list[str]:
        """Start the server; what orgplane printed up to its serving line (granian logs after)."""
        printed = []
        for command in ("migrate", "bootstrap"):
            done = subprocess.run(
                [self.cli, command],
                cwd=self.workdir,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            if done.returncode:
                raise SystemExit(f"orgplane {command} failed:\n{done.stdout}")
            printed += done.stdout.splitlines()
        log = self.workdir / "serve.log"
        with log.open("wb") as out:
            self.server = subprocess.Popen(
                [self.cli, "serve", "--port", self.api.rsplit(":", 1)[1]],
                cwd=self.workdir,
                env={**self.env, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"orgplane serve did not answer /healthz:\n{log.read_text()}")
            time.sleep(0.1)
        served = log.read_text().splitlines()
        serving = [i for i, line in enumerate(served) if line.startswith("orgplane serving on")]
        return printed + served[: serving[0] + 1 if serving else len(served)]

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def org_ids(self) -> set[str]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return {row[0] for row in conn.execute("SELECT public_id FROM orgs")}

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()


def compare(literals: Literals, where: str, shown: str, printed: str) -> str | None:
    """A failure naming the command and showing the diff, or None when they agree."""
    literals.pair(shown, printed)
    expected = literals.normalize(shown, run=False).splitlines()
    actual = literals.normalize(printed, run=True).splitlines()
    if expected == actual:
        return None
    diff = difflib.unified_diff(expected, actual, "README.md", "this run", lineterm="")
    return where + "\n" + "\n".join(diff)


@dataclass
class Run:
    failures: list[str]  # each names the command and shows the diff
    lines: list[str]  # the README with this run's outputs and values in place
    wordlike_ids: list[str]  # org ids with no digit: a README showing them would not check


def run_tour(tour: Tour, workdir: Path) -> Run:
    """Run the tour on a fresh orgplane and compare each output with the README's."""
    literals = Literals()
    failures: list[str] = []
    outputs: dict[tuple[int, int], list[str]] = {}

    def check(where: str, shown: tuple[int, int], printed: str) -> None:
        failure = compare(literals, where, "\n".join(tour.lines[slice(*shown)]), printed)
        failures.extend([failure] if failure else [])
        outputs[shown] = printed.splitlines()

    orgplane = Orgplane(workdir)
    try:
        printed = "\n".join(orgplane.start()).replace(orgplane.api, README_API)
        # Before the start-up's check: the root's id, made now, may have no digit.
        literals.run_org_ids = orgplane.org_ids()
        check(f"README.md:{tour.startup[0] + 1}: what `make run` prints", tour.startup, printed)
        shell = Shell(workdir, orgplane.env)
        try:
            for i in tour.setup:
                if output := shell.run(literals.to_run(tour.lines[i], orgplane.api)):
                    failures.append(f"README.md:{i + 1}: {tour.lines[i]}\nprinted: {output}")
            for step in tour.steps:
                command = literals.to_run(step.command, orgplane.api)
                literals.pair(step.command, command)
                printed = shell.run(command).replace(orgplane.api, README_API)
                literals.run_org_ids = orgplane.org_ids()
                check(f"README.md:{step.line + 1}: $ {step.command}", step.output, printed)
        finally:
            shell.close()
    finally:
        orgplane.stop()
    lines = []
    for i, line in enumerate(tour.lines):
        lines += next((new for (first, _), new in outputs.items() if first == i), [])
        if not any(first <= i < last for first, last in outputs):
            lines.append(literals.to_run(line))
    wordlike = sorted(i for i in literals.run_org_ids if not any(c.isdigit() for c in i))
    return Run(failures, lines, wordlike)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the outputs from this run")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args()
    missing = missing_tools()
    if missing:
        print(f"README TOUR NOT CHECKED: {missing} (the tour needs curl 7.82 or later and jq)")
        return EXIT_SKIPPED
    started = time.monotonic()
    tour = parse(args.readme.read_text())
    with tempfile.TemporaryDirectory(prefix="readme-tour-") as workdir:
        run = run_tour(tour, Path(workdir))
    took = f"{len(tour.steps)} commands in {time.monotonic() - started:.1f} s"
    if args.write:
        if run.wordlike_ids:
            print(f"org id {run.wordlike_ids[0]} has no digit, like a word: run --write again")
            return 1
        args.readme.write_text("\n".join(run.lines))
        print(f"{args.readme}: rewritten from a run of {took} ({len(run.failures)} had drifted)")
        return 0
    for failure in run.failures:
        print(failure, end="\n\n")
    print(f"{args.readme}: {len(run.failures) or 'no'} difference(s), {took}")
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
