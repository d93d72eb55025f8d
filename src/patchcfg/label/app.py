"""The labelling app (Starlette): its routes and :func:`create_app`. JSON in and out; every refusal
is a 4xx with a message.

``GET /`` the page; ``GET /api/state``; ``GET /api/queue?strategy=&subset=&n=``;
``GET /api/row/{row}``; ``GET /api/image/{row}?size=thumb|full``;
``GET /api/similar?rows=3,8&n=16`` (more like this: the nearest unlabelled rows, near duplicates
grouped); ``POST /api/label``;
``POST /api/undo``; ``POST /api/classes``; ``POST /api/retrain``; ``POST /api/flush``;
``GET /api/jobs``, ``POST /api/jobs/finetune``, ``DELETE /api/jobs/{id}`` (background finetune jobs);
``GET /api/events?since=N`` (a poll: rows other clients changed, the model's version, messages);
``GET /favicon.ico`` (the page's icon, also ``/static/favicon.svg``).

Security: :mod:`patchcfg.label.guard` checks the Host header and the token before any route runs;
images are addressed by row number only. What the routes share is :class:`~patchcfg.label.service.LabelApp`.
"""

from __future__ import annotations

import html
import json
import mimetypes
import os
import re
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from patchcfg.errors import UserError
from patchcfg.label.errors import RequestError
from patchcfg.label.guard import PAGE_HEADERS, Guard, error_response
from patchcfg.label.service import LabelApp

# The page is ES modules, which a browser runs only when served as JavaScript; some systems' MIME
# tables say text/plain for .js.
mimetypes.add_type("text/javascript", ".js")

STATIC = Path(__file__).resolve().parent / "static"
CLIENT_HEADER = "x-patchcfg-client"
_CLIENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_BODY = 1 << 20


def _client(request: Request) -> str:
    client = request.headers.get(CLIENT_HEADER, "api")
    if not _CLIENT.match(client):
        raise RequestError(f"{CLIENT_HEADER} must be 1 to 64 letters, digits, '-' or '_'")
    return client


async def _body(request: Request) -> dict:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise RequestError(f"request body too large ({len(raw)} bytes; at most {MAX_BODY})", 413)
    try:
        body = json.loads(raw or b"null")
    except ValueError as error:
        raise RequestError(f"the body is not JSON ({error})") from None
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    return body


def _api(handler):
    """Refusals become 4xx JSON, unexpected failures a 500 JSON message (never a traceback page)."""

    async def endpoint(request: Request):
        try:
            return await handler(request)
        except UserError as error:  # RequestError included: the page shows it, the terminal too
            status = getattr(error, "status", 400)
            where = f"{request.method} {request.url.path}"
            request.app.state.label.store.log(f"refused {where} ({status}): {error}")
            return error_response(str(error), status)
        except Exception as error:  # noqa: BLE001 - logged in the terminal; the page gets the message
            state = request.app.state.label
            state.store.note(f"{request.method} {request.url.path} failed: {type(error).__name__}: {error}",
                             level="error")
            return error_response(f"internal error: {type(error).__name__}: {error}", 500)

    endpoint.__name__ = handler.__name__
    return endpoint


def _row_param(store, text: str) -> int:
    if not re.fullmatch(r"\d{1,12}", text):
        raise RequestError(f"images are addressed by row number only (0 to {len(store) - 1}), "
                           f"got '{text[:80]}'")
    return store.check_row(int(text))


async def page(request: Request):
    app: LabelApp = request.app.state.label
    text = (STATIC / "index.html").read_text(encoding="utf-8")
    text = text.replace("{{TOKEN}}", html.escape(request.app.state.token))
    text = text.replace("{{TITLE}}", html.escape(app.store.path.name))
    return HTMLResponse(text, headers=PAGE_HEADERS)


async def favicon(request: Request):
    """For browsers that ask ``/favicon.ico`` whatever the page links (the page links the SVG)."""
    return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon",
                        headers={"Cache-Control": "private, max-age=86400"})


@_api
async def state(request: Request):
    app: LabelApp = request.app.state.label
    return JSONResponse(await run_in_threadpool(app.state))


@_api
async def queue(request: Request):
    app: LabelApp = request.app.state.label
    params = request.query_params
    strategy = params.get("strategy") or app.config["query"]["strategy"]
    subset = params.get("subset") or app.config["query"]["subset"]
    try:
        n = int(params.get("n") or app.settings["grid"] ** 2)
    except ValueError:
        raise RequestError(f"n must be a whole number, got '{params.get('n')}'") from None
    result = await run_in_threadpool(app.queue.next, _client(request), strategy, subset, n)
    return JSONResponse(result)


@_api
async def similar(request: Request):
    """More like this: ``rows`` (row numbers, comma-separated) and ``n`` (groups, default a grid page)."""
    app: LabelApp = request.app.state.label
    params = request.query_params
    try:
        n = int(params.get("n") or app.settings["grid"] ** 2)
    except ValueError:
        raise RequestError(f"n must be a whole number, got '{params.get('n')}'") from None
    client = _client(request)
    rows = app.similar.parse_rows(params.get("rows"))
    return JSONResponse(await run_in_threadpool(app.similar.search, client, rows, n))


@_api
async def row(request: Request):
    app: LabelApp = request.app.state.label
    index = _row_param(app.store, request.path_params["row"])
    with app.store.lock:
        item = app.store.row(index)
    return JSONResponse(app.queue.annotate(item))


@_api
async def image(request: Request):
    app: LabelApp = request.app.state.label
    index = _row_param(app.store, request.path_params["row"])
    size = request.query_params.get("size", "thumb")
    if size not in ("thumb", "full"):
        raise RequestError(f"size must be thumb or full, got '{size}'")
    path = _path_of(app.store, index)
    data, error = await run_in_threadpool(app.renderer.render, path, size)
    headers = {"Cache-Control": "private, max-age=60"}
    if error:
        headers["X-Patchcfg-Image-Error"] = error.encode("ascii", "replace").decode()
    return Response(data, media_type="image/png", headers=headers)


def _path_of(store, index: int) -> str:
    """The image of a row: the table's path, never one from the request."""
    with store.lock:
        path = str(store.table.df.at[index, "filepath"])
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(store.table.root, path))


@_api
async def label(request: Request):
    app: LabelApp = request.app.state.label
    body = await _body(request)
    client = _client(request)
    if ("row" in body) == ("rows" in body):
        raise RequestError('give "row": N or "rows": [N, ...] (row numbers), and "changes"')
    rows = [body["row"]] if "row" in body else body["rows"]
    if not isinstance(rows, list) or not rows:
        raise RequestError('"rows" must be a non-empty list of row numbers')
    if len(rows) > 10000:
        raise RequestError("at most 10000 rows in one request")
    for r in rows:
        app.store.check_row(r)
    app.queue.check(client, rows)
    result = await run_in_threadpool(app.store.label, rows, body.get("changes"), client)
    if result["changed"]:
        app.learner.notify(len(rows))
        if app.jobs is not None:
            await run_in_threadpool(app.jobs.notify, len(rows))
    result["rows"] = app.queue.annotate_all(result["rows"])
    return JSONResponse(result)


@_api
async def undo(request: Request):
    app: LabelApp = request.app.state.label
    result = await run_in_threadpool(app.store.undo, _client(request))
    result["rows"] = app.queue.annotate_all(result["rows"])
    return JSONResponse(result)


@_api
async def classes(request: Request):
    app: LabelApp = request.app.state.label
    body = await _body(request)
    client = _client(request)
    if "add" in body:
        result = await run_in_threadpool(app.store.add_class, body["add"], client)
    elif "rename" in body and "to" in body:
        result = await run_in_threadpool(app.store.rename_class, body["rename"], body["to"], client)
    else:
        raise RequestError('give {"add": "name"} or {"rename": "old", "to": "new"}')
    app.learner.refit_async()  # the last scores know the old classes only
    result["error"] = app.store.error
    return JSONResponse(result)


@_api
async def retrain(request: Request):
    app: LabelApp = request.app.state.label
    if app.learner.snapshot().features is None:
        raise RequestError(f"cannot retrain yet: {app.learner.features_message or 'no features'}", 409)
    result = await run_in_threadpool(app.learner.refit)
    return JSONResponse(result)


def _jobs_of(app: LabelApp):
    if app.jobs is None:
        raise RequestError("background jobs are off in this app", 409)
    return app.jobs


@_api
async def jobs(request: Request):
    app: LabelApp = request.app.state.label
    return JSONResponse({"jobs": _jobs_of(app).state()})


@_api
async def start_job(request: Request):
    app: LabelApp = request.app.state.label
    job = await run_in_threadpool(_jobs_of(app).start, _client(request))
    return JSONResponse({"job": {k: job[k] for k in ("id", "state", "labels", "progress")}}, status_code=202)


@_api
async def cancel_job(request: Request):
    app: LabelApp = request.app.state.label
    job_id = request.path_params["job"]
    if not re.fullmatch(r"[0-9A-Za-z_-]{1,64}", job_id):
        raise RequestError(f"a job id is letters, digits, '-' and '_', got '{job_id[:80]}'")
    job = await run_in_threadpool(_jobs_of(app).cancel, job_id)
    return JSONResponse({"job": {k: job[k] for k in ("id", "state", "progress")}})


@_api
async def flush(request: Request):
    app: LabelApp = request.app.state.label
    written = await run_in_threadpool(app.store.flush)
    return JSONResponse({"written": written, "error": app.store.error, "pending": app.store.pending()},
                        status_code=200 if written else 503)


@_api
async def events(request: Request):
    app: LabelApp = request.app.state.label
    try:
        since = int(request.query_params.get("since", "0"))
    except ValueError:
        raise RequestError("since must be a whole number (the seq of the last event seen)") from None
    changes = app.store.changes_since(since)
    with app.store.lock:
        items = [app.store.row(r) for r in changes["rows"][:500] if r < len(app.store)]
    return JSONResponse({**changes, "rows": app.queue.annotate_all(items),
                         "model": app.learner.state(), "error": app.store.error,
                         "messages": app.store.messages[-8:], "ordered_by": app.queue.ordered_by,
                         "jobs": app.jobs.state() if app.jobs is not None else []})


def create_app(label_app: LabelApp, token: str, allowed_hosts: set[str] | None, port: int | None = None,
               on_ready=None):
    """The ASGI app. ``allowed_hosts`` None accepts any Host header (only for a wildcard bind);
    ``on_ready()`` is called once the app has started, inside the server's signal handling."""

    @asynccontextmanager
    async def lifespan(app):
        label_app.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            label_app.stop()

    routes = [
        Route("/", page),
        Route("/favicon.ico", favicon),
        Route("/api/state", state),
        Route("/api/queue", queue),
        Route("/api/similar", similar),
        Route("/api/row/{row:path}", row),
        Route("/api/image/{row:path}", image),
        Route("/api/label", label, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/api/classes", classes, methods=["POST"]),
        Route("/api/retrain", retrain, methods=["POST"]),
        Route("/api/flush", flush, methods=["POST"]),
        Route("/api/jobs", jobs),
        Route("/api/jobs/finetune", start_job, methods=["POST"]),
        Route("/api/jobs/{job:path}", cancel_job, methods=["DELETE"]),
        Route("/api/events", events),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.label = label_app
    app.state.token = token
    cookie = f"patchcfg_token_{port}" if port else "patchcfg_token"
    app.add_middleware(Guard, token=token, allowed_hosts=allowed_hosts, cookie=cookie)

    async def not_found(request, exc):
        status = getattr(exc, "status_code", 404)
        what = "no such route" if status == 404 else "method not allowed"
        return error_response(f"{what}: {request.method} {request.url.path}", status)

    app.add_exception_handler(404, not_found)
    app.add_exception_handler(405, not_found)
    return app
