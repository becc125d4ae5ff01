"""The certificate's PDF page layout over fpdf2 (fonts, paragraphs, label/value rows).

Apart from `copyledger.service.certificate` so that fpdf2 and fontTools (about a quarter of the
server's import time) load with the first PDF rather than when the server starts (D54). The
font paths are read from `certificate` when a document is made, so they stay settable there.
"""

from __future__ import annotations

from typing import cast

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from copyledger.ledger.components import FONTS, installing, missing
from copyledger.service import certificate
from copyledger.service.i18n import DEFAULT

__all__ = ["Pdf"]


class Pdf(FPDF):
    """A4 with DejaVu when Debian's fonts-dejavu-core is there (any Unicode a registrant may
    type), else the PDF core fonts with non-Latin-1 characters replaced by '?'. In Chinese the
    text font is WenQuanYi Micro Hei (CJK_FONT; it has Latin too, and no bold face, so
    headings are set larger instead). fpdf2 embeds only the glyphs used (a subset)."""

    def __init__(self, lang: str = DEFAULT) -> None:
        super().__init__(format="A4")
        self.set_margins(18, 16, 18)
        self.set_auto_page_break(True, margin=16)
        cjk = certificate.CJK_FONT
        sans, bold, mono = (certificate.FONT_DIR / n for n in (
            "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf"))
        if installing() and not all(p.is_file() for p in (sans, bold, mono, cjk)):
            # `make run` is still installing them: a moment's wait, not missing glyphs (D45)
            raise missing(FONTS)
        self.unicode = all(p.is_file() for p in (sans, bold, mono))
        if self.unicode:
            self.add_font("dv", "", str(sans))
            self.add_font("dv", "B", str(bold))
            self.add_font("dvmono", "", str(mono))
        self.sans, self.mono = ("dv", "dvmono") if self.unicode else ("helvetica", "courier")
        if self.unicode and lang == "zh-CN" and cjk.is_file():
            self.add_font("cjk", "", str(cjk))
            self.add_font("cjk", "B", str(cjk))
            self.sans = "cjk"
            self.set_fallback_fonts(["cjk"], exact_match=False)  # Chinese in a monospaced line

    def cover(self, text: str) -> list[str]:
        """Make every character of text printable if a font here can: fallback fonts are
        loaded only when needed (a CJK font costs a second to parse). Returns the characters
        still without a glyph (printed blank or as '?'): the certificate says so, rather than
        silently showing a different title."""
        chars = {c for c in text if not c.isspace()}
        if not self.unicode:
            return sorted(c for c in chars if ord(c) > 0xFF)
        missing = self._uncovered(chars)
        names: list[str] = []
        for path in certificate.FALLBACK_FONTS:
            if not missing:
                break
            if path.is_file() and not (path == certificate.CJK_FONT and "cjk" in self.fonts):
                names.append(f"fb{len(names)}")
                self.add_font(names[-1], "", str(path))
                missing = self._uncovered(missing)
        if names:
            known = [n for n in ("cjk",) if n in self.fonts]
            self.set_fallback_fonts(known + names, exact_match=False)
        return sorted(missing)

    def _uncovered(self, chars: set[str]) -> set[str]:
        maps = [f.cmap for f in self.fonts.values() if hasattr(f, "cmap")]
        return {c for c in chars if not any(ord(c) in m for m in maps)}

    def text_(self, s: str) -> str:
        return s if self.unicode else s.encode("latin-1", "replace").decode("latin-1")

    def para(self, s: str, size: float = 9, style: str = "", mono: bool = False) -> None:
        self.set_font(self.mono if mono else self.sans, "" if mono else style, size)
        self.multi_cell(0, size * 0.5, self.text_(s), align="L", new_x=XPos.LMARGIN,
                        new_y=YPos.NEXT)

    def heading(self, s: str) -> None:
        self.ln(2.5)
        self.para(s, 11.5, "B")
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.ln(1.2)

    def rows(self, rows: list[tuple[str, str]], mono: frozenset[str] = frozenset(),
             width: float = 0) -> None:
        value_w = (width or self.epw) - 42
        for k, v in rows:
            label, value = self.text_(k), self.text_(v)
            value_font = (self.mono, 8.5) if k in mono else (self.sans, 9.0)
            self.set_font(self.sans, "B", 9)
            h = cast(float, self.multi_cell(40, 4.6, label, dry_run=True, output="HEIGHT"))
            self.set_font(value_font[0], "", value_font[1])
            h = max(h, cast(float, self.multi_cell(value_w, 4.6, value, dry_run=True,
                                                   output="HEIGHT")))
            if self.get_y() + h > self.page_break_trigger:
                self.add_page()
            y = self.get_y()
            self.set_font(self.sans, "B", 9)
            self.multi_cell(40, 4.6, label, align="L")
            self.set_xy(self.l_margin + 42, y)
            self.set_font(value_font[0], "", value_font[1])
            self.multi_cell(value_w, 4.6, value, align="L")
            self.set_xy(self.l_margin, y + h)
