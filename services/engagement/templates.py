"""Message templates: Jinja2 in its sandbox, so a template reaches nothing outside the data it
is given (no attributes starting with `_`, no calls that change state, no imports, no files).
A template that does not parse or does not render is an error naming its part and line.
Pure: no I/O."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from services.common.errors import RuleBroken

PARTS = ("subject", "text", "html")
_text = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_html = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True)


class TemplateProblem(RuleBroken):
    """A template that does not parse or render; `part` and `line` say where."""

    def __init__(self, locale: str, part: str, line: int | None, message: str) -> None:
        where = f"{locale} {part}" + (f", line {line}" if line else "")
        super().__init__(f"template error in {where}: {message}", locale=locale, part=part, line=line)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def _environment(part: str) -> SandboxedEnvironment:
    return _html if part == "html" else _text


def check(templates: dict[str, dict[str, str]]) -> None:
    """Every locale's parts parse (a campaign is refused with the line otherwise)."""
    for locale, parts in templates.items():
        for part in PARTS:
            try:
                _environment(part).parse(parts[part], name=f"{locale}.{part}")
            except TemplateSyntaxError as exc:
                raise TemplateProblem(locale, part, exc.lineno, exc.message or str(exc)) from None


def _failed_line(name: str) -> int | None:
    """The template line a render error happened on: Jinja rewrites the traceback so the
    template's frames carry its file name and line."""
    tb = sys.exc_info()[2]
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


@lru_cache(maxsize=256)
def _compiled(part: str, name: str, source: str) -> Template:
    """Compiled once per campaign's text, not once per recipient (compiling costs far more than
    rendering); a text that does not parse raises each time and is not kept."""
    template = _environment(part).from_string(source)
    template.filename = name
    return template


def render(templates: dict[str, dict[str, str]], locale: str, data: dict[str, Any]) -> Rendered:
    """The parts in `locale` (the first locale the campaign has, if not that one)."""
    chosen = locale if locale in templates else next(iter(templates))
    out: dict[str, str] = {}
    for part in PARTS:
        name = f"{chosen}.{part}"
        try:
            out[part] = _compiled(part, name, templates[chosen][part]).render(data)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(chosen, part, exc.lineno, exc.message or str(exc)) from None
        except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
            raise TemplateProblem(chosen, part, _failed_line(name), str(exc)) from None
    return Rendered(out["subject"].strip().replace("\n", " "), out["text"], out["html"])
