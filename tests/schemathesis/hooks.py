"""Schemathesis hooks of the contract run (see docs/testing.md).

A new key's `expires_at` must lie in the future, which JSON Schema cannot
say: the document declares a date-time and says "in the future" in words.
So that schema-valid cases stay valid, a generated `expires_at` in the past
is moved into the future, keeping its spelling (only the year changes, by
whole 400-year cycles, so that 29 February stays a date). Nothing else is
touched.

A run's `callback_url` must also name a public address, which JSON Schema
cannot say either (the document says it in words): a generated URL of the
right length is replaced by one the server accepts and that never resolves
(`.invalid`, RFC 6761), so that no callback leaves the machine. Longer or
non-string values (negative cases) are left alone; the URL check itself is
fuzzed by a property test (`runs::callbacks`). A workspace's security
webhook `url` is checked the same way and gets the same treatment.
"""

from datetime import datetime, timezone

import schemathesis

KEY_CREATION = ("POST", "/v1/admin/groups/{id}/api-keys")
RUN_STARTS = {("POST", "/v1/workflows/{id}/runs"), ("POST", "/v1/workflows/{id}/runs/sync")}
# The documented bound of `callback_url`, in characters.
CALLBACK_URL_MAX = 2048
ACCEPTED_CALLBACK_URL = "https://callbacks.invalid/run-ended"
SECURITY_WEBHOOK = ("PUT", "/v1/admin/groups/{id}/security-webhook")
ACCEPTED_WEBHOOK_URL = "https://callbacks.invalid/security-events"


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
    if (case.method.upper(), case.path) in RUN_STARTS and isinstance(case.body, dict):
        url = case.body.get("callback_url")
        if isinstance(url, str) and 0 < len(url) <= CALLBACK_URL_MAX:
            case.body["callback_url"] = ACCEPTED_CALLBACK_URL
    if (case.method.upper(), case.path) == SECURITY_WEBHOOK and isinstance(case.body, dict):
        url = case.body.get("url")
        if isinstance(url, str) and 0 < len(url) <= CALLBACK_URL_MAX:
            case.body["url"] = ACCEPTED_WEBHOOK_URL
    return case
