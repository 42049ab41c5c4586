"""`multijepa serve`: the search page's command."""

from __future__ import annotations

import argparse

from ..cli_args import DEVICE, INDEX, UsageError, need
from ..retrieval.commands import load_index


def add_serve(sub: argparse._SubParsersAction) -> None:
    srv = sub.add_parser(
        "serve",
        parents=[INDEX, DEVICE],
        help="a search page and JSON API over an index, in your browser",
        description="Load an index and its model once, then serve a search page at http://HOST:PORT/ (type a "
        "caption, drop in an image or a sound, see the images and hear the sounds; 'more like this' on any "
        "result) and a JSON API: GET /api/search?text=...&modality=image&k=10, POST /api/search (multipart: "
        "text, image, audio, modality, k, like), GET /api/item/ROW, GET /api/health. Answers are those of "
        "`search --json`. Only the files of the index's own rows are served, by row id.",
    )
    srv.set_defaults(func=_cmd_serve)
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1: this machine only]")
    srv.add_argument("--port", type=int, default=8000, help="[8000]")
    srv.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body (uploads) accepted [20]")


COMMANDS = {"serve": add_serve}


def _cmd_serve(args: argparse.Namespace) -> None:
    need(args.index, "the --index folder", "index.json")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise UsageError("--max-upload-mb must be positive")
    import uvicorn

    from .app import create_app

    index, model = load_index(args, say=lambda line: print(line, flush=True))
    app = create_app(index, model, args.max_upload_mb)
    counts = ", ".join(f"{n} {m}" for m, n in index.info["modalities"].items())
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}: other machines can reach this server", flush=True)
    print(f"serving {len(index)} rows ({counts}) at http://{args.host}:{args.port}/  (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
