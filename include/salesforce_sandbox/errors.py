"""Salesforce-shaped errors raised anywhere in the sandbox and rendered by the HTTP layer."""

from __future__ import annotations


class SalesforceError(Exception):
    """An error answered as Salesforce does: a JSON array of ``{message, errorCode, fields}``.

    ``status`` is the HTTP status the REST API answers with. Inside sObject Collections the
    same error is rendered as ``{statusCode, message, fields}`` in a per-record result.
    """

    def __init__(self, error_code: str, message: str, *, status: int = 400, fields: list[str] | None = None):
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.status = status
        self.fields = list(fields or [])

    def to_rest(self) -> list[dict]:
        body: dict = {"message": self.message, "errorCode": self.error_code}
        if self.fields:
            body["fields"] = self.fields
        return [body]

    def to_collection_error(self) -> dict:
        return {"statusCode": self.error_code, "message": self.message, "fields": self.fields}

    def __repr__(self) -> str:
        return f"SalesforceError({self.error_code!r}, {self.message!r}, status={self.status})"


def not_found(message: str = "The requested resource does not exist") -> SalesforceError:
    return SalesforceError("NOT_FOUND", message, status=404)
