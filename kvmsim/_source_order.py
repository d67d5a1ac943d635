"""Read the request-check order of vcpu_enter_guest() from a real kernel's x86.c.

    >>> so = order_from_source("/usr/src/linux")          # a tree, or .../arch/x86/kvm/x86.c
    >>> kvmsim.Config(order=list(so.names()))             # when every name is in the catalogue

The parser is a small C scanner, not a compiler: it blanks out comments and string/char
literals (keeping offsets and line numbers), finds function bodies by brace matching at file
scope (with `#if`/`#else` branches that open or close braces handled the way a compiler would
see one branch), and then reads, in source order, inside the body of
`vcpu_enter_guest()`:

* every `kvm_check_request(KVM_REQ_X, ...)` ("check") and `kvm_test_request(KVM_REQ_X, ...)`
  ("test");
* every call to a helper that checks requests ("helper:<function>"): a function defined in
  the same file whose body (or the body of a function it calls, `helper_depth` levels down)
  has kvm_check_request/kvm_test_request calls, and known helpers defined in other files
  (EXTERNAL_HELPERS; read from the tree when there is one, else taken from the table);

up to and including the KVM_REQ_EVENT check that follows the `if (kvm_request_pending(vcpu))`
block. Later uses (the EVENT re-raise after an immediate exit, the fast-path loop, the
VM-exit path) are not part of the order.

Each check keeps the `#ifdef`/`#if`/`#else` condition that encloses it, and whether its name
is in kvmsim.catalogue (`known`); unknown names (v5.4's GET_VMCS12_PAGES and LOAD_CR3, or
vendor additions) are kept and flagged so the caller can report them.

Known limits: a request passed through a variable or built by a macro is not seen; a helper
reached only through a function pointer or static_call is not followed; function-like macros
that wrap kvm_check_request are not expanded; conditions are reported as written, never
evaluated (except that code under a literal `#if 0` is skipped).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import catalogue

X86_C = Path("arch/x86/kvm/x86.c")
FUNCTION = "vcpu_enter_guest"

# Helpers defined outside arch/x86/kvm/x86.c that vcpu_enter_guest() calls to check requests:
# function -> (file in the tree, request names it checks, in order). The file is read when a
# tree is available; the names are the fallback.
EXTERNAL_HELPERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "kvm_dirty_ring_check_request": ("virt/kvm/dirty_ring.c", ("DIRTY_RING_SOFT_FULL",)),
}

# Names older kernels used for requests the catalogue knows under a later name (seen in the
# v5.4 source). Only a hint for the caller (Check.renamed_to); such checks stay
# `known=False`. The names of v5.10 and later are in the catalogue (kvmsim.profiles), but
# v5.10's HV_TLB_FLUSH (bit 35) is today's TLB_FLUSH_GUEST, not bit 40 (docs/profiles.md).
RENAMED: dict[str, str] = {
    "GET_VMCS12_PAGES": "GET_NESTED_STATE_PAGES",
    "LOAD_CR3": "LOAD_MMU_PGD",
}

_PRIMITIVES = {"kvm_check_request": "check", "kvm_test_request": "test"}
_NOT_CALLS = frozenset({
    "if", "while", "for", "switch", "return", "sizeof", "typeof", "__typeof__", "alignof",
    "_Alignof", "defined", "case", "goto", "do", "else", "asm", "__asm__", "volatile",
    "__builtin_expect",
})
_REQ_CALL = re.compile(r"\b(kvm_check_request|kvm_test_request)\s*\(\s*KVM_REQ_([A-Za-z0-9_]+)\s*,")
_IDENT_CALL = re.compile(r"([A-Za-z_]\w*)\s*\(")
_HEADER_NAME = re.compile(r"([A-Za-z_]\w*)\s*\((?:[^;{}])*\)\s*(?:__\w+(?:\s*\([^;{}]*\))?\s*)*$")
_DIRECTIVE = re.compile(r"^[ \t]*#[ \t]*(\w+)(.*)$")


@dataclass(frozen=True)
class Check:
    """One request check in vcpu_enter_guest(), in source order."""

    name: str                  # request name without KVM_REQ_, as written in the source
    line: int                  # 1-based line in x86.c (for a helper: the line of the call)
    kind: str                  # "check", "test" or "helper:<function>"
    condition: str | None      # enclosing #ifdef/#if condition(s), joined with " && "
    known: bool                # name is in kvmsim.catalogue.BY_NAME
    op: str = "check"          # "check" (kvm_check_request) or "test" (kvm_test_request)
    via: tuple[str, ...] = ()  # helper call chain, outermost first (empty for direct checks)
    source_file: str | None = None  # where the kvm_*_request call is (None: from the table)
    source_line: int | None = None  # its line there

    @property
    def canonical(self) -> str | None:
        """The catalogue's canonical name (MSR_FILTER_CHANGED for RECALC_INTERCEPTS), or None."""
        r = catalogue.BY_NAME.get(self.name)
        return r.name if r else None

    @property
    def renamed_to(self) -> str | None:
        """For an old name the catalogue does not know, the later name (a hint), else None."""
        return None if self.known else RENAMED.get(self.name)


@dataclass(frozen=True)
class SourceOrder:
    """The request checks of vcpu_enter_guest() read from one x86.c."""

    path: str
    checks: tuple[Check, ...]
    version: str | None = None        # from the tree's top Makefile, when there is one
    function_line: int = 0            # line of `vcpu_enter_guest(` in x86.c
    warnings: tuple[str, ...] = field(default=())

    def names(self, known_only: bool = False) -> tuple[str, ...]:
        """The order: each request once, at its first position, EVENT last.

        A kvm_test_request followed by kvm_check_request of the same request (TRIPLE_FAULT)
        counts once. With known_only, names the catalogue does not know are left out (the
        result then always suits kvmsim.Config(order=...)); see unknown() for them.
        """
        out: list[str] = []
        for c in self.checks:
            if c.name == "EVENT" or c.name in out or (known_only and not c.known):
                continue
            out.append(c.name)
        out.append("EVENT")
        return tuple(out)

    def unknown(self) -> tuple[Check, ...]:
        """Checks whose name is not in kvmsim.catalogue, first occurrence of each."""
        seen: set[str] = set()
        out = []
        for c in self.checks:
            if not c.known and c.name not in seen:
                seen.add(c.name)
                out.append(c)
        return tuple(out)

    def conditions(self) -> dict[str, str]:
        """Request name -> condition, for the checks that are under #ifdef/#if."""
        out: dict[str, str] = {}
        for c in self.checks:
            if c.condition and c.name not in out:
                out[c.name] = c.condition
        return out


# ----------------------------------------------------------------------------- scanning


def _mask(text: str) -> str:
    """Comments and the contents of string/char literals replaced by spaces (newlines kept)."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "/" and i + 1 < n and text[i + 1] == "*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if out[k] != "\n":
                    out[k] = " "
            i = j
        elif c == "/" and i + 1 < n and text[i + 1] == "/":
            j = i
            while j < n and text[j] != "\n":
                # a `\` at the end of a // comment continues it onto the next line
                if text[j] == "\\" and j + 1 < n and text[j + 1] == "\n":
                    out[j] = " "
                    j += 2
                    continue
                out[j] = " "
                j += 1
            i = j
        elif c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                if text[j] == "\\" and j + 1 < n:
                    if text[j + 1] != "\n":
                        out[j + 1] = " "
                    out[j] = " "
                    j += 2
                    continue
                out[j] = " "
                j += 1
            i = j + 1
        else:
            i += 1
    return "".join(out)


class _File:
    """One C file: masked text, line index, function definitions, #if condition map."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.text = text
        self.masked = _mask(text)
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.functions: dict[str, list[tuple[int, int, int]]] = {}  # name -> (name_pos, {, })
        self._cond_pos: list[int] = []
        self._cond_val: list[tuple[str, ...]] = []
        self._scan()

    def line(self, pos: int) -> int:
        return bisect.bisect_right(self._line_starts, pos)

    def condition(self, pos: int) -> tuple[str, ...]:
        i = bisect.bisect_right(self._cond_pos, pos) - 1
        return self._cond_val[i] if i >= 0 else ()

    def _scan(self) -> None:
        """One pass: directive lines (conditions; branch-aware brace depth) and braces."""
        m = self.masked
        n = len(m)
        depth = 0
        # #if frames: [branch exprs so far, depth at #if, depth at end of first branch or None]
        frames: list[list] = []
        boundary = 0        # start of the current file-scope declaration header
        opened: tuple[int, int] | None = None  # (brace pos, header start) at file scope
        self._cond_pos.append(0)
        self._cond_val.append(())
        i = 0
        at_line_start = True
        while i < n:
            c = m[i]
            if at_line_start:
                j = i
                while j < n and m[j] in " \t":
                    j += 1
                if j < n and m[j] == "#":
                    e = _directive_end(m, j, n)
                    line = m[j:e].replace("\\\n", " ")
                    depth = self._directive(line, frames, depth)
                    self._cond_pos.append(e)
                    self._cond_val.append(tuple(_frame_cond(f) for f in frames))
                    if depth == 0:
                        boundary = e
                    i = e
                    at_line_start = False
                    continue
                at_line_start = False
            if c == "\n":
                at_line_start = True
            elif c == "{":
                if depth == 0:
                    opened = (i, boundary)
                depth += 1
            elif c == "}":
                depth = max(depth - 1, 0)
                if depth == 0:
                    if opened is not None:
                        self._add_function(opened[1], opened[0], i)
                        opened = None
                    boundary = i + 1
            elif c == ";" and depth == 0:
                boundary = i + 1
            i += 1

    def _directive(self, line: str, frames: list[list], depth: int) -> int:
        mm = _DIRECTIVE.match(line)
        if not mm:
            return depth
        word, rest = mm.group(1), " ".join(mm.group(2).split())
        if word in ("if", "ifdef", "ifndef"):
            expr = rest if word == "if" else (rest.split() or [""])[0]
            if word == "ifndef":
                expr = "!" + expr
            frames.append([[expr], depth, None])
        elif word in ("elif", "else") and frames:
            f = frames[-1]
            if f[2] is None:
                f[2] = depth
            depth = f[1]
            f[0].append(rest if word == "elif" else None)
        elif word == "endif" and frames:
            f = frames.pop()
            if f[2] is not None:
                depth = f[2]
        return depth

    def _add_function(self, hstart: int, brace: int, close: int) -> None:
        header = self.masked[hstart:brace]
        # drop directive lines from the header
        header_lines = [ln if not ln.lstrip().startswith("#") else " " * len(ln)
                        for ln in header.split("\n")]
        header = "\n".join(header_lines)
        mm = _HEADER_NAME.search(header)
        if not mm:
            return
        name = mm.group(1)
        if name in _NOT_CALLS:
            return
        before = header[:mm.start()].rstrip()
        if before.endswith("=") or "=" in header[mm.start():]:
            return  # an initializer, not a definition
        self.functions.setdefault(name, []).append((hstart + mm.start(1), brace, close))


def _directive_end(m: str, j: int, end: int) -> int:
    """Where the preprocessor directive starting at j ends: its newline, past backslash
    continuations, or `end`."""
    e = j
    while True:
        e = m.find("\n", e)
        if e < 0 or e >= end:
            return end
        if m[e - 1] != "\\":
            return e
        e += 1


def _wrap(expr: str) -> str:
    if re.fullmatch(r"!?[A-Za-z_]\w*(\s*\([^()]*\))?", expr):
        return expr
    return f"({expr})"


def _negate(expr: str) -> str:
    if re.fullmatch(r"![A-Za-z_]\w*", expr):
        return expr[1:]
    return "!" + _wrap(expr)


def _frame_cond(frame: list) -> str:
    branches = frame[0]
    parts = [_negate(b) for b in branches[:-1] if b is not None]
    if branches[-1] is not None:
        parts.append(_wrap(branches[-1]) if len(branches) > 1 else branches[-1])
    return " && ".join(parts)


def _cond_str(stack: tuple[str, ...]) -> str | None:
    parts = [s for s in stack if s]
    return " && ".join(_wrap(p) if len(parts) > 1 else p for p in parts) or None


def _dead(stack: tuple[str, ...]) -> bool:
    return any(s == "0" or s.endswith("&& 0") for s in stack)


def _match_paren(m: str, open_pos: int) -> int:
    depth = 0
    for k in range(open_pos, len(m)):
        if m[k] == "(":
            depth += 1
        elif m[k] == ")":
            depth -= 1
            if depth == 0:
                return k
    return len(m)


def _match_brace(m: str, open_pos: int, end: int) -> int:
    """The `}` closing m[open_pos], skipping directive lines; like _File._scan, an #else or
    #elif branch restarts from the depth at its #if and #endif keeps the first branch's."""
    depth = 0
    frames: list[list[int | None]] = []   # [depth at #if, depth at end of first branch]
    k = open_pos
    while k < end:
        c = m[k]
        if c == "\n" or k == open_pos:
            j = k + 1 if c == "\n" else k
            while j < end and m[j] in " \t":
                j += 1
            if j < end and m[j] == "#":
                e = _directive_end(m, j, end)
                mm = _DIRECTIVE.match(m[j:e])
                word = mm.group(1) if mm else ""
                if word in ("if", "ifdef", "ifndef"):
                    frames.append([depth, None])
                elif word in ("elif", "else") and frames:
                    if frames[-1][1] is None:
                        frames[-1][1] = depth
                    depth = frames[-1][0]
                elif word == "endif" and frames:
                    f = frames.pop()
                    if f[1] is not None:
                        depth = f[1]
                k = e
                continue
            if c == "\n":
                k += 1
                continue
        c = m[k]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return k
        k += 1
    return end


@dataclass
class _Hit:
    pos: int          # position in the scanned file (call site for helpers)
    name: str
    op: str
    via: tuple[str, ...]
    cond: tuple[str, ...]
    source_file: str | None
    source_line: int | None


class _Reader:
    """Scans function bodies for request checks, following helpers."""

    def __init__(self, x86: _File, tree: Path | None, helper_depth: int):
        self.x86 = x86
        self.tree = tree
        self.helper_depth = helper_depth
        self._external: dict[str, _File | None] = {}
        self._memo: dict[tuple[str, int], list[_Hit]] = {}

    def _external_file(self, rel: str) -> _File | None:
        if rel not in self._external:
            f = None
            if self.tree is not None:
                p = self.tree / rel
                if p.is_file():
                    f = _File(p, p.read_text(encoding="utf-8", errors="replace"))
            self._external[rel] = f
        return self._external[rel]

    def helper(self, name: str, depth: int, seen: frozenset[str]) -> list[_Hit]:
        """The checks a call to `name` makes (positions inside the helper's own file)."""
        if depth <= 0 or name in seen:
            return []
        key = (name, depth)
        if key in self._memo:
            return self._memo[key]
        out: list[_Hit] = []
        defs = self.x86.functions.get(name)
        if defs:
            # first definition that checks anything (#ifdef/#else stubs: the real one)
            for _, start, end in defs:
                out = self.scan(self.x86, start + 1, end, depth - 1, seen | {name})
                if out:
                    break
        elif name in EXTERNAL_HELPERS:
            rel, names = EXTERNAL_HELPERS[name]
            ext = self._external_file(rel)
            if ext is not None and ext.functions.get(name):
                for _, start, end in ext.functions[name]:
                    out = self.scan(ext, start + 1, end, 0, seen | {name})
                    if out:
                        break
            if not out:
                out = [_Hit(0, n, "check", (), (), None, None) for n in names]
        self._memo[key] = out
        return out

    def scan(self, f: _File, start: int, end: int, depth: int,
             seen: frozenset[str]) -> list[_Hit]:
        """Request checks in f.masked[start:end] in source order, helpers (of x86.c) followed."""
        m = f.masked
        hits: list[_Hit] = []
        for mm in _REQ_CALL.finditer(m, start, end):
            cond = f.condition(mm.start())
            if not _dead(cond):
                hits.append(_Hit(mm.start(), mm.group(2), _PRIMITIVES[mm.group(1)], (), cond,
                                 str(f.path), f.line(mm.start())))
        if f is self.x86 and depth > 0:
            for mm in _IDENT_CALL.finditer(m, start, end):
                name, p = mm.group(1), mm.start()
                if (name in _NOT_CALLS or name in _PRIMITIVES or name in seen
                        or (name not in f.functions and name not in EXTERNAL_HELPERS)
                        or (p > 0 and m[p - 1] == ".") or m[max(0, p - 2):p] == "->"):
                    continue
                cond = f.condition(p)
                if _dead(cond):
                    continue
                for h in self.helper(name, depth, seen):
                    hits.append(_Hit(p, h.name, h.op, (name,) + h.via, cond + h.cond,
                                     h.source_file, h.source_line))
        hits.sort(key=lambda h: h.pos)
        return hits


def _version(tree: Path | None) -> str | None:
    if tree is None:
        return None
    mk = tree / "Makefile"
    if not mk.is_file():
        return None
    vals = {}
    for ln in mk.read_text(encoding="utf-8", errors="replace").splitlines()[:40]:
        mm = re.match(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=\s*(.*?)\s*$", ln)
        if mm and mm.group(1) not in vals:
            vals[mm.group(1)] = mm.group(2)
    if not vals.get("VERSION"):
        return None
    v = vals["VERSION"]
    if vals.get("PATCHLEVEL"):
        v += "." + vals["PATCHLEVEL"]
        if vals.get("SUBLEVEL"):
            v += "." + vals["SUBLEVEL"]
    return v + vals.get("EXTRAVERSION", "")


def _locate(path: str | Path) -> tuple[Path, Path | None]:
    p = Path(path)
    if p.is_dir():
        f = p / X86_C
        if not f.is_file():
            raise ValueError(f"{p}: a directory without {X86_C}; give a kernel tree or the "
                             "path of its x86.c")
        return f, p
    if not p.is_file():
        raise ValueError(f"{p}: no such file or kernel tree")
    parts = p.resolve().parts
    tree = None
    if tuple(parts[-4:]) == X86_C.parts:
        tree = Path(*parts[:-4])
    return p, tree


def order_from_source(path: str | Path, helper_depth: int = 2) -> SourceOrder:
    """The ordered request checks of vcpu_enter_guest() in a kernel's arch/x86/kvm/x86.c.

    `path` is the x86.c file or a kernel tree. Raises ValueError (naming the path) when the
    file has no vcpu_enter_guest() definition or no request checks in it.
    """
    file, tree = _locate(path)
    text = file.read_text(encoding="utf-8", errors="replace")
    x86 = _File(file, text)
    defs = x86.functions.get(FUNCTION)
    if not defs:
        raise ValueError(f"{file}: no definition of {FUNCTION}() found (looked for "
                         f"`{FUNCTION}(...) {{` at file scope)")
    name_pos, start, end = defs[0]
    warnings: list[str] = []
    if len(defs) > 1:
        warnings.append(f"{len(defs)} definitions of {FUNCTION}(); read the first, "
                        f"line {x86.line(name_pos)}")
    reader = _Reader(x86, tree, helper_depth)
    hits = reader.scan(x86, start + 1, end, helper_depth, frozenset({FUNCTION}))
    if not hits:
        raise ValueError(f"{file}: {FUNCTION}() (line {x86.line(name_pos)}) has no "
                         "kvm_check_request()/kvm_test_request() calls")

    # The end of the `if (kvm_request_pending(vcpu))` block, then the EVENT check after it.
    m = x86.masked
    block_end = None
    pend = re.compile(r"\bkvm_request_pending\s*\(").search(m, start, end)
    if pend:
        ifs = list(re.compile(r"\bif\s*\(").finditer(m, start, pend.start()))
        if ifs:
            cp = _match_paren(m, ifs[-1].end() - 1)
            if cp > pend.start():
                j = cp + 1
                while j < end and m[j].isspace():
                    j += 1
                block_end = (_match_brace(m, j, end) if j < end and m[j] == "{"
                             else m.find(";", j, end))
    if block_end is None:
        warnings.append("no `if (kvm_request_pending(vcpu))` block found; the order stops at "
                        "the first EVENT check")
    stop = next((h.pos for h in hits if h.name == "EVENT" and not h.via
                 and (block_end is None or h.pos > block_end)), None)
    if stop is None:
        warnings.append("no KVM_REQ_EVENT check after the request block; EVENT appended last")
        stop = block_end if block_end is not None else end
    hits = [h for h in hits if h.pos <= stop]

    checks = tuple(Check(
        name=h.name,
        line=x86.line(h.pos),
        kind=f"helper:{h.via[0]}" if h.via else h.op,
        condition=_cond_str(h.cond),
        known=h.name in catalogue.BY_NAME,
        op=h.op,
        via=h.via,
        source_file=h.source_file,
        source_line=h.source_line,
    ) for h in hits)
    unknown = sorted({c.name for c in checks if not c.known})
    if unknown:
        warnings.append(f"requests not in kvmsim.catalogue: {', '.join(unknown)}")
    return SourceOrder(path=str(file), checks=checks, version=_version(tree),
                       function_line=x86.line(name_pos), warnings=tuple(warnings))
