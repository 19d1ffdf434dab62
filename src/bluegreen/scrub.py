"""Known secrets never reach the deploy history, the daemon's log or a terminal.

A hook's output is scrubbed line by line before it is kept or logged. The secrets known
are: the values of environment variables whose names say they are secret (the admin token,
``CLINIC_SECRET_KEY``, SMTP and TURN credentials, a smoke password), values the daemon
registers (a generated admin token, the database URL's password), the files directly under
registered directories (the app's generated secrets: ``<app_dir>/secrets/``, read at each
scrub since a hook may create them), passwords inside URLs (``scheme://user:PASSWORD@``)
and the value after ``password:``/``secret=``/``token:`` labels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

MASK = "[redacted]"
MIN_SECRET_LENGTH = 6
"""Shorter values are not masked: they would mask ordinary words of the output."""

SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|(^|_)KEY$", re.IGNORECASE)
URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+(?=@)", re.I)
LABELLED = re.compile(r"(?P<head>\b(?:password|passwd|secret|token)\s*[:=]\s*)[^\s,;]+", re.I)


class Scrubber:
    """Masks every known secret in a text; add to it as secrets become known."""

    def __init__(self, values: Iterable[str] = (), *, dirs: Iterable[Path] = ()) -> None:
        self._values: set[str] = set()
        self._dirs: list[Path] = []
        for value in values:
            self.add(value)
        for d in dirs:
            self.add_dir(d)

    def add(self, value: str | None) -> None:
        """Treat ``value`` as a secret (ignored when too short to be one)."""
        if value is not None and len(value.strip()) >= MIN_SECRET_LENGTH:
            self._values.add(value.strip())

    def add_env(self, env: Mapping[str, str]) -> None:
        """The values of ``env``'s secret-named variables, and passwords of its URLs."""
        for name, value in env.items():
            if SECRET_NAME.search(name):
                self.add(value)
            for match in URL_PASSWORD.finditer(value):
                self.add(value[match.end("head") : match.end()])

    def add_dir(self, directory: Path) -> None:
        """Every file directly under ``directory`` holds a secret (read when scrubbing)."""
        if directory not in self._dirs:
            self._dirs.append(directory)

    def with_env(self, env: Mapping[str, str]) -> Scrubber:
        """A copy that also knows ``env``'s secrets."""
        copy = Scrubber(self._values, dirs=self._dirs)
        copy.add_env(env)
        return copy

    def known(self) -> set[str]:
        """Every secret value known now, the files' current contents included."""
        values = set(self._values)
        for d in self._dirs:
            try:
                files = [p for p in d.iterdir() if p.is_file()]
            except OSError:
                continue
            for path in files:
                try:
                    text = path.read_text(encoding="utf-8").strip()
                except (OSError, UnicodeDecodeError):
                    continue
                if len(text) >= MIN_SECRET_LENGTH:
                    values.add(text)
        return values

    def __call__(self, text: str) -> str:
        # Longest first, so a secret containing another is masked whole.
        for value in sorted(self.known(), key=len, reverse=True):
            text = text.replace(value, MASK)
        text = URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
        return LABELLED.sub(lambda m: m.group("head") + MASK, text)


KNOWN = Scrubber()
"""The secrets this process knows beyond its environment (the daemon registers them)."""


def scrubber_for(env: Mapping[str, str]) -> Scrubber:
    """:data:`KNOWN` plus the secrets of ``env`` (a child's environment)."""
    return KNOWN.with_env(env)
