"""Embed and search from Python: index a manifest with a pretraining run's encoders, search it with
a caption, and compare embeddings directly.

    python examples/embed_and_search.py --checkpoint runs/demo --data data/demo/test.jsonl \
        --out runs/demo_index --text "a big red circle in the middle"
"""

from __future__ import annotations

import argparse

from multijepa import MultiJEPA
from multijepa.retrieval.index import build_index, index_config
from multijepa.retrieval.search import embed_query, search


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="pretraining run folder")
    p.add_argument("--data", required=True, help="manifest to index (image, text and/or audio columns)")
    p.add_argument("--out", required=True, help="index folder to write (a killed build resumes)")
    p.add_argument("--text", default="a big red circle in the middle", help="the query caption")
    p.add_argument("--top-k", type=int, default=5)
    args = p.parse_args(argv)

    model = MultiJEPA.from_pretrained(args.checkpoint)
    # the same index `multijepa index` builds: exact inner product by default (index_config(["kind=hnsw"]) ...)
    index = build_index(model, args.data, args.out, index_config(), checkpoint=args.checkpoint, progress=False)
    print(f"indexed {len(index)} rows: {index.info['modalities']}")

    query = embed_query(model, text=args.text)  # (embed_dim,), L2-normalised
    targets = [m for m in index.modalities if m != "text"]
    results = search(index, query, targets, args.top_k)
    for modality, hits in results.items():
        print(f"{modality} for {args.text!r}:")
        for hit in hits:
            print(f"  {hit['rank']}. {hit['score']:.3f}  row {hit['row']}  {hit.get(modality) or ''}")

    # embeddings directly: (n, embed_dim) tensors, L2-normalised, so a matrix product is cosine similarity
    if results.get("image"):
        zi = model.embed_images([results["image"][0]["image"]])
        zt = model.embed_texts([args.text, "something else entirely"])
        print(f"cosine similarity of the best image with the query and with another caption: {(zi @ zt.T).tolist()[0]}")


if __name__ == "__main__":
    main()
