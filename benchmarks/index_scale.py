"""Does the approximate index hold up at a million rows? Recall, speed and memory against exact search.

Builds a 1,000,000 x 512 corpus of random unit vectors, indexes it twice, and searches both
with the same held-out queries:

- exact: faiss `IndexFlatIP`, brute-force inner product (its top-k equals torch's, see
  tests/test_index.py); its results are the ground truth, and its speed the reference;
- approximate: the index `multijepa index` builds with the same settings (`kind=ivf` unless
  given otherwise; any index setting as key=value, e.g. `kind=hnsw ef_search=128`).

It prints queries/s of each (a batch of queries, and one query at a time), the approximate
index's recall@10 against exact search, build time and memory (the serialised index size and the
process's peak RSS), with the ratios approximate/exact. For IVF (HNSW) it also sweeps nprobe
(ef_search), the knob that trades recall for speed at search time.

The corpus: `--data clustered` (default) draws each vector around one of 10,000 random centres
(cosine about 0.7 to its centre, about 0.5 to a neighbour of the same centre), the way real
embeddings group by meaning, so nearest neighbours exist and are worth finding. `--data gaussian`
draws i.i.d. Gaussian vectors: in 512 dimensions every point is then almost equally far from
every other, there is no neighbourhood to find, and any approximate index needs to scan most of
the corpus to reach a high recall. Real embeddings look like the first case; the second is the
worst case, shown for honesty.

    python benchmarks/index_scale.py                    # 1M x 512, IVF, about 5 minutes on 2 cores
    python benchmarks/index_scale.py --n 200000 kind=hnsw
    python benchmarks/index_scale.py --json runs/index_scale.json
    python benchmarks/index_scale.py kind=ivfpq        # compressed, lists on disk, built from parts

With kind=ivfpq the index is built the way `multijepa index` builds it for a corpus larger than
memory: trained once on a sample, then filled part by part (the corpus written as 4 and as 16 index
parts, each split filled in a fresh process whose peak RSS is reported, so the two show whether
memory grows with the number of parts), the lists merged into one file on disk. It reports bytes per
vector, recall@10 and queries/s with and without the exact re-rank from the stored vectors, and
what 100 M rows would take.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np

from multijepa.retrieval.index import (
    build_faiss_index,
    build_ivfpq_from_parts,
    index_config,
    ivf_lists,
    ivfpq_train_rows,
    pq_shape,
    read_ondisk_index,
    rerank_search,
    set_search_params,
    train_ivfpq,
)


def unit_vectors(n: int, d: int, kind: str, rng: np.random.Generator, centres: np.ndarray | None) -> np.ndarray:
    """(n, d) float32 unit vectors, made in blocks so the peak memory stays near the output's."""
    out = np.empty((n, d), dtype=np.float32)
    noise = 0.045  # per-dimension std: cos(x, centre) = 1 / sqrt(1 + d * noise^2) = 0.7 at d = 512
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        x = rng.standard_normal((e - s, d), dtype=np.float32)
        if kind == "clustered":
            x = centres[rng.integers(len(centres), size=e - s)] + noise * x
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def timed_search(index: faiss.Index, q: np.ndarray, k: int, single: int) -> tuple[np.ndarray, float, float]:
    """-> (ids (Q, k), queries/s as one batch, queries/s one at a time over the first `single`)."""
    t0 = time.perf_counter()
    _, ids = index.search(q, k)
    batch_qps = len(q) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(single):
        index.search(q[i : i + 1], k)
    single_qps = single / (time.perf_counter() - t0)
    return ids, batch_qps, single_qps


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of the exact top-k that the approximate top-k contains, averaged over queries."""
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))


def peak_rss_gb() -> float:
    """This process's peak resident memory, GiB: VmHWM where Linux gives it (ru_maxrss would keep the
    parent's peak in a spawned child: it survives the fork and exec that start it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _fill_from_parts(paths: list[str], n: int, dim: int, cfg_dict: dict, out: str, trained_file: str, queue) -> None:
    """In a fresh process (spawned: nothing of the parent's memory): fill the trained IVF-PQ index
    from the part files as `multijepa index` does, and report the time and this process's peak RSS."""
    t0 = time.perf_counter()
    build_ivfpq_from_parts([Path(p) for p in paths], "image", n, dim, index_config(base=cfg_dict), Path(out),
                           trained=faiss.read_index(trained_file))
    queue.put({"fill_s": time.perf_counter() - t0, "peak_rss_gib": peak_rss_gb()})


def ivfpq_figures(x: np.ndarray, q: np.ndarray, truth: np.ndarray, args, cfg, exact: dict) -> dict:
    """kind=ivfpq, the way an index folder holds it: trained once on a sample, then filled from the
    corpus written as index parts (two splits: 4 and 16 parts, each filled in a fresh process whose
    peak RSS is measured), lists merged on disk; searched with and without the exact re-rank."""
    import multiprocessing as mp
    import shutil
    import tempfile

    n, d = x.shape
    work = Path(tempfile.mkdtemp(prefix="index_scale_"))
    try:
        t0 = time.perf_counter()
        train_n = ivfpq_train_rows(n, cfg)
        trained = train_ivfpq(x[np.random.default_rng(cfg.seed).choice(n, train_n, replace=False)], n, cfg)
        train_s = time.perf_counter() - t0
        faiss.write_index(trained, str(work / "trained.faiss"))
        m_codes, nbits = pq_shape(d, train_n, cfg)
        print(f"ivfpq: nlist {trained.nlist}, {m_codes} codes of {nbits} bits, trained on {train_n:,} vectors in {train_s:.0f}s",
              flush=True)
        builds = []
        for parts in (4, 16):
            folder = work / f"parts{parts}"
            folder.mkdir()
            paths = []
            for i, (s, e) in enumerate(zip(np.linspace(0, n, parts + 1, dtype=int)[:-1], np.linspace(0, n, parts + 1, dtype=int)[1:])):
                paths.append(str(folder / f"part-{i:06d}.npz"))
                with open(paths[-1], "wb") as f:
                    np.savez(f, z_image=x[s:e], rows_image=np.arange(s, e, dtype=np.int64), errors=np.array("[]"))
            ctx = mp.get_context("spawn")
            queue = ctx.Queue()
            child = ctx.Process(target=_fill_from_parts, args=(paths, n, d, asdict(cfg), str(folder), str(work / "trained.faiss"), queue))
            child.start()
            got = queue.get()
            child.join()
            builds.append({"parts": parts, **got})
            print(f"  filled from {parts} parts in {got['fill_s']:.0f}s, peak RSS of that process {got['peak_rss_gib']:.2f} GiB", flush=True)
        folder = work / "parts16"
        index = read_ondisk_index(folder / "image.faiss")
        set_search_params(index, cfg)
        vectors = np.load(folder / "image_vectors.npy", mmap_mode="r")
        index_bytes = (folder / "image.faiss").stat().st_size + (folder / "image.ivfdata").stat().st_size
        found, qps, single = timed_search(index, q, args.k, args.single)
        plain = recall_at(found, truth, args.k)

        def reranked(qs):
            return rerank_search(index, vectors, qs, args.k, cfg.rerank)[1]

        rerank_search(index, vectors, q[:50], args.k, cfg.rerank)  # the vectors' pages read once, as a served index's are
        t0 = time.perf_counter()
        found_rr = reranked(q)
        rr_qps = len(q) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(args.single):
            reranked(q[i : i + 1])
        rr_single = args.single / (time.perf_counter() - t0)
        rr = recall_at(found_rr, truth, args.k)
        per_vector = index_bytes / n
        quantizer = trained.nlist * d * 4
        print(f"\n| {n:,} x {d}, {args.data} | exact (flat) | IVF-PQ | IVF-PQ + re-rank ({cfg.rerank}x k) |")
        print("|---|---|---|---|")
        print(f"| queries/s, batched | {exact['queries_per_s']:,.0f} | {qps:,.0f} | {rr_qps:,.0f} |")
        print(f"| queries/s, one at a time | {exact['single']:,.1f} | {single:,.0f} | {rr_single:,.0f} |")
        print(f"| recall@{args.k} against exact | 1 | {plain:.4f} | **{rr:.4f}** |")
        print(f"| index bytes per vector | {exact['bytes'] / n:,.0f} | {per_vector:.1f} | + {d * 4} on disk (vectors) |")
        print(f"| index memory / flat | 1 | {index_bytes / exact['bytes']:.4f} | |")
        print("\npeak RSS while filling from parts: " + ", ".join(f"{b['parts']} parts {b['peak_rss_gib']:.2f} GiB" for b in builds))
        at_100m = 100_000_000
        print(f"at 100 M rows: lists on disk {per_vector * at_100m / 2**30:.1f} GiB (memory-mapped), exact vectors on "
              f"disk {d * 4 * at_100m / 2**30:.0f} GiB, in memory the coarse quantizer ({quantizer / 2**20:.0f} MiB at "
              f"nlist {trained.nlist}) and one part at a time while building; flat: {exact['bytes'] / n * at_100m / 2**30:.0f} GiB in memory")
        print(f"\nratios IVF-PQ + re-rank / exact: {rr_qps / exact['queries_per_s']:.1f}x queries/s batched, "
              f"recall@{args.k} {rr:.4f} ({'meets' if rr >= 0.95 else 'BELOW'} the 0.95 target), index memory "
              f"{index_bytes / exact['bytes']:.4f}x ({'meets' if index_bytes * 8 <= exact['bytes'] else 'ABOVE'} 1/8)")
        return {"ivfpq": {"train_s": train_s, "train_rows": train_n, "nlist": trained.nlist, "pq_m": m_codes, "pq_nbits": nbits,
                          "builds": builds, "bytes": index_bytes, "bytes_per_vector": per_vector,
                          "queries_per_s": qps, "single_queries_per_s": single, f"recall@{args.k}": plain,
                          "rerank": {"factor": cfg.rerank, "queries_per_s": rr_qps, "single_queries_per_s": rr_single,
                                     f"recall@{args.k}": rr}}}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="corpus rows [1,000,000]")
    p.add_argument("--dim", type=int, default=512, help="embedding width [512]")
    p.add_argument("--queries", type=int, default=1000, help="held-out queries [1000]")
    p.add_argument("--single", type=int, default=100, help="queries also timed one at a time [100]")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--data", choices=("clustered", "gaussian"), default="clustered")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="index settings, as for `multijepa index` [kind=ivf]")
    args = p.parse_args()
    cfg = index_config(["kind=ivf", *args.overrides])
    if cfg.kind == "flat":
        raise SystemExit("error: kind=flat is the exact reference itself; benchmark kind=ivf or kind=hnsw")

    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}")
    rng = np.random.default_rng(args.seed)
    centres = unit_vectors(10_000, args.dim, "gaussian", rng, None) if args.data == "clustered" else None
    t0 = time.perf_counter()
    x = unit_vectors(args.n, args.dim, args.data, rng, centres)
    q = unit_vectors(args.queries, args.dim, args.data, rng, centres)
    print(f"corpus: {args.n:,} x {args.dim} {args.data} unit vectors ({x.nbytes / 2**30:.2f} GiB), "
          f"{args.queries} held-out queries, made in {time.perf_counter() - t0:.0f}s")

    t0 = time.perf_counter()
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(x)
    exact_build = time.perf_counter() - t0
    truth, exact_qps, exact_single = timed_search(exact, q, args.k, args.single)
    exact_bytes = exact.ntotal * args.dim * 4
    print(f"exact (flat):   built in {exact_build:.1f}s, {exact_qps:,.0f} queries/s batched, "
          f"{exact_single:,.1f} one at a time, {exact_bytes / 2**30:.2f} GiB")
    del exact

    if cfg.kind == "ivfpq":
        res = ivfpq_figures(x, q, truth, args, cfg, {"queries_per_s": exact_qps, "single": exact_single,
                                                   "bytes": exact_bytes})
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"n": args.n, "dim": args.dim, "data": args.data, "k": args.k,
                                                   "config": asdict(cfg), "faiss": faiss.__version__,
                                                   "exact": {"build_s": exact_build, "queries_per_s": exact_qps,
                                                             "single_queries_per_s": exact_single,
                                                             "bytes": exact_bytes}, **res}, indent=2))
            print(f"wrote {args.json}")
        return

    detail = f"nlist={ivf_lists(args.n, cfg.nlist)} nprobe={cfg.nprobe}" if cfg.kind == "ivf" else \
        f"M={cfg.hnsw_m} ef_construction={cfg.ef_construction} ef_search={cfg.ef_search}"
    print(f"building {cfg.kind} ({detail}) ...", flush=True)
    t0 = time.perf_counter()
    approx = build_faiss_index(x, cfg)
    approx_build = time.perf_counter() - t0
    approx_bytes = len(faiss.serialize_index(approx))
    found, approx_qps, approx_single = timed_search(approx, q, args.k, args.single)
    recall = recall_at(found, truth, args.k)
    print(f"approximate:    built in {approx_build:.0f}s, {approx_qps:,.0f} queries/s batched, "
          f"{approx_single:,.1f} one at a time, {approx_bytes / 2**30:.2f} GiB; recall@{args.k} = {recall:.4f}")

    sweep = []
    knob = "nprobe" if cfg.kind == "ivf" else "ef_search"
    base = getattr(cfg, knob)
    for value in sorted({max(1, base // 4), max(1, base // 2), base, base * 2}):
        cfg_v = index_config(base=asdict(cfg), overrides=[f"{knob}={value}"])
        set_search_params(approx, cfg_v)
        f, qps, _ = timed_search(approx, q, args.k, 0)
        sweep.append({knob: value, "recall": recall_at(f, truth, args.k), "queries_per_s": qps})
    print(f"\n{knob:>10}  recall@{args.k}  queries/s  speed-up vs exact")
    for s in sweep:
        print(f"{s[knob]:>10}  {s['recall']:>9.4f}  {s['queries_per_s']:>9,.0f}  {s['queries_per_s'] / exact_qps:>17.1f}x")

    print(f"\nratios approximate / exact: {approx_qps / exact_qps:.1f}x queries/s batched, "
          f"{approx_single / exact_single:.1f}x one at a time, {approx_bytes / exact_bytes:.2f}x index memory; "
          f"recall@{args.k} {recall:.4f} ({'meets' if recall >= 0.95 else 'BELOW'} the 0.95 target)")
    print(f"process peak RSS {peak_rss_gb():.1f} GiB (corpus, queries, one index at a time, and one serialised copy)")
    if args.json:
        out = {
            "n": args.n, "dim": args.dim, "data": args.data, "queries": args.queries, "k": args.k,
            "config": asdict(cfg), "faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(),
            "exact": {"build_s": exact_build, "queries_per_s": exact_qps, "single_queries_per_s": exact_single, "bytes": exact_bytes},
            "approximate": {"build_s": approx_build, "queries_per_s": approx_qps, "single_queries_per_s": approx_single,
                            "bytes": approx_bytes, f"recall@{args.k}": recall},
            "sweep": sweep, "peak_rss_gib": peak_rss_gb(),
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
