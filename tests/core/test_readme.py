"""The README's Python snippet runs as written (extracted from README.md and executed)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def api_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    found = [b for b in blocks if "import sec4sr_core" in b]
    assert len(found) == 1, "expected one README python block using sec4sr_core"
    return found[0]


def test_readme_snippet_runs(ge2e_system, capsys):  # the fixture enrolls GE2E once for the session
    namespace: dict = {}
    exec(compile(api_snippet(), str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "accuracy" in out and "SV decisions" in out
    assert namespace["adv"].shape == (4, 1, 48000)
