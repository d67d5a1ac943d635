"""The README's Python example runs as written (from the repository root)."""

import pathlib
import re

ROOT = pathlib.Path(__file__).parent.parent


def test_python_example_runs(monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    monkeypatch.chdir(ROOT)
    block, = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    scope = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["sim"].now == 0.2
    assert scope["sim"].result().totals["nmis_queued"] >= 3     # the three injected
    assert scope["res"].totals["canceled_vmenters"] > 13_000 * 6
    assert scope["back"].totals == scope["res"].totals
    assert [(m.name, m.after) for m in scope["moves"]] == [("NMI", "PMI")]
