"""Schemathesis over the OpenAPI document: no request, however odd, gets a 5xx answer."""

from __future__ import annotations

import asyncio
import json
import math
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st

from prasso_messaging.app import create_app
from prasso_messaging.db.migrate import upgrade
from prasso_messaging.runtime import Runtime
from tests.conftest import make_settings, make_team

FUZZ_DIR = Path(tempfile.mkdtemp(prefix="prasso-fuzz-"))
SETTINGS = make_settings(f"sqlite:///{FUZZ_DIR / 'fuzz.db'}", FUZZ_DIR)
# The app connects lazily, so building it at import time opens nothing.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(SETTINGS, runtime=Runtime.build(SETTINGS, pool_size=2))
)


@pytest.fixture(scope="module")
def token() -> str:
    upgrade(SETTINGS.DATABASE_URL)

    async def seed() -> str:
        runtime = Runtime.build(SETTINGS, pool_size=1)
        try:
            return (await make_team(runtime)).token
        finally:
            await runtime.close()

    return asyncio.run(seed())


@schema.parametrize()
@hypothesis.settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)
def test_no_server_errors(case: schemathesis.Case, token: str) -> None:
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:500]}"


# --- every field of every operation, sent the values that once answered 500 ---------------------

Field = tuple[str, tuple[str | int, ...], str]
"""(where: path | query | body, the field's path in it, kind: string | number)."""

SAMPLE = {
    "type": "sms",
    "body": "hi",
    "name": "Ann",
    "channel": "sms",
    "address": "+14155550123",
    "phone": "+14155550123",
    "consent": True,
    "message_id": 1,
    "endpoint": "https://push.example.com/x",
}
BIG = "x" * 65_536
URL_BIG = "x" * 60_000  # httpx refuses URLs over 64 KiB
BAD_NUMBERS = [math.nan, math.inf, -math.inf, 2**63]
bad_strings = st.one_of(
    st.builds(lambda a, b: f"{a}\x00{b}", st.text(max_size=8), st.text(max_size=8)),
    st.builds(
        lambda a, s: a + s,
        st.text(max_size=8),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    ),
)


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return _resolve(spec, spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]])
    options = [o for o in node.get("anyOf", []) if o.get("type") != "null"]
    return _resolve(spec, options[0]) if options else node


def _leaves(
    spec: dict[str, Any], node: dict[str, Any], at: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    node = _resolve(spec, node)
    kind = node.get("type")
    if kind == "string":
        yield at, "string"
    elif kind in ("integer", "number"):
        yield at, "number"
    elif kind == "array":
        yield from _leaves(spec, node.get("items", {}), (*at, 0))
    elif kind == "object":
        for name, child in node.get("properties", {}).items():
            yield from _leaves(spec, child, (*at, name))


def _example(spec: dict[str, Any], node: dict[str, Any], name: str = "") -> Any:
    node = _resolve(spec, node)
    if name in SAMPLE:
        return SAMPLE[name]
    if "enum" in node:
        return node["enum"][0]
    if node.get("type") == "object":
        return {
            key: _example(spec, child, key)
            for key, child in node.get("properties", {}).items()
            if key in node.get("required", [])
        }
    return {"integer": 1, "number": 1, "boolean": True, "array": []}.get(node.get("type"), "x")


def _put(document: Any, at: tuple[str | int, ...], value: Any) -> Any:
    if not at:
        return value
    head, rest = at[0], at[1:]
    if isinstance(head, int):
        return [_put(None, rest, value)]
    inner = document.get(head) if isinstance(document, dict) else None
    return {**(document or {}), head: _put(inner, rest, value)}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    fields: list[Field]
    body: dict[str, Any] | None

    async def request(self, client: httpx.AsyncClient, token: str, field: Field, value: Any) -> int:
        where, at, _ = field
        path_values = {name: "1" for name in re.findall(r"{(\w+)}", self.path)}
        query: dict[str, str] = {}
        body = self.body
        if where == "body":
            body = _put(body, at, value)
        elif where == "path":
            path_values[str(at[0])] = str(value)
        else:
            query[str(at[0])] = str(value)
        url = self.path.format(**{k: quote(v, safe="") for k, v in path_values.items()})
        if query:
            url += "?" + urlencode(query)
        response = await client.request(
            self.method,
            url,
            content=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        return response.status_code


def _operations() -> list[Operation]:
    spec = create_app(SETTINGS).openapi()
    found = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            fields: list[Field] = []
            for parameter in op.get("parameters", []):
                if parameter["in"] in ("path", "query"):
                    for _, kind in _leaves(spec, parameter["schema"], ()):
                        fields.append((parameter["in"], (parameter["name"],), kind))
            schema = op.get("requestBody", {}).get("content", {}).get("application/json")
            body = _example(spec, schema["schema"]) if schema else None
            if schema:
                fields += [("body", at, kind) for at, kind in _leaves(spec, schema["schema"], ())]
            if fields:
                found.append(Operation(method.upper(), path, fields, body))
    return found


OPERATIONS = _operations()


def _refused(status: int) -> bool:
    return 400 <= status < 500


async def _probe_every_field(token: str, bad: str, number: float) -> None:
    runtime = Runtime.build(SETTINGS, pool_size=1)
    transport = httpx.ASGITransport(
        app=create_app(SETTINGS, runtime=runtime), raise_app_exceptions=False
    )
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://fuzz") as client:
            for operation in OPERATIONS:
                for field in operation.fields:
                    await _probe(client, token, operation, field, bad, number)
    finally:
        await runtime.close()


async def _probe(
    client: httpx.AsyncClient,
    token: str,
    operation: Operation,
    field: Field,
    bad: str,
    number: float,
) -> None:
    where, at, kind = field
    if kind == "string":
        value = bad
        if where != "body":
            value = bad.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        tries = [
            (value, "\x00" in value or where == "body"),
            (BIG if where == "body" else URL_BIG, False),
        ]
    else:
        tries = [(number, True)]
    for value, must_refuse in tries:
        status = await operation.request(client, token, field, value)
        shown = f"{operation.method} {operation.path} {where} {at} = {str(value)[:20]!r}"
        assert status < 500, f"{shown}: {status}"
        assert _refused(status) or not must_refuse, f"{shown}: {status}"


@hypothesis.given(bad=bad_strings, number=st.sampled_from(BAD_NUMBERS))
@hypothesis.settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.generate],
)
def test_every_field_refuses_nul_surrogates_nan_and_huge_values(
    token: str, bad: str, number: float
) -> None:
    """NUL, a lone surrogate, NaN, infinities or 2**63 in any field: a 4xx, never a 5xx; a 64 KiB
    string: never a 5xx. (A surrogate cannot travel in a URL: query and path get its UTF-8
    bytes, which decode to U+FFFD, a valid character.)"""
    asyncio.run(_probe_every_field(token, bad, number))
