"""Schemathesis hooks of the contract run (see docs/testing.md).

A new key's `expires_at` must lie in the future, which JSON Schema cannot
say: the document declares a date-time and says "in the future" in words.
So that schema-valid cases stay valid, a generated `expires_at` in the past
is moved into the future, keeping its spelling (only the year changes, by
whole 400-year cycles, so that 29 February stays a date). Nothing else is
touched.
"""

from datetime import datetime, timezone

import schemathesis

KEY_CREATION = ("POST", "/v1/admin/groups/{id}/api-keys")


def future(text):
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return text  # not a date-time: a negative case, leave it
    if at.tzinfo is None:
        return text
    now = datetime.now(timezone.utc)
    year = at.year
    while year <= now.year + 1:
        year += 400
    if year > 9999 or not text[:4].isdigit() or at > now:
        return text
    return f"{year:04d}{text[4:]}"


@schemathesis.hook
def map_case(context, case):
    if (case.method.upper(), case.path) == KEY_CREATION and isinstance(case.body, dict):
        expires_at = case.body.get("expires_at")
        if isinstance(expires_at, str):
            case.body["expires_at"] = future(expires_at)
    return case
