"""Values no field may carry, refused at the edge as a 422 naming the field.

PostgreSQL text cannot hold NUL, UTF-8 cannot encode a lone surrogate (`\\ud800`), and JSON cannot
hold NaN or infinities: each would otherwise fail deep in a driver or an encoder as a 500. Bodies
are checked by the `Strict` base model; query, path and form fields by `check_request_input`,
which every API and admin router declares as a dependency.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def unstorable(value: Any) -> str | None:
    """Why `value` (a string, a number, or JSON made of them) cannot be stored, or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return "must not contain NUL characters"
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "must be valid Unicode (no lone surrogates)"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number (no NaN or Infinity)"
    if isinstance(value, dict):
        return next((p for k, v in value.items() if (p := unstorable(k) or unstorable(v))), None)
    if isinstance(value, list | tuple):
        if set(map(type, value)) <= {int, bool}:  # a million recipient ids: C speed
            return None
        return next((p for item in value if (p := unstorable(item))), None)
    return None


def refuse(location: str, field: str, message: str) -> RequestValidationError:
    """The error FastAPI itself raises for a bad field, so both answer in one shape."""
    return RequestValidationError(
        [{"type": "value_error", "loc": (location, field), "msg": message, "input": None}]
    )


async def check_request_input(request: Request) -> None:
    """422 naming the first path, query or form field that holds an unstorable value."""
    fields: list[tuple[str, str, Any]] = [
        ("path", name, value) for name, value in request.path_params.items()
    ]
    fields += [("query", name, value) for name, value in request.query_params.multi_items()]
    if request.headers.get("content-type", "").startswith(FORM_TYPES):
        form = await request.form()
        fields += [("body", name, value) for name, value in form.multi_items()]
    for location, name, value in fields:
        problem = unstorable(name) or unstorable(value)
        if problem is not None:
            raise refuse(location, name, problem)


checked_input = Depends(check_request_input)
"""For `APIRouter(dependencies=[checked_input])`: every route of the router is checked."""
