"""Every message the command line prints is in the catalogue (issue 15, item 1).

Two checks, one static and one by running the commands. The static one reads `cli/`'s source:
any string literal of two English words or more (outside docstrings) must be a catalogue msgid
(marked `tr("...")`/`said("...")`, a help text, a table heading, Typer's words) or be named in
`MACHINE` with why it stays as it is; an f-string with words in it is never a msgid, so it
fails too. A new `console.print("Some new message")` therefore fails here. The end-to-end one
runs the commands in zh-CN and finds no English sentence in what they print, and the same
`--json` bytes in both languages.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from copyledger.cli.main import app
from tests import i18n_catalog
from tests.server import ServerProcess

CLI = i18n_catalog.ROOT / "cli"
WORDS = re.compile(r"[A-Za-z]{2,}(?:[ ']+[A-Za-z]{2,})+")  # two English words or more
# Literals that are not messages: commands a person copies, data kept in English for --json.
MACHINE = {
    "\n  copyledger keys create --role creator --account you --data-dir {}":
        "a command to copy, printed after its translated lead-in",
}


def _text(node: ast.AST) -> str | None:
    """A literal's text; an f-string's with `{}` for each value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def _words(text: str) -> bool:
    """Whether `text` says something in English: markup, placeholders, options and
    backticked code taken out, two words or more remain."""
    text = re.sub(r"\[/?[a-z ]*\]|\{[^}]*\}|`[^`]*`|--[\w-]+", " ", text)
    return bool(WORDS.search(text))


def unmarked(source: str, msgids: set[str]) -> list[tuple[int, str]]:
    """(line, text) of every literal in `source` with English words that the catalogue
    does not hold: docstrings are documentation, not output."""
    tree = ast.parse(source)
    parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    found = []
    for node in ast.walk(tree):
        text = _text(node)
        if text is None or isinstance(parents.get(node), ast.JoinedStr):
            continue  # a part of an f-string: judged with the whole
        if isinstance(parents.get(node), ast.Expr):
            continue  # a docstring
        if isinstance(node, ast.Constant) and text in msgids:
            continue
        if text in MACHINE or not _words(text):
            continue
        found.append((node.lineno, text))
    return sorted(found)


@pytest.fixture(scope="module")
def msgids() -> set[str]:
    return set(i18n_catalog.cli_strings())


def test_every_literal_the_cli_prints_is_a_catalogue_message(msgids: set[str]) -> None:
    left = [f"{p.name}:{line}: {text!r}" for p in sorted(CLI.glob("*.py"))
            for line, text in unmarked(p.read_text(encoding="utf-8"), msgids)]
    assert not left, ("CLI strings outside the catalogue: mark them tr(\"...\") (values as "
                      "{names}, then .format), run `make i18n`, translate:\n" + "\n".join(left))


def test_the_static_check_catches_a_new_message_and_passes_a_marked_one(
    msgids: set[str]
) -> None:
    bad = 'console.print("Some new message")\nerr.print(f"{n} rows written")\n'
    assert [t for _, t in unmarked(bad, msgids)] == ["Some new message", "{} rows written"]
    good = ('"""A docstring says why."""\nout.print(tr("existing key kept"))\n'
            'x = {"sha256": "ab" * 32, "kind": "work"}\n')
    assert unmarked(good, msgids) == []
    assert "Some new message" not in msgids


def test_every_machine_literal_is_still_in_the_source() -> None:
    sources = "".join(p.read_text(encoding="utf-8") for p in CLI.glob("*.py"))
    for text in MACHINE:
        assert any(_text(n) == text for n in ast.walk(ast.parse(sources))), text


# ------------------------------------------------------------------ the commands, run in zh-CN

ZH = {"LANG": "zh_CN.UTF-8", "LC_ALL": "", "LC_MESSAGES": "", "COLUMNS": "200"}
EN = {**ZH, "LANG": "C.UTF-8"}
runner = CliRunner()
# Not English sentences: links, paths, commands to copy, options, hex, and the values the
# commands print as given (account ids, transfer types, origins).
TOKENS = re.compile(r"https?://\S+|/\S+|copyledger(?: [a-z-]+)+|--[\w-]+|\b[0-9a-f]{8,}\b|"
                    r"\b(?:alice|bob|assignment|example\.org/\S*)\b")
ENGLISH = re.compile(r"\b[A-Za-z]{2,}(?:[ ,']+[A-Za-z]{2,}){2,}")  # three words or more


def _run(*args: str, env: dict[str, str] = ZH) -> tuple[int, str]:
    r = runner.invoke(app, list(args), env=env)
    return r.exit_code, r.stdout + (r.stderr if r.stderr_bytes else "")


def english_left(text: str, sentences: list[str]) -> list[str]:
    """What still reads as English in `text`: a msgid's sentence, or three English words in
    a row once links, paths, commands and printed values are taken out."""
    flat = " ".join(re.sub(r"[│╭╮╰╯─┃━┏┓┗┛┡┩└┘┌┐├┤┬┴┼]", " ", text).split())
    left = [s for s in sentences if s in flat]
    return left + ENGLISH.findall(TOKENS.sub(" ", flat))


def test_the_english_detector_sees_a_sentence_and_lets_values_through(
    msgids: set[str]
) -> None:
    sentences = i18n_catalog.cli_sentences(msgids)
    assert english_left("作品 3：由 alice 登记；持有人 bob", sentences) == []
    assert english_left("请运行 copyledger transfer accept 4（见 http://127.0.0.1:8000/v1/x）",
                        sentences) == []
    assert english_left("seq 3 saved to the folder", sentences) == ["saved to the folder"]
    assert "no entry registers" in english_left("no entry registers ab", sentences)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("zhcli")
    d = tmp / "reg"
    made = json.loads(_run("init", "--data-dir", str(d), "--json")[1])
    keys = {a: json.loads(_run("keys", "create", "--role", "creator", "--account", a,
                               "--data-dir", str(d), "--json")[1])["key"]
            for a in ("alice", "bob")}
    srv = ServerProcess(d, **ZH).start()
    try:
        poem = tmp / "poem.txt"
        poem.write_text("春江潮水连海平\n", encoding="utf-8")
        code, out = _run("register", str(poem), "--server", srv.url, "--api-key",
                         keys["alice"], "--trust", made["verifier_key"], "--json",
                         "--receipts", str(tmp / "receipts"))
        assert code == 0, out
        yield {"srv": srv, "dir": d, "tmp": tmp, "keys": keys, "poem": poem,
               "trust": made["verifier_key"], "seq": json.loads(out)[0]["seq"]}
    finally:
        srv.stop()


def test_the_commands_speak_chinese_and_their_json_does_not_change(
    node: dict[str, Any], msgids: set[str]
) -> None:
    srv, seq, tmp, keys = node["srv"], str(node["seq"]), node["tmp"], node["keys"]
    at = ("--server", srv.url)
    pinned = (*at, "--trust", node["trust"])
    runs: list[tuple[tuple[str, ...], int]] = [
        (("lookup", str(node["poem"]), *at), 0),
        (("lookup", str(node["dir"] / "config.toml"), *at), 0),  # registers nothing
        (("transfer", seq, "--to", "bob", "--type", "assignment", *pinned, "--api-key",
          keys["alice"]), 0),
        (("history", seq, *at), 0),  # unpinned: says so
        (("transfer", "accept", str(int(seq) + 1), *pinned, "--api-key", keys["bob"]), 0),
        (("transfer", seq, "--to", "alice", "--type", "gift", *at, "--api-key",
          keys["bob"]), 2),
        (("history", seq, *pinned), 0),
        (("proof", seq, *pinned), 0),
        (("bundle", seq, "-o", str(tmp / "b.json"), *at), 0),
        (("bundle", *at, "-o", str(tmp / "c.json")), 2),
        (("whoami", *at), 2),
        (("claim", "notice", "--from", str(node["poem"]), *at, "--api-key", keys["bob"]), 2),
        (("tiles", "export", str(tmp / "tiles"), "--data-dir", str(node["dir"])), 0),
        (("audit", "--data-dir", str(node["dir"])), 0),
        (("witness", "init", "--data-dir", str(tmp / "w"), "--name", "w.example.org/w1"), 0),
        (("notary", "init", "--data-dir", str(tmp / "n")), 0),
        (("monitor",), 2),
        (("monitor", "bundle", "0", "--data-dir", str(tmp / "nowhere")), 2),
    ]
    sentences = i18n_catalog.cli_sentences(msgids)
    for args, want in runs:
        code, text = _run(*args)
        assert code == want, (args, text)
        assert re.search(r"[\u4e00-\u9fff]", text), (args, text)
        left = english_left(text, sentences)
        assert not left, f"`copyledger {' '.join(args[:2])}` in zh-CN still says {left}:\n{text}"
    banner = srv.log.read_text(encoding="utf-8")
    assert "正在" in banner and not english_left(banner.split("\n{")[0], sentences), banner
    for args in (("lookup", str(node["poem"]), *at), ("history", seq, *pinned),
                 ("proof", seq, *pinned), ("audit", "--data-dir", str(node["dir"]))):
        zh, en = _run(*args, "--json"), _run(*args, "--json", env=EN)
        assert zh == en and zh[0] == 0, args
        json.loads(zh[1])
