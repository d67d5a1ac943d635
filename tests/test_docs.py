"""What a user is pointed to exists: every document cited by the README, the docs and the
package, and the licence pyproject.toml names."""

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).parent.parent
# A path ending in .md, not the tail of a URL or of a longer path.
MD_PATH = re.compile(r"(?<![\w./:-])([\w.-]+(?:/[\w.-]+)*\.md)\b")
SOURCES = ("*.py", "*.pyx", "*.pxd", "*.pxd.in", "*.pyi")


def citing_files() -> list[pathlib.Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for pattern in SOURCES:
        files += sorted((ROOT / "kvmsim").rglob(pattern))
    return files


def test_every_cited_document_exists():
    files = citing_files()
    assert len(files) > 20 and ROOT / "docs" / "model.md" in files
    cited, missing = set(), []
    for f in files:
        for n, line in enumerate(f.read_text().splitlines(), start=1):
            for name in MD_PATH.findall(line):
                cited.add(name)
                # from the repository root, or relative to the citing file (docs/ cite each
                # other by bare name)
                if not ((ROOT / name).is_file() or (f.parent / name).is_file()):
                    missing.append(f"{f.relative_to(ROOT)}:{n}: {name}")
    assert not missing, "cited documents that do not exist:\n" + "\n".join(missing)
    # the scan sees the citations it should
    assert {"docs/model.md", "docs/calibration.md", "docs/profiles.md"} <= cited


def test_the_path_pattern_finds_citations_and_skips_urls():
    found = MD_PATH.findall("see docs/model.md §7, `calibration.md`; not "
                            "https://github.com/x/y/blob/main/README.md or a/b.mdx")
    assert found == ["docs/model.md", "calibration.md"]


def test_no_text_names_the_documents_that_never_existed():
    # Docs and lint-order once cited two files that were never in the repository.
    gone = [stem + ".md" for stem in ("kvm-facts", "figures")]
    text_kinds = {".md", ".py", ".pyx", ".pxd", ".in", ".pyi", ".toml", ".txt", ".c", ".s",
                  ".cfg", ".ini", ".yml", ".yaml", ""}
    generated = {ROOT / "kvmsim" / "_core.c", ROOT / "kvmsim" / "_spec.pxd"}
    roots = [ROOT / p for p in ("README.md", "LICENSE", "pyproject.toml", "setup.py", ".ci",
                                "docs", "kvmsim", "tests", "benchmarks", "examples")]
    hits, seen = [], 0
    for top in roots:
        for f in ([top] if top.is_file() else sorted(top.rglob("*"))):
            if not f.is_file() or f.suffix not in text_kinds or f in generated or \
                    "__pycache__" in f.parts or "build" in f.relative_to(ROOT).parts:
                continue
            seen += 1
            text = f.read_text(errors="replace")
            hits += [f"{f.relative_to(ROOT)}: {g}" for g in gone if g in text]
    assert seen > 50
    assert not hits, hits


def test_license_is_the_mit_licence_pyproject_names():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text()
    assert text.splitlines()[0] == "MIT License"
    assert re.search(r"^Copyright \(c\) \d{4} \S", text, re.M)
    # the MIT licence's grant and its warranty disclaimer, whitespace aside
    flat = " ".join(text.split())
    for phrase in ("Permission is hereby granted, free of charge, to any person obtaining a "
                   "copy of this software and associated documentation files (the "
                   "\"Software\"), to deal in the Software without restriction",
                   "The above copyright notice and this permission notice shall be included "
                   "in all copies or substantial portions of the Software.",
                   "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND"):
        assert phrase in flat, phrase


def test_every_readme_install_is_editable():
    # The README's Python runs from the checkout root: a non-editable install would leave
    # the root's kvmsim/ without its built engine, so `import kvmsim` fails there.
    readme = (ROOT / "README.md").read_text()
    installs = re.findall(r"pip install [^&\n]*", readme)
    assert installs and all(i.startswith("pip install -e ") for i in installs), installs


def test_benchmark_vms_are_not_called_workloads():
    # vm-64 and vm-256 live in benchmarks/conftest.py, not among the workload presets.
    import kvmsim
    from kvmsim._workload import PRESETS
    assert not {"vm-64", "vm-256"} & set(PRESETS)
    text = " ".join((ROOT / "README.md").read_text().split())
    assert "the benchmark scenarios `vm-64` and `vm-256`" in text
    assert kvmsim


def test_calibrate_help_does_not_append_to_a_scenario():
    # A second [costs] table appended to a scenario that has one is invalid TOML.
    from kvmsim import _cli
    parser = _cli.parser()
    sub = next(a for a in parser._actions if a.choices and "calibrate" in a.choices)
    epilog = sub.choices["calibrate"].epilog
    assert ">> " not in epilog.replace("(>>)", "") and "replace" in epilog
    assert "replace the scenario file's `[costs]` table" in \
        " ".join((ROOT / "docs" / "validation.md").read_text().split())


def test_sweep_doc_says_columns_carry_kvmsim_names():
    from kvmsim import _names
    text = " ".join((ROOT / "docs" / "sweep.md").read_text().split())
    assert "the table's columns always carry the kvmsim names" in text
    assert _names.counter("probe:vmx_cancel_injection") == "canceled_vmenters"
