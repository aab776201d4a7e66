"""A readable plain-text rendering of an HTML e-mail body.

Used when a job gives only ``html``: the text/plain alternative is what
text-only clients, screen readers and spam filters see. It keeps what a reader
needs from a transactional e-mail — paragraphs, line breaks, list items, and
the target of every link (a password-reset URL must survive) — and drops
markup, scripts, styles and the document head.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Elements that start and end a block of text.
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt", "fieldset",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "tfoot", "thead", "tr", "ul",
    }
)  # fmt: skip
# Elements whose content is never shown.
_HIDDEN = frozenset({"head", "script", "style", "template", "title", "noscript"})
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_LINK_SCHEMES = ("http://", "https://", "mailto:")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.pre = 0
        self.links: list[tuple[str | None, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt and not self.hidden:
                self.parts.append(alt)
        elif tag == "a":
            self.links.append((dict(attrs).get("href"), len(self.parts)))
        if tag in _BLOCKS:
            self.parts.append("\n\n")
        if tag == "pre":
            self.pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            label = "".join(self.parts[start:]).strip()
            if href and href.lower().startswith(_LINK_SCHEMES):
                target = href.removeprefix("mailto:") if href.startswith("mailto:") else href
                if target != label:
                    self.parts.append(f" ({target})" if label else target)
        if tag in _BLOCKS:
            self.parts.append("\n\n")
        if tag == "pre":
            self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if self.pre:
            # Preformatted text keeps its spaces and line breaks (marked so the
            # whitespace collapsing below leaves them alone).
            self.parts.append(data.replace(" ", "\u00a0").replace("\n", "\u2028"))
        else:
            self.parts.append(_SPACES.sub(" ", data.replace("\n", " ")))


def html_to_text(html: str) -> str:
    """Plain text for ``html``: paragraphs separated by a blank line, links as ``label (url)``."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(parser.parts).split("\n"))
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
    return text.replace("\u00a0", " ").replace("\u2028", "\n") + "\n"
