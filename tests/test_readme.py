"""The README's "use STAC in your own TorchRL loop" example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_custom_loop_example_runs(tmp_path):
    text = README.read_text()
    match = re.search(r"<!-- example:start -->\s*```python\n(.*?)```\s*<!-- example:end -->", text, re.S)
    assert match, "README example block not found"
    script = tmp_path / "example.py"
    script.write_text(match.group(1))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 2  # one diagnostics line per batch
    assert "'skipped': 0.0" in lines[-1] and "'implicit_norm'" in lines[-1]


def test_readme_ppo_example_runs(tmp_path):
    text = README.read_text()
    match = re.search(r"<!-- example-ppo:start -->\s*```python\n(.*?)```\s*<!-- example-ppo:end -->", text, re.S)
    assert match, "README PPO example block not found"
    script = tmp_path / "example_ppo.py"
    script.write_text(match.group(1))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 2  # one diagnostics line per batch
    assert "'skipped': 0.0" in lines[-1] and "'implicit_norm'" in lines[-1]
    assert float(re.search(r"'implicit_norm': ([0-9.e-]+)", lines[-1]).group(1)) > 0


def test_readme_setup_lines_match_ci():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest tests/' in text
    assert "pip install torch==2.13.0" in ci and 'pip install -e ".[test]"' in ci and "python -m pytest tests/" in ci
