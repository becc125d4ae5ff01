"""The command line's language: zh-CN when the locale says so (`LC_ALL`, `LC_MESSAGES`, `LANG`,
e.g. `zh_CN.UTF-8`), else English. Messages are the English msgids of the one catalogue
(`service/locale`), marked `_("...")` where they are written; `--help` texts are translated
when the command runs (`Localized`), so Typer's decorators keep plain English. `--json` output
is data and never passes through here.
"""

from __future__ import annotations

import os
import re
from typing import Any

import typer.rich_utils as rich_utils
from typer.core import TyperGroup

from copyledger.service.i18n import DEFAULT, from_environment, gettext, say

__all__ = ["Localized", "detail", "help_texts", "lang", "tr", "usage_error"]

# Typer's own words around the help (panel titles, markers), as Typer spells them.
CHROME = {"ARGUMENTS_PANEL_TITLE": "Arguments", "OPTIONS_PANEL_TITLE": "Options",
          "COMMANDS_PANEL_TITLE": "Commands", "REQUIRED_LONG_STRING": "[required]",
          "DEFAULT_STRING": "[default: {}]", "ENVVAR_STRING": "[env var: {}]",
          "DEPRECATED_STRING": "(deprecated) ", "RICH_HELP": "Try [blue]'{command_path} "
          "{help_option}'[/] for help.", "ERRORS_PANEL_TITLE": "Error", "ABORTED_TEXT": "Aborted."}
# Click's own words on every help page (in the copy of Click that Typer carries).
USAGE, HELP = "Usage:", "Show this message and exit."
CLICK = (USAGE, HELP)
# Click's own usage errors, worded as the Click copy inside Typer words them. There they are
# plain f-strings (no gettext call, so there is no domain to bind a catalogue to): each is a
# msgid whose `{slots}` are read back out of the English message and put in the translation
# unchanged; `{reason}` is itself one of these when it can be (`usage_error`).
USAGE_ERRORS = (
    "Missing argument {name}.", "Missing option {name}.", "Missing parameter {name}.",
    "Missing argument {name}. Choose from:{choices}",
    "Missing option {name}. Choose from:{choices}",
    "Missing command.", "No such command {name}.", "No such option: {name}",
    "No such option: {name} (Possible options: {options})",
    "Got unexpected extra argument(s) ({args})",
    "Option {name} requires an argument.", "Option {name} requires {count} arguments.",
    "Option {name} does not take a value.", "Argument {name} takes {count} values.",
    "Invalid value for {name}: {reason}", "Invalid value: {reason}",
    "{value} is not a valid integer.", "{value} is not a valid int range.",
    "{value} is not a valid float.", "{value} is not a valid float range.",
    "{value} is not a valid UUID.",
    "{value} is not a valid boolean. Recognized values: {states}",
    "{value} is not one of {choices}.", "{value} is not in the range {range}.",
    "File {path} does not exist.", "Directory {path} does not exist.",
    "Path {path} does not exist.", "File {path} is a directory.",
    "Directory {path} is a file.", "Path {path} is not readable.",
)


def lang() -> str:
    """The language this process speaks, from its locale variables."""
    return from_environment(os.environ)


def tr(msgid: str) -> str:
    """`msgid` in the command line's language."""
    return gettext(lang(), msgid)


def detail(text: str) -> str:
    """A domain error's detail in the command line's language (`service.i18n.say`)."""
    return say(lang(), text)


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)  # text, slot, text, slot, ..., text
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)"
                              for i, p in enumerate(parts)), re.S)


_PATTERNS = [(t, _pattern(t)) for t in USAGE_ERRORS]


def usage_error(message: str, language: str) -> str:
    """Click's usage error `message` in `language`: the template it was made from, translated,
    with the values it carried (a reason, itself a Click message, is said the same way); a
    message no template makes stays as Click wrote it."""
    if language == DEFAULT:
        return message
    for template, pattern in _PATTERNS:
        m = pattern.fullmatch(message)
        if m:
            values = m.groupdict()
            if "reason" in values:
                values["reason"] = usage_error(values["reason"], language)
            try:
                return gettext(language, template).format(**values)
            except (KeyError, IndexError, ValueError):  # a translation that lost a slot
                return message
    return message


_RICH_FORMAT_ERROR = rich_utils.rich_format_error


def _format_error(language: str) -> Any:
    """Typer's error panel, its message said in `language` (`usage_error`)."""

    def show(e: Any) -> None:
        text = usage_error(e.format_message(), language)
        e.format_message = lambda: text
        _RICH_FORMAT_ERROR(e)

    return show


def _walk(cmd: Any) -> list[Any]:
    found = [cmd]
    for sub in getattr(cmd, "commands", {}).values():
        found += _walk(sub)
    return found


def help_texts(root: Any) -> list[str]:
    """Every help text of a command tree (commands' help and short help, options' and
    arguments' help): the msgids `Localized` translates."""
    out: list[str] = []
    for c in _walk(root):
        out += [t for t in (c.help, c.short_help, c.epilog) if t]
        out += [str(p.help) for p in c.params if getattr(p, "help", None)]
    return out


def _translate(root: Any, language: str) -> None:
    for c in _walk(root):
        _localize_chrome(c, language)
        for name in ("help", "short_help", "epilog"):
            if getattr(c, name):
                setattr(c, name, gettext(language, getattr(c, name)))
        for p in c.params:
            if getattr(p, "help", None):
                p.help = gettext(language, str(p.help))
    for name, english in CHROME.items():
        setattr(rich_utils, name, gettext(language, english))
    rich_utils.rich_format_error = _format_error(language)


def _localize_chrome(c: Any, language: str) -> None:
    """Click's "Usage:" and the --help option's help, for this command object only."""
    get_help_option, collect = c.get_help_option, c.collect_usage_pieces

    def help_option(ctx: Any) -> Any:
        opt = get_help_option(ctx)
        if opt is not None:
            opt.help = gettext(language, HELP)
        return opt

    def format_usage(ctx: Any, formatter: Any) -> None:
        formatter.write_usage(ctx.command_path, " ".join(collect(ctx)),
                              prefix=gettext(language, USAGE) + " ")

    c.get_help_option, c.format_usage = help_option, format_usage


class Localized(TyperGroup):
    """The root command: before running, says every help text in the locale's language."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        language = lang()
        if language != DEFAULT:
            _translate(self, language)
        else:  # a process that switched back (tests) gets Typer's English again
            for name, english in CHROME.items():
                setattr(rich_utils, name, english)
            rich_utils.rich_format_error = _RICH_FORMAT_ERROR

        return super().main(*args, **kwargs)
