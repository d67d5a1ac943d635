"""The package version, and the model's fingerprint. Workers of a sweep must match both, and
a sweep file's run keys hash them, so a resumed sweep never mixes in runs of another model."""

import functools
import hashlib
from pathlib import Path

__version__ = "0.3.0"

# The modules whose text decides a run's counts. The Cython engine is held to the reference
# engine's counts by the tests, so _reference.py stands for both engines.
MODEL_FILES = ("_spec.py", "_reference.py", "_plan.py", "_config.py", "_workload.py",
               "_costs.py", "profiles.py", "catalogue.py")


@functools.cache
def _digest() -> str:
    h = hashlib.sha256()
    for name in MODEL_FILES:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:12]


def model() -> str:
    """The version and the model's fingerprint, e.g. '0.3.0+model.1a2b3c4d5e6f'."""
    return f"{__version__}+model.{_digest()}"
