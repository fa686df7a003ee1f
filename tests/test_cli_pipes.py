"""`python -m gateway ... | head`: a reader that leaves early is not an error (no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_reader_that_leaves_early_is_not_an_error() -> None:
    # `true` exits at once, before the command (which first imports the application) writes a
    # byte: every write meets a closed pipe, as `| head -1` makes the later ones do.
    result = subprocess.run(f"'{sys.executable}' -m gateway settings | true; "
                            "exit ${PIPESTATUS[0]}", shell=True, cwd=ROOT, capture_output=True,
                            text=True, timeout=60, executable="/bin/bash")
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, \
        result.stderr
    assert result.returncode == 0, result.stderr


def test_settings_into_head_prints_the_first_lines() -> None:
    result = subprocess.run(f"'{sys.executable}' -m gateway settings | head -3", shell=True,
                            cwd=ROOT, capture_output=True, text=True, timeout=60,
                            executable="/bin/bash")
    assert result.stdout.count("\n") == 3 and result.stderr == ""
