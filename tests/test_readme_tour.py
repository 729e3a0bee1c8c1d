"""The README's tour prints today what the README shows: scripts/readme_tour.py runs it and checks.

It serves a fresh orgplane and runs the whole tour with curl and jq (15 to 25 seconds on 2
cores); on a machine without them (or with a curl older than 7.82) it is skipped, and says so.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "readme_tour.py"
EXIT_SKIPPED = 77  # the script's status when curl or jq is missing


def test_every_output_of_the_tour_is_what_it_prints_today() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300
    )
    if done.returncode == EXIT_SKIPPED:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, (
        "the README's tour has drifted from what orgplane prints; if the change is meant, run "
        "`.venv/bin/python scripts/readme_tour.py --write` and read the diff\n"
        + done.stdout
        + done.stderr
    )
