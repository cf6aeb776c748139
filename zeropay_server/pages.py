"""The payer's pages, in the payer's language.

Two HTML templates (``static/pay.html``, ``static/enroll.html``) and one table of strings per
language (``i18n/<language>.json``, the same keys in each). A page is rendered once per
language: each ``{{key}}`` replaced by its string (HTML-escaped), and the whole table given
to the page's script as a JSON data block (data, never run: the pages' CSP allows no inline
script). The language is the one the payer chose on the page (``?lang=``), else the best
of their browser's ``Accept-Language`` that the service speaks, else English.
"""

from __future__ import annotations

import functools
import html
import json
import re
from importlib import resources

#: The languages the pages speak, the first the default.
LANGUAGES = ("en", "de")
DEFAULT_LANGUAGE = LANGUAGES[0]
#: The page templates, by route.
TEMPLATES = {"/enroll": "enroll.html", "/pay/{session_id}": "pay.html"}
_PLACEHOLDER = re.compile(r"\{\{([a-z_A-Z]+)\}\}")
_RANGE = re.compile(r"^([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*$")


@functools.cache
def strings(language: str) -> dict[str, str]:
    """The language's table of strings."""
    table = resources.files("zeropay_server") / "i18n" / f"{language}.json"
    loaded: dict[str, str] = json.loads(table.read_text(encoding="utf-8"))
    return loaded


def choose_language(accept_language: str | None, asked: str | None = None) -> str:
    """The language to answer in: ``asked`` if the service speaks it, else the first of
    ``Accept-Language`` by quality (RFC 9110, section 12.5.4; ``de-CH`` is served ``de``)
    that it speaks, else the default."""
    if asked in LANGUAGES:
        return asked
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "").split(",")[:32]):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        match = _RANGE.match(tag.strip())
        if match and quality > 0:
            ranked.append((-quality, position, match.group(1).lower()))
    for _, _, language in sorted(ranked):
        if language in LANGUAGES:
            return language
    return DEFAULT_LANGUAGE


def data_block(table: dict[str, str]) -> str:
    """The table as JSON safe inside ``<script type="application/json">``."""
    text = json.dumps(table, ensure_ascii=False, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@functools.cache
def render(template: str, language: str, *, demo: bool) -> bytes:
    """The page ``template`` in ``language``; ``demo``: the embedded development server (the
    enroll page then offers a user id field, marked as a demo)."""
    table = strings(language)
    source = (resources.files("zeropay_server") / "static" / template).read_text(encoding="utf-8")
    values = {
        **{key: html.escape(value) for key, value in table.items()},
        "lang": language,
        "demo": "true" if demo else "false",
        "strings": data_block(table),
        "languages": "".join(
            f'<li><a data-lang="{code}" href="?lang={code}" lang="{code}"'
            + (' aria-current="true"' if code == language else "")
            + f">{html.escape(strings(code)['language_name'])}</a></li>"
            for code in LANGUAGES
        ),
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], source).encode()
