"""`redact()`: mask secrets in text that came from outside (upstream error bodies, exception text).

An upstream may echo what we sent it: Electricity Maps' 401 body can quote the `auth-token`, a
proxy's error page the `Authorization` header, a URL the `?token=` or `?key=` parameter, a Redis
error the password in its URL. Such text reaches /health (readable with any client key) and the
shared cache (readable by every replica), so every upstream message is passed through here where
it enters them (see docs/edge.md for the call sites). Masking is by shape, not by knowing the
secret: `key=value` / `key: value` pairs whose key names a credential, bearer/basic
credentials, userinfo in URLs, JWTs, and long opaque tokens. It over-masks on purpose: a masked
request id in a health message costs nothing, a leaked token costs a rotation.
"""

from __future__ import annotations

import re
from typing import Final

MASK: Final = "***"

_CREDENTIAL_FIELDS = (
    r"(?:auth[-_]?token|access[-_]?token|refresh[-_]?token|id[-_]?token|token|api[-_]?key|apikey|"
    r"x-api-key|secret|client[-_]?secret|password|passwd|pwd|authorization|auth|key|signature|sig|"
    r"session|cookie|credentials?)"
)
_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # scheme://user:password@host → scheme://user:***@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), rf"\1{MASK}@"),
    # Authorization: Bearer xyz / Basic xyz
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}"), rf"\1 {MASK}"),
    # "auth-token": "xyz", api_key=xyz, password: xyz, ?token=xyz&...
    (
        re.compile(
            rf"(?i)([\"']?\b{_CREDENTIAL_FIELDS}[\"']?\s*[:=]\s*[\"']?)(?!(?:bearer|basic)\b|\*\*\*)([^\s\"'&,;)\]}}]+)"
        ),
        rf"\1{MASK}",
    ),
    # JWTs
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\b"), MASK),
    # Long opaque tokens (hex / base64url runs of 24+ with a digit and a letter)
    (re.compile(r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{24,}\b"), MASK),
)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with credentials masked: every known `secrets` value, then anything shaped like one."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_tree(value: object, secrets: tuple[str, ...] = ()) -> object:
    """`redact` applied to every string in a JSON-like tree (dicts, lists, tuples)."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: redact_tree(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(v, secrets) for v in value]
    return value
