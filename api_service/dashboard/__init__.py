"""The dashboard: one HTML page at `/` (employers) and one at `/ops` (the operator console), their static
files, no build step, no external assets.

The page is open (it holds no data); its script asks for an employer's API key, keeps it in sessionStorage
and calls the JSON API with `Authorization: Bearer`, so every figure it shows passes the API's own auth.
A Content-Security-Policy lets the page load only its own script, style and API.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from api_service import render
from shared import errors

CSP = "default-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
_SECURITY = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "ops.html": "text/html; charset=utf-8",
    "ops.js": "text/javascript; charset=utf-8",
}


def _load(name: str) -> tuple[bytes, str]:
    content = resources.files(__package__).joinpath("static", name).read_bytes()
    return content, '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


_FILES = {name: _load(name) for name in _TYPES}
ASSETS = frozenset(_TYPES) - {"index.html", "ops.html"}


def _serve(request: Request, name: str) -> Response:
    content, etag = _FILES[name]
    headers = {**_SECURITY, "ETag": etag}
    if render.etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(content, headers=headers, media_type=_TYPES[name])


async def page(request: Request) -> Response:
    """`GET /`: the dashboard's page."""
    return _serve(request, "index.html")


async def console_page(request: Request) -> Response:
    """`GET /ops`: the operator console's page (it asks for an operator's key)."""
    return _serve(request, "ops.html")


async def asset(request: Request) -> Response:
    """`GET /dashboard/{name}`: the page's script or style sheet; any other name is a 404."""
    name = request.path_params["name"]
    if name not in ASSETS:
        raise errors.NotFound("there is no such file")
    return _serve(request, name)
