"""Personal data detection and redaction: e-mail addresses, phone numbers, card numbers, IBANs.

Regular expressions find candidates; card numbers must pass the Luhn check and IBANs the ISO 13616
mod-97 check, so order numbers and dates are not flagged. Phone numbers need 10-15 digits (or a
leading + and 9), which keeps doses like "16-24mg" and years out. A heuristic: it finds the common
shapes, not every way to write personal data.
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?!\w)")

PLACEHOLDERS = {"email": "[EMAIL]", "iban": "[IBAN]", "card": "[CARD]", "phone": "[PHONE]"}


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _phone_ok(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    return 10 <= digits <= 15 or (text.startswith("+") and 9 <= digits <= 15)


def find_pii(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of every match, earlier kinds winning where matches overlap."""
    found: list[tuple[str, int, int]] = []
    taken: list[tuple[int, int]] = []

    def add(kind: str, m: re.Match[str]) -> None:
        if any(m.start() < e and s < m.end() for s, e in taken):
            return
        found.append((kind, m.start(), m.end()))
        taken.append((m.start(), m.end()))

    for m in EMAIL.finditer(text):
        add("email", m)
    for m in IBAN.finditer(text):
        if _iban_ok(m.group()):
            add("iban", m)
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and _luhn(digits):
            add("card", m)
    for m in PHONE.finditer(text):
        if _phone_ok(m.group()):
            add("phone", m)
    return sorted(found, key=lambda x: x[1])


def redact(text: str) -> tuple[str, list[str]]:
    """The text with every match replaced by its placeholder, and the kinds replaced."""
    matches = find_pii(text)
    for kind, start, end in reversed(matches):
        text = text[:start] + PLACEHOLDERS[kind] + text[end:]
    return text, [k for k, _, _ in matches]
