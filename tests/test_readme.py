"""The README's Python example runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).parent.parent / "README.md"


def test_python_example_runs():
    block, = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    scope = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["sim"].now == 0.1
    assert scope["res"].totals["canceled_vmenters"] > 13_000 * 6
