"""Every English string a person reads, with where it lives: the catalogue's msgids.

`python -m tests.i18n_catalog` (or `make i18n`) merges them into each `.po` (new msgids are
added untranslated, translations kept, vanished msgids dropped); `tests/test_i18n.py` fails
while any of them lacks a translation. Sources: the explorer's tables, the certificate's
tables and its `_t(lang, "...")` calls, the problem table, the date format, and the
verification page's HTML (`{{...}}` markers) and script tables.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import typer.main
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po, write_po

from copyledger.api import explorer, problems
from copyledger.cli import main as cli_main
from copyledger.cli import words
from copyledger.ledger import components, verify
from copyledger.service import accounts, certificate, claims, dates, i18n

ROOT = Path(__file__).resolve().parent.parent
VERIFY_JS = "api/static/verify.js"
VERIFY_HTML = "api/static/verify.html"
# Where domain errors are raised with `said("template", ...)`: their templates are msgids (D50).
SAID_IN = ("ledger", "service", "notary", "matching", "api", "client")
# Where a domain error raised with a literal detail says it to a person: that literal is a msgid
# too (`api.problems` and the CLI look a plain detail up as it is), and an f-string detail
# fails `tests/test_i18n_errors.py` (D56).
ERRORS_IN = ("ledger", "notary", "service", "api", "client", "matching")
# Calls other than a domain error's whose argument at this index is a detail a person reads:
# a monitor alert's, `ledger.timestamp._fail(reason, detail)`'s (a TimestampError's), and
# `ledger.verify`'s step details, failed (`_Fail`) or held (`_Held`, `_skipped`).
DETAIL_AT = {"Alert": 1, "_alert": 1, "_fail": 1, "_Fail": 0, "_Held": 0, "_skipped": 0}
JS_TABLES = ("STEPS", "PLAIN", "MONTHS", "FACTS", "KINDS", "WORDS")
MARKER = re.compile(r"\{\{(.+?)\}\}", re.S)


def _values(x: object) -> Iterator[str]:
    if isinstance(x, str):
        yield x
    elif isinstance(x, Mapping):
        for v in x.values():
            yield from _values(v)
    elif isinstance(x, list | tuple):
        for v in x:
            yield from _values(v)


# A JavaScript string literal (one line), and a `T(...)` call's template: literals joined by `+`.
JS_LITERAL = r"'(?:\\.|[^'\\\n])*'" + r'|"(?:\\.|[^"\\\n])*"'
JS_T_CALL = re.compile(rf"\bT\(\s*((?:{JS_LITERAL})(?:\s*\+\s*(?:{JS_LITERAL}))*)")


def _js_text(literal: str) -> str:
    """A JavaScript string literal's text: quotes off, escapes resolved."""
    return literal[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")


def js_strings(source: str) -> list[str]:
    """The string literals of verify.js's tables (`const NAME = ...;` blocks) and the templates
    of its `T('...', {...})` calls (the steps' details, as ledger/verify.py's `said`), with
    JavaScript's escapes and `+` continuations resolved."""
    out: list[str] = []

    def add(s: str) -> None:
        if re.sub(r"\{\w*\}", "", s).strip() and s not in out:  # words, not "{why}"
            out.append(s)

    for name in JS_TABLES:
        m = re.search(rf"const {name} = (.*?);\n", source, re.S)
        if not m:
            continue
        block = re.sub(r"'\s*\+\s*'", "", m.group(1))  # 'a' + 'b' -> 'ab'
        if name == "STEPS":  # [name, words] pairs: the name is machine-readable
            block = re.sub(r"\[\s*'[\w-]+',", "[", block)
        for _, text in re.findall(r"""(['"])((?:\\.|(?!\1).)*)\1""", block):
            add(_js_text(f"'{text}'"))
    for m in JS_T_CALL.finditer(source):
        add("".join(_js_text(lit) for lit in re.findall(JS_LITERAL, m.group(1))))
    return out


def js_unsaid(source: str) -> list[tuple[int, str]]:
    """(line, literal) of every string or template literal of verify.js with two English words
    that neither a table nor a `T(...)` template holds: words a zh-CN page would show in English.
    Comments and `${...}` code are skipped, and so are `JS_MACHINE`'s literals."""
    rest = JS_T_CALL.sub(lambda m: "T(" + "\n" * m.group(0).count("\n"), source)
    for name in JS_TABLES:
        rest = re.sub(rf"const {name} = (.*?);\n", lambda m: "\n" * m.group(0).count("\n"),
                      rest, flags=re.S)
    rest = re.sub(r"^[ \t]*(//|/?\*).*$", "", rest, flags=re.M)
    found = []
    for m in re.finditer(JS_LITERAL + r"|`(?:\\.|[^`\\])*`", rest):
        text = re.sub(r"\$\{[^}]*\}", "", m.group(0))
        if re.search(r"[A-Za-z]{2,}\s+[A-Za-z]{2,}", text) and text[1:-1] not in JS_MACHINE:
            found.append((rest[:m.start()].count("\n") + 1, m.group(0)))
    return found


# verify.js literals of two words that are not words to a reader: DER fields by their ASN.1
# names (data, like a JSON key), a step status (machine-readable), openssl command lines.
JS_MACHINE = ("hash OID", "signature algorithm", "digest algorithm", "SignerInfo version",
              "attribute type", "attribute values", "ESS hash", "not checked", "use strict",
              " -untrusted chain.pem",
              "openssl ts -verify -digest  -in token.der -token_in -CAfile root.pem")


def html_markers(source: str) -> list[str]:
    """The `{{...}}` segments of a page template (HTML fragments, translated whole)."""
    return [" ".join(m.split()) for m in MARKER.findall(source)]


def messages() -> dict[str, set[str]]:
    """{msgid: {source file, ...}} for everything a person reads."""
    found: dict[str, set[str]] = {}

    def add(where: str, strings: Iterator[str] | list[str]) -> None:
        for s in strings:
            if re.sub(r"\{\w*\}", "", s).strip():  # words, not a bare "{why}"
                found.setdefault(s, set()).add(where)

    add("api/explorer.py", _values([explorer.EN, explorer.KINDS, explorer.RELS,
                                    explorer.NOTICES]))
    add("api/problems.py", (t for _, _, t in problems.PROBLEMS.values()))
    add("api/problems.py", iter(problems.DETAILS))
    add("service/dates.py", _values([dates.MONTHS, dates.FORMAT, dates.BOTH, dates.ZONES,
                                     dates.UTC_ALONE, dates.ZONE_AND_UTC]))
    add("service/claims.py", _values(claims.CAVEAT_TEXT))
    add("service/accounts.py", _values([accounts.KIND_WORDS, accounts.STATEMENT]))
    add("ledger/components.py", list(components.PARTS))
    raised = {name: (1,) for name in error_classes()}
    for path in sorted(p for d in SAID_IN for p in (ROOT / d).rglob("*.py")):
        where = str(path.relative_to(ROOT))
        keywords = {"said": (1,), **(raised if where.split("/")[0] in ERRORS_IN else {}),
                    **{name: (at + 1,) for name, at in DETAIL_AT.items()}}
        add(where, [str(msg) for _, msg, _, _ in extract_from_file(
            "python", path, keywords=keywords)])
    add("cli/main.py", cli_strings())
    add("service/certificate.py", _values([certificate.TITLES, certificate.TEXT,
                                           certificate.PROVES, certificate.PROVES_TIME,
                                           certificate.NOT_PROVES,
                                           certificate.WITNESS_NOTE, certificate.LIMITS,
                                           certificate.DEFAULT_TITLE]))
    for path in ("service/certificate.py",):
        for _, msg, _, _ in extract_from_file("python", ROOT / path,
                                               keywords={"_t": (2,), "N_": None}):
            add(path, [str(msg)])
    add(VERIFY_JS, js_strings((ROOT / VERIFY_JS).read_text(encoding="utf-8")))
    add(VERIFY_HTML, html_markers((ROOT / VERIFY_HTML).read_text(encoding="utf-8")))
    return found


def error_classes() -> set[str]:
    """The names of `CopyledgerError` and of every class under `ERRORS_IN` (`ledger.errors`
    among them) that derives from it, however deep, and takes a detail first: the calls whose
    first argument a person may read (`LogMisbehaved(alert)` takes an alert instead)."""
    bases: dict[str, set[str]] = {}
    other_first: set[str] = set()
    for path in sorted(p for d in ERRORS_IN for p in (ROOT / d).rglob("*.py")):
        # Read with patterns, not `ast`: CPython 3.11's ast.parse can fail deep in a test's
        # stack ("AST constructor recursion depth mismatch"), and classes here are one-liners.
        source = path.read_text(encoding="utf-8")
        for m in re.finditer(r"^class (\w+)\(([^)]*)\):\n((?:[ \t]+.*\n|\n)*)", source, re.M):
            bases.setdefault(m.group(1), set()).update(
                b.strip().rsplit(".", 1)[-1] for b in m.group(2).split(","))
            init = re.search(r"^    def __init__\(\s*self,\s*(\w+)", m.group(3), re.M)
            if init and init.group(1) != "detail":
                other_first.add(m.group(1))
    found = {"CopyledgerError"}
    while grown := {n for n, b in bases.items() if b & found and n not in found}:
        found |= grown
    return found - other_first


def cli_strings() -> list[str]:
    """What the command line says: every `--help` text of the command tree, Typer's and
    Click's words around them, and the messages marked `tr("...")` in `cli/` (and table
    headings, `Table(*map(tr, ("seq", ...)))`)."""
    found = words.help_texts(typer.main.get_command(cli_main.app))
    found += list(words.CHROME.values()) + list(words.CLICK) + list(words.USAGE_ERRORS)
    found += [title for _, title in verify.STEPS]  # `copyledger verify` names each step
    for path in sorted((ROOT / "cli").glob("*.py")):
        found += [str(msg) for _, msg, _, _ in extract_from_file(
            "python", path, keywords={"tr": None, "said": (1,)})]  # said: rows' problems
        for names in re.findall(r"map\(tr, \((.*?)\)\)", path.read_text(), re.S):  # headings
            found += re.findall(r'"([^"]+)"', names)
    return found


def cli_sentences(texts: Iterable[str]) -> list[str]:
    """The English fragments of three words or more of CLI msgids (split at `{slots}`, Rich
    `[markup]`, backticked code and line ends): none may show in zh-CN output."""
    out = set()
    for t in texts:
        for part in re.split(r"\{[^}]*\}|\[[^\]]*\]|`[^`]*`|\n", t):
            part = part.strip(" .,:;()")
            if len(part.split()) >= 3:
                out.add(part)
    return sorted(out)


def po_path(lang: str) -> Path:
    return i18n.LOCALE_DIR / i18n.LANGS[lang] / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"


def merge(lang: str) -> Catalog:
    """The catalogue for `lang` with exactly today's msgids, translations kept."""
    path = po_path(lang)
    old = read_po(path.open("rb"), locale=i18n.LANGS[lang]) if path.exists() else None
    cat = Catalog(locale=i18n.LANGS[lang], domain=i18n.DOMAIN, project="copyledger",
                  charset="utf-8", fuzzy=False)
    if old is not None:  # a merge that changes no message changes no byte
        cat.creation_date, cat.revision_date = old.creation_date, old.revision_date
    for msgid, where in sorted(messages().items()):
        prev = old.get(msgid) if old is not None else None
        cat.add(msgid, prev.string if prev is not None else "",
                locations=[(w, None) for w in sorted(where)])
    return cat


def main() -> None:
    for lang in i18n.LANGS:
        if lang == i18n.DEFAULT:
            continue
        buf = io.BytesIO()
        write_po(buf, merge(lang), width=100, omit_header=False, sort_output=True)
        po_path(lang).parent.mkdir(parents=True, exist_ok=True)
        po_path(lang).write_bytes(buf.getvalue())
        print(f"{po_path(lang).relative_to(ROOT)}: {len(messages())} messages", file=sys.stderr)


if __name__ == "__main__":
    main()
