"""The labelling app's guard: no route runs before the Host header and the token are checked.

Every request needs the token (``?token=`` once, then an HttpOnly SameSite=Strict cookie); every
request that changes something also carries it in the ``X-Patchcfg-Token`` header; the Host header
must name the address the app is bound to (DNS rebinding). The page itself is served with
:data:`PAGE_HEADERS`: it runs only its own script and cannot be framed by another site.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse

TOKEN_HEADER = "x-patchcfg-token"
# The page runs only its own script, loads nothing from elsewhere and cannot be framed by another site.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def error_response(message: str, status: int) -> JSONResponse:
    """A refusal as the app answers every one: ``{"error": message}`` with its status."""
    return JSONResponse({"error": message}, status_code=status)


class Guard:
    """ASGI middleware: the Host header and the token, before any route runs."""

    def __init__(self, app, token: str, allowed_hosts: set[str] | None, cookie: str):
        self.app, self.token, self.allowed_hosts, self.cookie = app, token, allowed_hosts, cookie

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        host = request.headers.get("host", "")
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            hosts = ", ".join(sorted(self.allowed_hosts))
            response = error_response(f"this app answers only at {hosts}, not at Host "
                              f"'{host}' (a page of another site cannot reach it)", 421)
            return await response(scope, receive, send)
        given = request.query_params.get("token") or request.headers.get(TOKEN_HEADER) \
            or request.cookies.get(self.cookie) or ""
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            message = ("missing or wrong token: open the address `patchcfg label` printed "
                       "(http://HOST:PORT/?token=...)")
            return await error_response(message, 401)(scope, receive, send)
        if request.method not in ("GET", "HEAD"):
            header = request.headers.get(TOKEN_HEADER, "")
            if not hmac.compare_digest(header.encode(), self.token.encode()):
                response = error_response(f"every change needs the {TOKEN_HEADER} header", 403)
                return await response(scope, receive, send)
        if request.method == "GET" and scope["path"] == "/" and request.query_params.get("token"):
            # Trade the token in the address for a cookie, and drop it from the address bar.
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="strict")
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)
