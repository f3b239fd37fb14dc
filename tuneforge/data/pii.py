"""Personal data and secret detection and redaction.

Kinds: e-mail addresses (any script in the local part and domain), US social security numbers, IBANs
(upper or lower case), card numbers, IPv4/IPv6 addresses, phone numbers, and secrets (API keys such
as ``sk-...``, ``AKIA...``, ``ghp_...``, ``xox...``, JWTs, private-key blocks).

Regular expressions find candidates; a check then keeps false hits on ordinary text down:

- cards must pass the Luhn check, IBANs the ISO 13616 mod-97 check and, where the country is known,
  its IBAN length (so "ab12 this that with" in lower-case prose is not an IBAN);
- SSNs need the dashed/spaced 3-2-4 shape with a valid area/group/serial (not 000, 666, 9xx, 00,
  0000), or a 9-digit number right after "SSN" / "social security number";
- phone numbers need 10-15 digits (or a leading + and 9); a date followed by a time
  ("2024-03-15 14:30") and the digits of a decimal number are not phone numbers;
- IPv6 addresses must parse (``ipaddress``) and have at least three non-empty groups, so times
  ("12:30:45"), ratios and C++ names ("std::vector", "a::b") are left alone;
- API keys need their vendor prefix and a body of the vendor's shape (an ``sk-`` key mixes digits and
  upper and lower case, so "sk-learn-compatible" is not one); a public key block is not a secret.

Version strings: a dotted quad whose parts are all 0-255 ("1.2.3.4") is reported as an IPv4 address
unless it is marked as a version ("v1.2.3.4", "version 1.2.3.4", "build/release/rev 1.2.3.4") or is
part of a longer dotted run ("1.2.3.4.5"). Redacting a version number by mistake costs little; leaking
an address does not. Prices, plain numbers, dates and times are never flagged.

A heuristic: it finds the common shapes, not every way to write personal data.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from typing import Any

Span = tuple[int, int]

EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.(?:[^\W\d_]{2,}|xn--[a-z0-9-]+)(?![\w-])")
SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-])")
SSN_LABELLED = re.compile(r"\b(?:SSN|social security(?: number| no\.?)?)\s*(?:#|no\.?|number)?\s*[:=]?\s*(\d{9})\b", re.I)
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", re.I)
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = re.compile(rf"(?<![\w.]){OCTET}(?:\.{OCTET}){{3}}(?!\w|\.\d)")
VERSION_BEFORE = re.compile(r"(?:\bversion|\bver\.?|\brelease|\bbuild|\brev\.?)\s*$", re.I)
IPV6 = re.compile(r"(?<![\w:])(?=[0-9A-Fa-f]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}(?![\w:])")
# A phone number is not part of a decimal number ("3.14159265358979") and does not end inside a time
# ("2024-03-15 14:30" holds ten digits, but is a date and a time).
PHONE = re.compile(r"(?<![\w+])(?<!\d[.,])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?!\w|:\d|[.,]\d)")
SECRETS = [
    # Private-key blocks (PEM/OpenSSH/PGP), to the END line or, if cut off, to the end of the text.
    re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY"
               r"(?: BLOCK)?-----|.*\Z)", re.S),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"),  # JWT: base64url {"..}.{"..}.sig
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{22,}"),  # GitHub tokens
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe keys
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),  # Google API key
]
# OpenAI/Anthropic-style keys: sk-<body>, sk-proj-<body>, sk-ant-api03-<body>; checked by _key_body_ok.
SK_KEY = re.compile(r"(?<![\w-])sk-(?:(?:proj|svcacct|admin|ant-api\d\d|ant-admin\d\d)-)?([A-Za-z0-9_-]{20,})")

PLACEHOLDERS = {"secret": "[SECRET]", "email": "[EMAIL]", "ssn": "[SSN]", "iban": "[IBAN]", "card": "[CARD]",
                "ip": "[IP]", "phone": "[PHONE]"}
NAMES = {"secret": "a secret (API key, token or private key)", "email": "an e-mail address",
         "ssn": "a US social security number", "iban": "an IBAN", "card": "a card number", "ip": "an IP address",
         "phone": "a phone number"}

# ISO 13616 IBAN lengths by country (SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    s = text.replace(" ", "").upper()
    country = s[:2]
    if country in IBAN_LENGTHS:
        if len(s) != IBAN_LENGTHS[country]:
            return False
    elif not (text[:2].isupper() and 15 <= len(s) <= 34):  # unknown country: only the upper-case shape
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _phone_ok(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    return 10 <= digits <= 15 or (text.startswith("+") and 9 <= digits <= 15)


def _key_body_ok(body: str) -> bool:
    """A generated key mixes digits with upper and lower case; prose and package names do not."""
    return any(c.isdigit() for c in body) and any(c.isupper() for c in body) and any(c.islower() for c in body)


def _secrets(text: str) -> Iterator[Span]:
    for pattern in SECRETS:
        for m in pattern.finditer(text):
            yield m.span()
    for m in SK_KEY.finditer(text):
        if _key_body_ok(m.group(1)):
            yield m.span()


def _emails(text: str) -> Iterator[Span]:
    for m in EMAIL.finditer(text):
        yield m.span()


def _ssns(text: str) -> Iterator[Span]:
    for m in SSN.finditer(text):
        yield m.span()
    for m in SSN_LABELLED.finditer(text):
        yield m.span(1)


def _ibans(text: str) -> Iterator[Span]:
    for m in IBAN.finditer(text):
        # The pattern may run on into a following 4-letter word ("... 7034 from"): drop trailing groups.
        candidate = m.group()
        while len(candidate.replace(" ", "")) >= 15:
            if _iban_ok(candidate):
                yield m.start(), m.start() + len(candidate)
                break
            candidate = candidate[: max(candidate.rfind(" "), len(candidate) - 4)].rstrip()


def _cards(text: str) -> Iterator[Span]:
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and _luhn(digits):
            yield m.span()


def _ips(text: str) -> Iterator[Span]:
    for m in IPV4.finditer(text):
        if not VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start()):
            yield m.span()
    for m in IPV6.finditer(text):
        try:
            ipaddress.IPv6Address(m.group())
        except ValueError:
            continue
        if sum(1 for g in m.group().split(":") if g) >= 3:
            yield m.span()


def _phones(text: str) -> Iterator[Span]:
    for m in PHONE.finditer(text):
        if _phone_ok(m.group()):
            yield m.span()


# In priority order: where matches overlap the earlier kind wins (a key holding digits is a secret,
# not a phone number; an IP address is not a phone number).
DETECTORS: list[tuple[str, Callable[[str], Iterator[Span]]]] = [
    ("secret", _secrets), ("email", _emails), ("ssn", _ssns), ("iban", _ibans), ("card", _cards), ("ip", _ips),
    ("phone", _phones),
]


def find_pii(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of every match, earlier kinds winning where matches overlap."""
    found: list[tuple[str, int, int]] = []
    for kind, detect in DETECTORS:
        for start, end in detect(text):
            if not any(start < e and s < end for _, s, e in found):
                found.append((kind, start, end))
    return sorted(found, key=lambda x: x[1])


def redact(text: str) -> tuple[str, list[str]]:
    """The text with every match replaced by its placeholder, and the kinds replaced."""
    matches = find_pii(text)
    for kind, start, end in reversed(matches):
        text = text[:start] + PLACEHOLDERS[kind] + text[end:]
    return text, [k for k, _, _ in matches]


def clip(text: str, n: int) -> str:
    """``text[:n]``, extended to the end of a match that the cut would split.

    A quoted snippet then holds whole matches only, so redaction still recognises them (a card number
    cut after 14 digits fails the Luhn check and would be left in the clear).
    """
    cut = n
    for _, start, end in find_pii(text):
        if start < cut < end:
            cut = end
    return text[:cut]


def redact_strings(value: Any) -> Any:
    """A JSON-like value with every string (and dict key) redacted: for reports and manifests."""
    if isinstance(value, str):
        return redact(value)[0]
    if isinstance(value, dict):
        return {redact_strings(k): redact_strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_strings(v) for v in value]
    return value
