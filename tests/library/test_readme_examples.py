"""The README's "use STAC in your own TorchRL loop" example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("block", ["example", "example-ppo", "example-sac"])
def test_readme_examples_run(tmp_path, block):
    text = README.read_text()
    match = re.search(rf"<!-- {block}:start -->\s*```python\n(.*?)```\s*<!-- {block}:end -->", text, re.S)
    assert match, f"README block {block} not found"
    script = tmp_path / "example.py"
    script.write_text(match.group(1))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) >= 2  # one diagnostics line per batch
    assert "'skipped': 0.0" in lines[-1]
    assert float(re.search(r"'implicit_norm': ([0-9.e-]+)", lines[-1]).group(1)) > 0


def test_readme_setup_lines_match_ci():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest -n auto tests/' in text
    assert (
        "pip install torch==2.13.0" in ci
        and 'pip install -e ".[test]"' in ci
        and "python -m pytest -n auto tests/" in ci
    )
