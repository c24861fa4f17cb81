"""The API that acts on one stored message: its MIME parts, its .eml, delete and release (docs/web.md)."""
from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .actions import delete_message, release_message
from .message import load_source
from .parts import list_parts, part_download, safe_filename


def message_routes(lab_app, index, JSON, guarded_json) -> list[Route]:
    """The routes; ``JSON`` is the app's JSON response, ``guarded_json`` its check of a
    state-changing request (loopback, JSON, same origin), the one ``POST /api/policy`` uses."""

    async def stored(request: Request) -> tuple[dict | None, bytes | None]:
        """The index entry named in the path and the bytes of its first stored copy (None, None: unknown)."""
        entry = index.message(request.path_params["message_id"])
        if entry is None:
            return None, None
        raw, _ = await asyncio.to_thread(load_source, lab_app.store, entry.get("locations") or [])
        return entry, raw

    async def api_message_parts(request: Request) -> Response:
        entry, raw = await stored(request)
        if raw is None:
            return JSON({"error": "no such message" if entry is None else "not stored"}, status_code=404)
        return JSON({"id": entry["id"], "parts": await asyncio.to_thread(list_parts, raw)})

    async def api_message_part(request: Request) -> Response:
        entry, raw = await stored(request)
        found = None if raw is None else await asyncio.to_thread(part_download, raw, request.path_params["index"])
        if found is None:
            return JSON({"error": "no such message" if entry is None else "no such part"}, status_code=404)
        data, content_type, filename = found
        return Response(data, media_type=content_type, headers={
            "content-disposition": f'attachment; filename="{filename}"', "x-content-type-options": "nosniff"})

    async def api_message_eml(request: Request) -> Response:
        entry, raw = await stored(request)
        if raw is None:
            return JSON({"error": "no such message" if entry is None else "not stored"}, status_code=404)
        return Response(raw, media_type="message/rfc822", headers={
            "content-disposition": f'attachment; filename="{safe_filename(entry["id"], 0)}.eml"'})

    async def message_action(request: Request, act) -> Response:
        _, refusal = await guarded_json(request)
        if refusal:
            return refusal
        entry = index.message(request.path_params["message_id"])
        if entry is None:
            return JSON({"error": "no such message"}, status_code=404)
        return await asyncio.to_thread(act, lab_app.store, lab_app.bus, entry["id"], entry.get("locations") or [])

    async def api_message_delete(request: Request) -> Response:
        def act(*args):
            removed = delete_message(*args)
            if not removed:
                return JSON({"error": "no stored copy is left"}, status_code=404)
            return JSON({"id": args[2], "deleted": removed})
        return await message_action(request, act)

    async def api_message_release(request: Request) -> Response:
        def act(*args):
            moved = release_message(*args)
            if moved is None:
                return JSON({"error": "no quarantined copy of this message is stored"}, status_code=409)
            return JSON({"id": args[2], "released": moved})
        return await message_action(request, act)

    return [
        Route("/api/messages/{message_id}", api_message_delete, methods=["DELETE"]),
        Route("/api/messages/{message_id}/eml", api_message_eml),
        Route("/api/messages/{message_id}/release", api_message_release, methods=["POST"]),
        Route("/api/messages/{message_id}/parts", api_message_parts),
        Route("/api/messages/{message_id}/parts/{index:int}", api_message_part),
    ]
