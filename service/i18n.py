"""Languages: which one a reader asked for, and the words in it.

English is the source language: every human string stays in the code's English tables (the
explorer's `EN`, the certificate's `TEXT`, the problem table, `verify.js`'s tables), and its
English text is the gettext msgid. Translations live in Babel/gettext catalogues,
`service/locale/<locale>/LC_MESSAGES/copyledger.po`, read with Babel when first needed (no
compiled `.mo` to build or forget: the `.po` is the one source, in the clone and in the
wheel). A string with no translation reads in English, and `tests/test_i18n.py` fails on it.

Only words change with the language: JSON keys, problem `type`s, verdicts and `data-status`
values are machine-readable and the same in every language.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

__all__ = ["DEFAULT", "LANGS", "catalogue", "from_environment", "gettext", "negotiate", "say",
           "table"]

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "copyledger"
DEFAULT = "en"
LANGS = {"en": "en", "zh-CN": "zh_CN"}  # BCP 47 tag (HTTP, HTML) -> gettext locale directory
_ALIASES = {"en": "en", "zh": "zh-CN", "zh-cn": "zh-CN", "zh-hans": "zh-CN",
            "zh-hans-cn": "zh-CN", "zh-sg": "zh-CN", "zh-hans-sg": "zh-CN"}


def pick(tag: str | None) -> str | None:
    """The language we serve for one tag, or None: en-* is English; zh, zh-CN and zh-Hans
    (the simplified script, wherever it is used) are zh-CN. Case does not matter."""
    if not tag:
        return None
    t = tag.strip().lower().replace("_", "-")
    if t in _ALIASES:
        return _ALIASES[t]
    if t.startswith("en-"):
        return "en"
    if t.startswith("zh-hans-"):
        return "zh-CN"
    return None


def negotiate(accept_language: str | None, override: str | None = None) -> str:
    """The language to answer in: `override` (the pages' `?lang=` switch) when we serve it,
    else the best `Accept-Language` range by q-value (RFC 9110 §12.5.4; equal weights keep
    the client's order; q=0 refuses), else English."""
    chosen = pick(override)
    if chosen:
        return chosen
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "")[:1000].split(",")):
        tag, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            if p.lower().startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        lang = pick(tag)
        if lang and q > 0:
            ranked.append((-q, i, lang))
    return min(ranked)[2] if ranked else DEFAULT


@functools.cache
def catalogue(lang: str) -> Catalog | None:
    """The Babel catalogue for a language (None for English, the source language)."""
    if lang == DEFAULT or lang not in LANGS:
        return None
    path = LOCALE_DIR / LANGS[lang] / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as fh:
        return read_po(fh, locale=LANGS[lang], domain=DOMAIN)


@functools.cache
def _messages(lang: str) -> Mapping[str, str]:
    cat = catalogue(lang)
    if cat is None:
        return {}
    return {str(m.id): str(m.string) for m in cat if m.id and m.string and not m.fuzzy}


def gettext(lang: str, msgid: str) -> str:
    """`msgid` (English) in `lang`; English when it has no translation."""
    return _messages(lang).get(msgid, msgid) if lang != DEFAULT else msgid


def say(lang: str, text: str) -> str:
    """A detail in `lang`: a `said(...)` detail by its template, filled in after the lookup
    (the values stay as given, except a value that is itself a `said(...)`, said the same
    way); any other string as a msgid."""
    template = getattr(text, "template", None)
    if template is None or lang == DEFAULT:
        return gettext(lang, text)
    values = {k: say(lang, v) if getattr(v, "template", None) is not None else v
              for k, v in getattr(text, "values", {}).items()}  # a nested said(...) too
    if not values:  # a literal (`Said.literal`, every domain error's detail): its text
        return gettext(lang, str(text))
    try:
        return gettext(lang, template).format(**values)
    except (KeyError, IndexError, ValueError):  # a translation that lost a slot: say English
        return str(text)


def from_environment(environ: Mapping[str, str]) -> str:
    """The language of a command line, from POSIX locale variables: the first of `LC_ALL`,
    `LC_MESSAGES`, `LANG` that is set and not empty (`zh_CN.UTF-8` → zh-CN; `C`, `POSIX` and
    anything we do not serve → English)."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(name, "")
        if value:
            return pick(value.split(".", 1)[0].split("@", 1)[0]) or DEFAULT
    return DEFAULT


def table(lang: str, words: Mapping[str, str]) -> dict[str, str]:
    """A whole table of English strings, each translated."""
    return {k: gettext(lang, v) for k, v in words.items()}


def located(lang: str, source: str) -> dict[str, str]:
    """{msgid: translation} for the messages the catalogue locates in `source` (a file path
    such as "api/static/verify.js"): what a browser-side script needs, and no more."""
    cat = catalogue(lang)
    if cat is None:
        return {}
    return {str(m.id): str(m.string) for m in cat
            if m.id and m.string and any(loc == source for loc, _ in m.locations)}
