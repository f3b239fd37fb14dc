"""PII and secret detectors: each finds its shapes (and redacts them) and leaves look-alikes alone."""

from __future__ import annotations

import pytest

from tuneforge.data.pii import find_pii, redact

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFkYSJ9."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n-----END RSA PRIVATE KEY-----"

# (kind, text, text after redaction)
FOUND = [
    ("email", "Write to josé.müller@example.de today.", "Write to [EMAIL] today."),
    ("email", "联系 用户名@例子.广告 吧", "联系 [EMAIL] 吧"),
    ("email", "Mail ada@example.org.", "Mail [EMAIL]."),
    ("ssn", "My SSN is 078-05-1120, keep it.", "My SSN is [SSN], keep it."),
    ("ssn", "social security number: 219099999", "social security number: [SSN]"),
    ("ssn", "ssn 123 45 6789", "ssn [SSN]"),
    ("ip", "Login from 203.0.113.42 failed.", "Login from [IP] failed."),
    ("ip", "Upgrade to 1.2.3.4 now", "Upgrade to [IP] now"),  # unmarked dotted quad: an address (see pii.py)
    ("ip", "host 2001:db8::8a2e:370:7334.", "host [IP]."),
    ("ip", "at 2001:0db8:85a3:0000:0000:8a2e:0370:7334 yesterday", "at [IP] yesterday"),
    ("iban", "IBAN de89 3704 0044 0532 0130 00 please", "IBAN [IBAN] please"),
    ("iban", "pay gb82west12345698765432", "pay [IBAN]"),
    ("iban", "to BE68 5390 0754 7034 from me", "to [IBAN] from me"),
    ("card", "Card 4111-1111-1111-1111.", "Card [CARD]."),
    ("phone", "call +44 20 7946 0958.", "call [PHONE]."),
    ("secret", "key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z done", "key [SECRET] done"),
    ("secret", "OPENAI_API_KEY=sk-T3BlbkFJ4xQ9mN2pL7vR8sK1dW5yZ0aBcDeFgHiJkLmNoP", "OPENAI_API_KEY=[SECRET]"),
    ("secret", "aws AKIAIOSFODNN7EXAMPLE here", "aws [SECRET] here"),
    ("secret", "token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 ok", "token [SECRET] ok"),
    ("secret", "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "slack [SECRET]"),
    ("secret", f"Authorization: Bearer {JWT}", "Authorization: Bearer [SECRET]"),
    ("secret", f"my key:\n{PEM}\nthanks", "my key:\n[SECRET]\nthanks"),
    ("secret", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA", "[SECRET]"),  # cut off
]

NOT_FOUND = [
    "On 2024-03-15 14:30:00 (15.03.2024, 3/15/24, 2024-03-15T14:30:00Z) the order #123456789 shipped.",
    "It costs $1,299.99 or €12.50, about 1299 dollars; 8,000,000,000 people; pi is 3.14159265358979.",
    "Took 16-24mg on 2012-12-24; pain went from 10 to 6 at 12:30:45, ratio 3:2.",
    "Installed version 1.2.3.4, v1.2.3.4, build 10.0.0.1 and 1.2.3.4.5; Windows 10.0.19041.1.",
    "In C++ use std::vector, a::b::c or x[1::2]; MAC 00:1A:2B:3C:4D:5E.",
    "Invalid numbers: 000-12-3456, 666-12-3456, 900-12-3456, 123-00-4567, 123-45-0000; 999.1.1.1.",
    "A task-force, a sk-learn-compatible-estimator-wrapper and sk-8 are not keys; nor is AKIA or ghp_short or xox.",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----",
    "Follow @handle or write to user@localhost; eyJ.abc.def is not a token.",
    "ab12 this that with more words in lower case, de89 3704 0044 0532 0130 01 (bad checksum).",
    "Order 4111 1111 1111 1112 failed Luhn.",
]


@pytest.mark.parametrize(("kind", "text", "redacted"), FOUND, ids=[f"{k}: {t[:30]}" for k, t, _ in FOUND])
def test_each_detector_finds_and_redacts_its_kind(kind, text, redacted):
    assert [k for k, _, _ in find_pii(text)] == [kind]
    assert redact(text) == (redacted, [kind])


@pytest.mark.parametrize("text", NOT_FOUND, ids=[t[:40] for t in NOT_FOUND])
def test_ordinary_numbers_dates_times_versions_and_prices_are_not_pii(text):
    assert find_pii(text) == []


def test_kinds_in_one_text_do_not_overlap():
    text = "From 203.0.113.42 ada@example.org sent sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z and 078-05-1120."
    assert redact(text) == ("From [IP] [EMAIL] sent [SECRET] and [SSN].", ["ip", "email", "secret", "ssn"])
