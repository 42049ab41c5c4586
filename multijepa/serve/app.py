"""The search server: a FastAPI app over one loaded index and the model it was built with.

Routes:
    GET  /                   the search page (plain HTML/CSS/JS from static/, no build step, no CDN)
    GET  /api/health         what is loaded: rows, modalities, checkpoint
    GET  /api/search         text=..., like=ROW&like_modality=M, modality=a,b, k=N
    POST /api/search         the same as a multipart form, plus image / audio file uploads
    GET  /api/item/{row}     one row's metadata and its media URLs
    GET  /media/{row}/{m}    the image or sound file of an indexed row

Search answers are `multijepa search --json`'s ({"query", "results": {modality: [hits]}}), each hit
with a `media` map of URLs added. Files are found by row id only: a path never comes from the
request, so nothing outside the index's own rows can be read. Bad input (an upload that is not an
image, a cut-short WAV, an unknown row or modality, a bad k) is a 4xx with a one-line `detail`.
"""

from __future__ import annotations

import mimetypes
import re
import threading
from pathlib import Path

import torch
from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile as StarletteUpload

from modalities.errors import DataError

from ..modality import get_modality, is_media, registered_modalities
from ..model import MultiJEPA
from ..retrieval.index import EmbeddingIndex
from ..retrieval.search import embed_query, search, target_modalities

STATIC = Path(__file__).parent / "static"
MAX_K = 200
MAX_TEXT = 2000  # characters of a text query


def _bad(detail: str, status: int = 400) -> HTTPException:
    """A 4xx with a one-line reason (decoders' messages name an in-memory buffer: not useful here)."""
    detail = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", detail)
    return HTTPException(status, (detail.splitlines() or ["bad request"])[0][:500])


class SearchService:
    """The index and model, loaded once, behind a lock: torch runs one query at a time."""

    def __init__(self, index: EmbeddingIndex, model: MultiJEPA):
        self.index, self.model = index, model
        self.lock = threading.Lock()
        self.columns = {m: index.info.get("columns", {}).get(m, m) for m in index.modalities}

    def check_row(self, row: int, status: int = 400) -> None:
        if not 0 <= row < len(self.index):
            raise _bad(f"no row {row} (the index has rows 0 to {len(self.index) - 1})", status)

    def media_path(self, row: int, modality: str, meta: dict | None = None) -> Path:
        """The file of an indexed row, or 404: the row must hold a vector of that modality and a
        local file path in the index's metadata (`meta`: the row's record, when already read)."""
        if not is_media(modality):
            media = [m for m in registered_modalities() if is_media(m)]
            raise _bad(f"no media of kind '{modality}' ({', '.join(media)})", 404)
        if self.index.position(row, modality) is None:
            raise _bad(f"row {row} has no indexed {modality}", 404)
        value = (meta if meta is not None else self.index.metadata(row)).get(self.columns.get(modality, modality))
        if not isinstance(value, str) or "://" in value or not Path(value).is_absolute():
            raise _bad(f"row {row}'s {modality} is not a file on this machine (stored in a shard or remote)", 404)
        path = Path(value)
        if not path.is_file():
            raise _bad(f"row {row}'s {modality} file is missing", 404)
        return path

    def item(self, row: int) -> dict:
        self.check_row(row, 404)
        meta = self.index.metadata(row)
        return {**meta, "media": self.media_urls(row, meta), "indexed": self.indexed(row)}

    def indexed(self, row: int) -> list[str]:
        return [m for m in self.index.modalities if self.index.position(row, m) is not None]

    def media_urls(self, row: int, meta: dict) -> dict[str, str]:
        """{modality: URL} of the row's servable files, from its already-read record."""
        urls = {}
        for m in (m for m in self.index.modalities if is_media(m)):
            try:
                self.media_path(row, m, meta)
            except HTTPException:
                continue
            urls[m] = f"/media/{row}/{m}"
        return urls

    def search(self, text: str | None, uploads: dict[str, tuple[str, bytes]], like: int | None,
               like_modality: str | None, modality: str | None, k: int) -> dict:
        """-> {"query": ..., "results": {modality: [hit + media]}}; 4xx on anything wrong with the query."""
        if not 1 <= k <= MAX_K:
            raise _bad(f"k must be between 1 and {MAX_K}, got {k}")
        text = (text or "").strip() or None
        if text is not None and len(text) > MAX_TEXT:
            raise _bad(f"text query longer than {MAX_TEXT} characters")
        query: dict = {"text": text} if text else {}
        query |= {m: f"{name} ({len(data)} bytes)" for m, (name, data) in uploads.items()}
        used = list(query)
        like_vector = None
        if like is not None:
            self.check_row(like)
            m = like_modality or next(iter(self.indexed(like)), "")
            like_vector = self.index.vector(like, m)
            if like_vector is None:
                raise _bad(f"row {like} has no indexed {m or 'vector'} to search with")
            query["like"] = {"row": like, "modality": m}
            used.append(m)
        if not query:
            raise _bad("give a query: text, an image or audio file, or like=ROW")
        for m in used:
            if m not in self.model.modalities:
                raise _bad(f"this model has no {m} encoder (it has: {', '.join(self.model.modalities)})")
        wanted = [m.strip() for m in modality.split(",") if m.strip()] if modality else None
        alone = like is not None and len(query) == 1  # "more like this" alone looks everywhere, its own modality too
        try:
            targets = target_modalities(self.index, [] if alone else used, wanted)
        except ValueError as e:
            raise _bad(str(e)) from None
        with self.lock:
            vectors = [] if like_vector is None else [torch.from_numpy(like_vector)]
            for m, (name, data) in uploads.items():
                try:  # one at a time, so an error names its upload
                    vectors.append(self.model.embed(m, [data])[0])
                except DataError as e:  # "image <123 bytes>: truncated (...)": the upload's name instead
                    raise _bad(f"{m} upload {name!r}: {str(e).split(': ', 1)[-1]}") from None
            results = search(self.index, embed_query(self.model, text=text, vectors=vectors), targets, k)
        for hits in results.values():
            for h in hits:
                h["media"] = self.media_urls(h["row"], h)  # the hit holds the row's record
        return {"query": query, "results": results}


def create_app(index: EmbeddingIndex, model: MultiJEPA, max_upload_mb: float = 20.0) -> FastAPI:
    """The app over a loaded index and its model (`index.check_model(model)` is the caller's)."""
    service = SearchService(index, model)
    limit = int(max_upload_mb * 2**20)
    app = FastAPI(title="MultiJEPA search", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.service = service

    @app.middleware("http")
    async def upload_limit(request: Request, call_next):
        """Refuse big bodies from their Content-Length, before reading them (h11 holds the sender to it)."""
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return JSONResponse({"detail": "a POST needs a Content-Length"}, status_code=411)
            if not length.isdigit() or int(length) > limit:
                return JSONResponse({"detail": f"upload larger than {max_upload_mb:g} MB"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def one_line(request: Request, exc: RequestValidationError):
        e = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in e.get("loc", ())[1:]) or "request"
        return JSONResponse({"detail": f"{where}: {e.get('msg', 'invalid')}"}, status_code=400)

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "rows": len(index), "modalities": index.info["modalities"],
                "query_modalities": model.modalities, "checkpoint": index.info.get("checkpoint"),
                "embed_dim": index.info.get("embed_dim"), "kind": index.config.kind, "columns": service.columns,
                "uploads": {m: ",".join((f"{m}/*", *get_modality(m).suffixes)) for m in model.modalities if is_media(m)}}

    @app.get("/api/search")
    def search_get(text: str | None = None, modality: str | None = None, k: int = 10,
                   like: int | None = None, like_modality: str | None = None) -> dict:
        return service.search(text, {}, like, like_modality, modality, k)

    @app.post("/api/search")
    async def search_post(request: Request, text: str | None = Form(None), modality: str | None = Form(None), k: int = Form(10),
                          like: int | None = Form(None), like_modality: str | None = Form(None)) -> dict:
        """Form fields as the GET's, and an upload per file modality, named by it (image=@x.png)."""
        form = await request.form()
        uploads = {}
        for m in (m for m in registered_modalities() if is_media(m)):
            f = form.get(m)
            if not isinstance(f, StarletteUpload) or not f.filename and not f.size:
                continue  # an empty file input
            data = await f.read()
            if not data:
                raise _bad(f"{m} upload {f.filename!r}: empty (0 bytes)")
            uploads[m] = (f.filename or m, data)
        return service.search(text, uploads, like, like_modality, modality, k)

    @app.get("/api/item/{row}")
    def item(row: int) -> dict:
        return service.item(row)

    @app.get("/media/{row}/{modality}")
    def media(row: int, modality: str) -> FileResponse:
        path = service.media_path(row, modality)
        kind = mimetypes.guess_type(path.name)[0] or ""
        if not kind.startswith(modality + "/"):
            kind = "application/octet-stream"  # never let a browser run what it was not asked to show
        return FileResponse(path, media_type=kind, headers={"X-Content-Type-Options": "nosniff",
                                                            "Cache-Control": "private, max-age=3600"})

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
