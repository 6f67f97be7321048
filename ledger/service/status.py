"""HTTP statuses for results and errors, and the error body every refusal carries.

A refusal's status follows its DOMAIN.md code: `invalid_json` 400, `validation_error` 422,
`forbidden` 403, `not_found` 404, `conflict` 409, `clock_behind` 409 (the store
holds a later event than the clock's time). The other rule codes are 409 when the
store's current state refuses the command (it may pass later, or never will because
something already happened) and 400 when the command itself does not fit the campaign's
terms (sending it again unchanged can never pass).
"""

from __future__ import annotations

from typing import Any

from ledger.errors import LedgerError

RETRY_AFTER = "2"  # seconds a client is asked to wait after a 503

STATUS: dict[str, int] = {
    "invalid_json": 400,
    "validation_error": 422,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    # the state of the store refuses it
    "already_exists": 409,
    "already_registered": 409,
    "registration_closed": 409,
    "invalid_transition": 409,
    "campaign_ended": 409,
    "campaign_not_ended": 409,
    "session_overlap": 409,
    "too_many_sessions": 409,
    "session_in_past": 409,
    "clock_behind": 409,
    # the command does not fit the campaign's terms
    "category_not_allowed": 400,
    "level_not_offered": 400,
    "duplicates_not_allowed": 400,
    "override_required": 400,
    "session_outside_campaign": 400,
}


def status_of(result: dict[str, Any]) -> int:
    """200 for an accepted (or replayed) command; its error code's status otherwise."""
    if result.get("ok"):
        return 200
    return STATUS.get(str(result["error"]["code"]), 400)


def error_body(code: str, message: str, details: Any = None,
               command_id: str | None = None) -> dict[str, Any]:
    """DOMAIN.md's refusal shape, also used for the service's own errors (401, 413, 503)."""
    return {"ok": False, "command_id": command_id,
            "error": {"code": code, "message": message,
                      "details": details if details is not None else {}}}


class ServiceError(Exception):
    """An HTTP-level refusal: no token (401), body too large (413), store unreachable or a
    read model behind (503), or a domain error raised while reading."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    @classmethod
    def of(cls, error: LedgerError) -> ServiceError:
        body = error.as_error()
        return cls(STATUS.get(body["code"], 400), body["code"], body["message"], body["details"])

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)
