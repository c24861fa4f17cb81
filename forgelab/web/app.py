"""The Starlette application: pages, the JSON API and the event stream (see docs/web.md)."""
from __future__ import annotations

import asyncio
import json
import re
import time
from importlib import resources
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..core.policy import PolicyError, load_policy, shipped_policies
from .attacks import MatrixJob
from .index import EventIndex
from .message import MAX_SHOWN, message_detail
from .message_api import message_routes
from .search import QueryError, Searcher, parse_query
from ..core.loopback import is_loopback as is_loopback_client
from .security import SecurityHeaders, allowed_hosts
from .streams import Streams, sse

WEB_DIR = Path(str(resources.files(__name__.rpartition(".")[0])))
MAX_BODY = 4096          # a policy switch or a run request is a few bytes of JSON
HEARTBEAT = 15.0         # seconds between keep-alive comments on an idle event stream


class JSON(JSONResponse):
    """JSON whose odd values (bytes, sets in verdict details) become strings instead of errors."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=False, default=str, separators=(",", ":")).encode("utf-8")


def _clock(ts) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else ""


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(WEB_DIR / "templates")),
                             autoescape=True)
    env.filters["clock"] = _clock
    return Jinja2Templates(env=env)


class BadRequest(Exception):
    """A request the API refuses with 400 and this one-line message."""


def _whole_number(text: str | None, name: str, default: int | None, low: int, high: int) -> int | None:
    """A query parameter that must be a whole number in [low, high]; absent -> ``default``."""
    if text is None:
        return default
    # Digits only: int() would also take "+5", " 5" and "1_000".
    if not re.fullmatch(r"[0-9]{1,18}", text) or not low <= int(text) <= high:
        wanted = f"from {low} to {high}" if high < 10**18 else f"{low} or more"
        raise BadRequest(f"'{name}' must be a whole number {wanted}, not {text[:40]!r}")
    return int(text)


def _limit(request: Request) -> int:
    return _whole_number(request.query_params.get("limit"), "limit", 100, 1, 1000)


def _bad_request(handler):
    """Turn a BadRequest raised while reading the request into a 400 answer."""
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return JSON({"error": str(exc)}, status_code=400)
    return guarded


def create_app(lab_app, index: EventIndex, job: MatrixJob | None = None, bind_host: str = "127.0.0.1",
               streams: Streams | None = None) -> Starlette:
    """The web view of a running ``Forgelab``; ``index`` must already be subscribed to its bus."""
    templates = _templates()
    job = job or MatrixJob()
    streams = Streams() if streams is None else streams  # (an empty Streams is falsy)
    index.listen(streams)  # for the life of the web view: Streams never waits on a client
    searcher = Searcher(lab_app.store)

    def policy_info() -> dict:
        policy = lab_app.context.rules.policy
        return {"name": policy.name, "description": policy.description, "toml": policy.as_toml(),
                "shipped": shipped_policies()}

    def page(request: Request, name: str, status_code: int = 200, **context) -> Response:
        policy = lab_app.context.rules.policy
        context.setdefault("last_seq", index.last_seq)
        context.update(request=request, page=name.removesuffix(".html"), policy_name=policy.name)
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    def not_found(request: Request, what: str) -> Response:
        return page(request, "missing.html", status_code=404, what=what)

    # -- pages ---------------------------------------------------------------
    async def home(request: Request) -> Response:
        since = index.last_seq  # read first: the stream resumes from here, so nothing falls in between
        return page(request, "index.html", last_seq=since, sessions=index.sessions(100), messages=index.messages(100))

    async def session_page(request: Request) -> Response:
        since = index.last_seq
        session = index.session(request.path_params["session_id"])
        if session is None:
            return not_found(request, "session")
        return page(request, "session.html", last_seq=since, session=session)

    async def message_page(request: Request) -> Response:
        entry = index.message(request.path_params["message_id"])
        if entry is None:
            return not_found(request, "message")
        detail = await asyncio.to_thread(message_detail, entry, lab_app.store)
        source = detail.get("source")
        truncated = source is not None and len(source) > MAX_SHOWN
        return page(request, "message.html", message=detail, truncated=truncated,
                    source_shown=source[:MAX_SHOWN] if source else None)

    async def attacks_page(request: Request) -> Response:
        return page(request, "attacks.html", job=job.status(), shipped=shipped_policies())

    async def policy_page(request: Request) -> Response:
        return page(request, "policy.html", policy=policy_info(), shipped_info=_shipped_info())

    async def lab_page(request: Request) -> Response:
        return page(request, "lab.html", world=lab_world(lab_app, is_loopback_client(_client(request))))

    # -- API -----------------------------------------------------------------
    @_bad_request
    async def api_messages(request: Request) -> Response:
        limit, query = _limit(request), request.query_params.get("q", "").strip()
        if not query:
            return JSON({"messages": index.messages(limit)})
        try:
            terms = parse_query(query)
        except QueryError as exc:
            raise BadRequest(f"bad query: {exc}") from None
        found = await asyncio.to_thread(searcher.search, index.searchable(), terms, limit)
        return JSON({"messages": found, "query": query})

    async def api_message(request: Request) -> Response:
        entry = index.message(request.path_params["message_id"])
        if entry is None:
            return JSON({"error": "no such message"}, status_code=404)
        return JSON(await asyncio.to_thread(message_detail, entry, lab_app.store))

    async def api_message_raw(request: Request) -> Response:
        entry = index.message(request.path_params["message_id"])
        if entry is None:
            return PlainTextResponse("no such message", status_code=404)
        detail = await asyncio.to_thread(message_detail, entry, lab_app.store)
        if detail["source"] is None:
            return PlainTextResponse(detail["source_note"] or "no source", status_code=404)
        return PlainTextResponse(detail["source"], headers={"content-disposition": "inline"})

    @_bad_request
    async def api_sessions(request: Request) -> Response:
        return JSON({"sessions": index.sessions(_limit(request))})

    async def api_session(request: Request) -> Response:
        session = index.session(request.path_params["session_id"])
        if session is None:
            return JSON({"error": "no such session"}, status_code=404)
        return JSON(session)

    @_bad_request
    async def api_events(request: Request) -> Response:
        # A reconnecting EventSource says where it stopped; that beats the page's first ?since=.
        if request.headers.get("last-event-id"):
            since = _whole_number(request.headers["last-event-id"], "Last-Event-ID", None, 0, 10**18)
        else:
            since = _whole_number(request.query_params.get("since"), "since", None, 0, 10**18)
        only_session = request.query_params.get("session")
        opened = streams.open(index, since, only_session)
        if opened is None:
            return JSON({"error": f"too many event streams open (the limit is {streams.max_streams}); "
                                  "close one or try again later"}, status_code=503, headers={"retry-after": "10"})
        client, backlog = opened

        async def stream():
            try:
                yield b"retry: 2000\n\n" + b"".join(sse(record) for record in backlog)
                while True:
                    chunk = await client.next(HEARTBEAT)
                    if chunk is None:
                        return
                    yield chunk
            finally:
                streams.close(client)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def api_policy(request: Request) -> Response:
        return JSON(policy_info())

    async def api_policy_switch(request: Request) -> Response:
        body, refusal = await _guarded_json(request)
        if refusal:
            return refusal
        name = body.get("policy") if isinstance(body, dict) else None
        if not isinstance(name, str) or name not in shipped_policies():
            return JSON({"error": f"'policy' must be one of: {', '.join(shipped_policies())}"}, status_code=400)
        try:
            policy = await asyncio.to_thread(load_policy, name)
            await asyncio.to_thread(lab_app.context.set_policy, policy)
        except PolicyError as exc:
            return JSON({"error": str(exc)}, status_code=400)
        return JSON({"policy": policy.name, "description": policy.description})

    async def api_lab(request: Request) -> Response:
        return JSON(lab_world(lab_app, is_loopback_client(_client(request))))

    async def api_attacks(request: Request) -> Response:
        return JSON(job.status())

    async def api_attacks_run(request: Request) -> Response:
        body, refusal = await _guarded_json(request)
        if refusal:
            return refusal
        try:
            mode, policies, only = _run_request(body)
        except BadRequest as exc:
            return JSON({"error": str(exc)}, status_code=400)
        if mode == "send":
            started = job.start_send(_reachable(lab_app.smtp.address), only or None)
        else:
            started = job.start(policies or None, only or None)
        if not started:
            return JSON({"error": "a run is already going", **job.status()}, status_code=409)
        return JSON(job.status(), status_code=202)

    routes = [
        Route("/", home),
        Route("/sessions/{session_id}", session_page),
        Route("/messages/{message_id}", message_page),
        Route("/attacks", attacks_page),
        Route("/policy", policy_page),
        Route("/lab", lab_page),
        Route("/api/messages", api_messages),
        Route("/api/messages/{message_id}", api_message, methods=["GET"]),
        Route("/api/messages/{message_id}/raw", api_message_raw),
        *message_routes(lab_app, index, JSON, _guarded_json),
        Route("/api/sessions", api_sessions),
        Route("/api/sessions/{session_id}", api_session),
        Route("/api/events", api_events),
        Route("/api/policy", api_policy, methods=["GET"]),
        Route("/api/policy", api_policy_switch, methods=["POST"]),
        Route("/api/lab", api_lab),
        Route("/api/attacks", api_attacks, methods=["GET"]),
        Route("/api/attacks", api_attacks_run, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(WEB_DIR / "static")), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders), Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(bind_host))]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.index, app.state.job, app.state.streams = index, job, streams
    return app


def _run_request(body) -> tuple[str, list[str] | None, list[str] | None]:
    """``(mode, policies, only)`` of a POST /api/attacks body, every name checked before a run starts."""
    from ..attacks.catalogue import all_entries

    if not isinstance(body, dict):
        raise BadRequest("send a JSON object: {\"mode\", \"policies\", \"only\"}")
    mode, policies, only = body.get("mode", "matrix"), body.get("policies"), body.get("only")
    if mode not in ("matrix", "send"):
        raise BadRequest("'mode' is matrix (throw-away servers) or send (to this server)")
    for key, value in (("policies", policies), ("only", only)):
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise BadRequest(f"'{key}' must be a list of names")
    if mode == "send" and policies:
        raise BadRequest("'policies' is for mode matrix: send plays the catalogue under this server's policy")
    shipped = shipped_policies()
    unknown = [p for p in policies or () if p not in shipped]
    if unknown:
        raise BadRequest(f"unknown policy {_names(unknown)}; shipped: {', '.join(shipped)}")
    known = {a.id for a in all_entries()}
    unknown = [i for i in only or () if i not in known]
    if unknown:
        raise BadRequest(f"unknown attack id {_names(unknown)}; see `forgelab attacks list`")
    return mode, policies or None, only or None


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n[:60]) for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _reachable(address: tuple) -> tuple[str, int]:
    """Where a client on this machine reaches a server listening on ``address``."""
    host, port = address[:2]
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host), port


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _guarded_json(request: Request) -> tuple[object, Response | None]:
    """The body of a state-changing request, or the refusal: loopback clients only, JSON only
    (a cross-site form cannot send application/json), same origin when the browser says one."""
    if not is_loopback_client(_client(request)):
        return None, JSON({"error": "only clients on this machine (loopback) may do this"}, status_code=403)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return None, JSON({"error": "send JSON (Content-Type: application/json)"}, status_code=415)
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
        return None, JSON({"error": "cross-origin request refused"}, status_code=403)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None, JSON({"error": "request body too large"}, status_code=413)
    try:
        return json.loads(body or b"{}"), None
    except ValueError:
        return None, JSON({"error": "the body is not JSON"}, status_code=400)


def _shipped_info() -> list[dict]:
    out = []
    for name in shipped_policies():
        try:
            out.append({"name": name, "description": load_policy(name).description})
        except PolicyError as exc:
            out.append({"name": name, "description": f"(does not load: {exc})"})
    return out


def lab_world(lab_app, show_passwords: bool) -> dict:
    """Domains, loopback addresses, local users and lists, and where the servers listen."""
    from ..lab import world

    directory = lab_app.lab.directory
    users = [{"name": u.name, "full_name": u.full_name, "address": directory.address(u),
              "password": u.password if show_passwords else None} for u in directory.users.values()]
    lists = [{"name": name, "address": f"{name}@{directory.primary_domain}", "members": list(members)}
             for name, members in directory.lists.items()]
    domains = [{"name": d.name, "role": d.role, "addresses": list(d.addresses), "mail_host": d.mail_host,
                "spf": d.spf, "dmarc": d.dmarc, "selectors": list(d.selectors), "lesson": d.lesson}
               for d in world.DOMAINS]

    def where(server) -> str | None:
        try:
            host, port = server.address[:2]
            return f"{host}:{port}"
        except Exception:
            return None

    return {"hostname": lab_app.lab.hostname, "local_domains": list(directory.domains), "users": users,
            "lists": lists, "domains": domains, "attacker_ip": world.ATTACKER_IP,
            "spoofed_ptr_ip": world.SPOOFED_PTR_IP, "smtp": where(lab_app.smtp), "pop3": where(lab_app.pop3),
            "passwords_shown": show_passwords}
