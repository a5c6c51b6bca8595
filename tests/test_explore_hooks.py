"""The README's table of the explorer's test hook lists exactly the members explorer.js gives ``window.explorer``.

explorer.js builds the hook in three places: the ``window.explorer = {...}`` literal, ``Object.defineProperties(
explorer, {...})`` (getters) and ``Object.assign(explorer, {...})`` (setters and readers). The members are the
top-level keys of those three object literals; the README's are the leading names of the first column's code spans.
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPLORER_JS = REPO / "src" / "patchorder" / "explore" / "explorer.js"
README = REPO / "README.md"
HOOK_OBJECTS = ("window.explorer = {", "Object.defineProperties(explorer, {", "Object.assign(explorer, {")


def object_literal(source: str, start: int) -> str:
    """The text between the ``{`` at ``start`` and its matching ``}`` (``source`` already stripped of strings)."""
    depth = 0
    for i in range(start, len(source)):
        if source[i] in "{([":
            depth += 1
        elif source[i] in "})]":
            depth -= 1
            if depth == 0:
                return source[start + 1:i]
    raise AssertionError(f"no closing brace for the object at offset {start} of {EXPLORER_JS.name}")


def top_level_keys(body: str) -> set[str]:
    """Keys of an object literal's body: each top-level entry starts with its key (``a``, ``a: v``, ``a(x) {}``);
    entries are split at the commas outside any bracket."""
    entries, depth, current = [], 0, []
    for ch in body:
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        if ch == "," and depth == 0:
            entries.append("".join(current))
            current = []
        else:
            current.append(ch)
    entries.append("".join(current))
    keys = set()
    for entry in entries:
        match = re.match(r"\s*(?:async\s+)?([A-Za-z_$][\w$]*)", entry)
        if match:
            keys.add(match.group(1))
    return keys


def strip_strings_and_comments(source: str) -> str:
    """``source`` with the contents of strings and regex literals, and comments, removed, so brackets and commas
    inside them do not count."""
    out, i = [], 0
    while i < len(source):
        if source.startswith("//", i):
            i = source.index("\n", i)
            continue
        if source.startswith("/*", i):
            i = source.index("*/", i) + 2
            continue
        ch = source[i]
        # A slash where a value starts (after an operator or an opening bracket) begins a regex literal.
        regex = ch == "/" and re.search(r"(^|[(,=:\[!&|?{};])\s*$", "".join(out[-40:])) is not None
        if ch in "'\"`" or regex:
            j, in_class = i + 1, False
            while source[j] != ch or in_class:
                if regex and source[j] in "[]":
                    in_class = source[j] == "["
                j += 2 if source[j] == "\\" else 1
            out.append(ch + ch)
            i = j + 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def js_hook_members() -> set[str]:
    source = strip_strings_and_comments(EXPLORER_JS.read_text())
    members = set()
    for opening in HOOK_OBJECTS:
        assert source.count(opening) == 1, f"explorer.js should build window.explorer with one `{opening}...}}`"
        start = source.index(opening) + len(opening) - 1
        members |= top_level_keys(object_literal(source, start))
    return members


def readme_hook_members() -> set[str]:
    text = README.read_text()
    section = text[text.index("## Attention explorer"):]
    section = section[:section.index("\n## ")]
    table = section[section.index("| hook |"):].split("\n\n")[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    assert rows, "the README's explorer section has no rows in its hook table"
    members = set()
    for row in rows:
        first_cell = re.split(r"(?<!\\)\|", row)[1]
        members |= set(re.findall(r"`([A-Za-z_$][\w$]*)", first_cell))
    return members


def test_readme_lists_every_hook_member_and_no_other():
    in_js, in_readme = js_hook_members(), readme_hook_members()
    assert in_js - in_readme == set(), f"explorer.js defines hook members the README's table lacks: {in_js - in_readme}"
    assert in_readme - in_js == set(), f"the README's table lists members explorer.js lacks: {in_readme - in_js}"


def test_the_parser_reads_all_three_forms():
    """Oracle on a small literal: shorthand, key: value, method, nested braces, strings with commas and braces."""
    source = strip_strings_and_comments(
        "const e = (window.explorer = { ready: false, errors: [] });\n"
        "Object.defineProperties(explorer, { state: { get: () => ({ a: 1, b: 2 }) } });\n"
        "Object.assign(explorer, { select, go(a, b = 0) { f(`x, ${a}`, '}', x / 2, s.replace(/[,'}]/g, '')); },\n"
        "  // a comment, with: keys\n"
        "  last(x) { return { inner: x }; } });\n"
    )
    found = set()
    for opening in HOOK_OBJECTS:
        found |= top_level_keys(object_literal(source, source.index(opening) + len(opening) - 1))
    assert found == {"ready", "errors", "state", "select", "go", "last"}
