"""What the history never stores in clear: values of secret-looking env names, and the
password of a `scheme://user:password@host` URL wherever it appears (env values, the
command line, the task's name and error), or the token of a `scheme://TOKEN@host` URL.

A name is split into parts (on anything but letters and digits, and between a lower-case
letter and an upper-case one), and a whole part decides: KEY is a secret, KEYBOARD is not.
Digits that end a part (PASSWORD2) and the S of a plural (PASSWORDS) do not hide it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

REDACTED = "<redacted>"

# A part that is exactly one of these makes the name secret. SESSION and SIGNATURE are
# left out on purpose: XDG_SESSION_ID and AWS_SIGNATURE_VERSION are not secrets, and
# AWS_SESSION_TOKEN is caught by TOKEN anyway.
SECRET_PARTS = frozenset(
    {
        "PASS",
        "PASSWORD",
        "PASSWD",
        "PASSPHRASE",
        "PGPASS",
        "SECRET",
        "SECRETS",
        "TOKEN",
        "TOKENS",
        "KEY",
        "KEYS",
        "APIKEY",
        "PAT",
        "DSN",
        "JWT",
        "CREDENTIAL",
        "CREDENTIALS",
        "CREDS",
        "AUTH",
        "COOKIE",
        "COOKIES",
        "PRIVATE",
        "SALT",
        "OTP",
    }
)
# A part that ends with one of these is secret too (PGPASSWORD, HFTOKEN, MYAPIKEY): no
# ordinary word ends so. KEY, PASS and AUTH must stand alone: MONKEY, BYPASS, OAUTH.
SECRET_ENDINGS = (
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "SECRET",
    "TOKEN",
    "APIKEY",
    "ACCESSKEY",
    "SECRETKEY",
    "PRIVATEKEY",
)
# PWD alone is the working directory (and OLDPWD the previous one); as a part of a
# longer name (MYSQL_PWD, DB_PWD) it is a password.
PWD = "PWD"
# A name whose last part is one of these holds where a secret is kept (SSH_AUTH_SOCK,
# TOKEN_FILE), not the secret: a rerun needs it, and it tells nobody anything.
LOCATION_PARTS = frozenset({"FILE", "PATH", "DIR", "SOCK"})

_PARTS = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
# scheme://user:password@ with an empty or any user; the password may hold "@" or ":"
# (a greedy match ends at the last "@" before the host), never a space, a quote or
# the "/", "?" or "#" that end the authority.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@'\"]*:)(?P<password>[^\s/?#'\"]+)@"
)
# scheme://TOKEN@ with no colon: a user name, unless it looks like a token (GitHub's
# https://ghp_...@github.com): 20 or more of letters, digits, "_" and "-", with at least
# one letter and one digit. "git@", "deploy@" and "first.last@" are names, and kept.
_URL_TOKEN = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://)"
    r"(?=[A-Za-z0-9_\-]*[0-9])(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{20,}@"
)
_DIGITS = "0123456789"


def is_secret_name(name: str) -> bool:
    """Whether the value of env variable `name` is kept out of the history."""
    parts = [part.upper().rstrip(_DIGITS) for part in _PARTS.split(name)]
    parts = [part for part in parts if part]
    if not parts or _is(parts[-1], lambda part: part in LOCATION_PARTS):
        return False
    if len(parts) > 1 and PWD in parts:
        return True
    return any(_is(part, _secret) for part in parts)


def _secret(part: str) -> bool:
    return part in SECRET_PARTS or part.endswith(SECRET_ENDINGS)


def _is(part: str, test: Callable[[str], bool]) -> bool:
    """Whether `part`, or its singular, passes `test`."""
    return test(part) or (part.endswith("S") and test(part[:-1]))


def redact_text(text: str) -> str:
    """`text` with the password of every URL in it, and a token in place of a URL's
    user name, replaced by REDACTED."""
    if "://" not in text:  # the common case, without running the patterns
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}@", text)
    return _URL_TOKEN.sub(lambda m: f"{m['head']}{REDACTED}@", text)


def redact(env: Mapping[str, str]) -> dict[str, str]:
    """Env overrides as stored: the values of secret-looking names replaced, and the
    passwords of URLs in the other values."""
    return {k: (REDACTED if is_secret_name(k) else redact_text(v)) for k, v in env.items()}


def was_redacted(text: str) -> bool:
    """Whether a stored value (or command) lost something to redaction, as far as the
    text tells: for rows of schema version 1, which did not record it."""
    return REDACTED in text
