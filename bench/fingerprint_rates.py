"""Measure PDQ and pHash miss and false-match rates at the thresholds in matching/scoring.py.

Generates N originals with the test suite's generator (gradients, shapes, text, noise textures,
photo-like blobs at 640x480 up to 1920x1080), applies the five transforms a platform sees
(JPEG quality 30, resize to 25 %, brightness +20 %, Gaussian blur radius 2, greyscale), and
fingerprints everything through matching.compute.image_fingerprints, exactly as the server
does. Prints JSON:

- per algorithm and transform: distances to the original (p50/p95/max) and the share of pairs
  whose verdict is match, possible or none (none = a miss);
- false matches: unrelated original/original pairs and variant/other-original pairs whose
  distance falls inside the match or possible radius;
- PDQ figures both over all originals and over those with quality >= PDQ_LOW_QUALITY (the
  ones whose hashes are trusted without a caveat).

Usage: python bench/fingerprint_rates.py [--originals 300] [--seed 1] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from copyledger.ledger import fingerprint as schema
from copyledger.matching import compute, scoring
from tests.test_fingerprint import TRANSFORMS, encode, make_original

Row = dict[str, Any]


def measure_one(args: tuple[int, int]) -> Row:
    """Fingerprint one original and its five variants."""
    index, seed = args
    kind, image = make_original(index, seed)
    original = compute.image_fingerprints(encode(image))
    variants = {name: compute.image_fingerprints(t(image)) for name, t in TRANSFORMS.items()}
    return {
        "index": index,
        "kind": kind,
        "size": list(image.size),
        "original": original,
        "variants": variants,
    }


def _bits(hexes: Iterable[str]) -> np.ndarray:
    return np.array([np.frombuffer(bytes.fromhex(h), np.uint8) for h in hexes])


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between every row of a and every row of b."""
    out = np.empty((len(a), len(b)), np.int32)
    for i, row in enumerate(a):
        out[i] = np.unpackbits(np.bitwise_xor(b, row), axis=1).sum(axis=1)
    return out


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _verdicts(algorithm: str, distances: np.ndarray) -> dict[str, float]:
    bands = scoring.THRESHOLDS[algorithm]
    match, possible = bands.match, bands.possible
    n = max(len(distances), 1)
    return {
        "match": round(float(np.count_nonzero(distances <= match)) / n, 5),
        "possible": round(
            float(np.count_nonzero((distances > match) & (distances <= possible))) / n, 5
        ),
        "none": round(float(np.count_nonzero(distances > possible)) / n, 5),
    }


def summarise(rows: list[Row]) -> dict[str, Any]:
    rows = sorted(rows, key=lambda r: r["index"])
    trusted = np.array([r["original"]["pdq"]["quality"] >= schema.PDQ_LOW_QUALITY for r in rows])
    kinds = np.array([r["kind"] for r in rows])
    report: dict[str, Any] = {}
    for algorithm in ("pdq", "phash"):
        originals = _bits(r["original"][algorithm]["hash"] for r in rows)
        subsets = {"all": np.ones(len(rows), bool)}
        if algorithm == "pdq":
            subsets[f"quality>={schema.PDQ_LOW_QUALITY}"] = trusted
        bands = scoring.THRESHOLDS[algorithm]
        match, possible = bands.match, bands.possible
        section: dict[str, Any] = {"match_threshold": match, "possible_threshold": possible}
        for subset_name, mask in subsets.items():
            per_transform: dict[str, Any] = {}
            for name in TRANSFORMS:
                variants = _bits(r["variants"][name][algorithm]["hash"] for r in rows)
                d = np.unpackbits(np.bitwise_xor(originals, variants), axis=1).sum(axis=1)[mask]
                worst_kind = str(kinds[mask][int(np.argmax(d))]) if len(d) else None
                per_transform[name] = {
                    "pairs": len(d),
                    "p50": _pct(d, 50),
                    "p95": _pct(d, 95),
                    "max": int(d.max()) if len(d) else None,
                    "worst_kind": worst_kind,
                    **_verdicts(algorithm, d),
                }
            # Unrelated: every pair of different originals, and every variant against every
            # other original (what a platform's query would be compared with).
            orig = originals[mask]
            dist = _pairwise(orig, orig)
            upper = dist[np.triu_indices(len(orig), k=1)]
            cross = []
            for name in TRANSFORMS:
                variants = _bits(r["variants"][name][algorithm]["hash"] for r in rows)[mask]
                dv = _pairwise(variants, orig)
                np.fill_diagonal(dv, 10_000)
                cross.append(dv[dv < 10_000])
            cross_all = np.concatenate(cross) if cross else np.array([], np.int32)
            by_kind: dict[str, Any] = {}
            for kind in sorted(set(kinds[mask].tolist())):
                km = mask & (kinds == kind)
                by_kind[kind] = {}
                for name in TRANSFORMS:
                    variants = _bits(r["variants"][name][algorithm]["hash"] for r in rows)
                    d = np.unpackbits(np.bitwise_xor(originals, variants), axis=1).sum(axis=1)
                    d = d[km]
                    by_kind[kind][name] = {"max": int(d.max()), **_verdicts(algorithm, d)}
            section[subset_name] = {
                "originals": int(mask.sum()),
                "transforms": per_transform,
                "by_kind": by_kind,
                "unrelated_original_pairs": _unrelated(algorithm, upper),
                "unrelated_variant_pairs": _unrelated(algorithm, cross_all),
            }
        report[algorithm] = section
    report["pdq_low_quality_originals"] = {
        "count": int((~trusted).sum()),
        "kinds": sorted({str(k) for k in kinds[~trusted]}),
    }
    report["combined_best_of_pdq_phash"] = _combined(rows, trusted)
    return report


def _unrelated(algorithm: str, d: np.ndarray) -> dict[str, Any]:
    bands = scoring.THRESHOLDS[algorithm]
    match, possible = bands.match, bands.possible
    return {
        "pairs": len(d),
        "min": int(d.min()) if len(d) else None,
        "p01": _pct(d, 1),
        "p50": _pct(d, 50),
        "false_match": int(np.count_nonzero(d <= match)),
        "false_match_rate": float(np.count_nonzero(d <= match)) / max(len(d), 1),
        "false_possible": int(np.count_nonzero(d <= possible)),
        "false_possible_rate": float(np.count_nonzero(d <= possible)) / max(len(d), 1),
    }


def _combined(rows: list[Row], trusted: np.ndarray) -> dict[str, Any]:
    """Best verdict of the two algorithms per variant: how many still miss."""
    out: dict[str, Any] = {}
    for name in TRANSFORMS:
        counts = {"match": 0, "possible": 0, "none": 0}
        for r in rows:
            best = scoring.overall_verdict(
                scoring.compare(a, r["original"][a], r["variants"][name][a])
                for a in ("pdq", "phash")
            )
            counts[best] += 1
        out[name] = counts
    return out


# ---------------------------------------------------------------- text (MinHash)

TEXT_WORDS = 200
TEXT_EDITS = ("reflow", "subst1", "subst2", "subst3", "subst5", "subst10", "subst20",
              "drop_sentence", "half_copied")


def stdlib_texts(limit: int) -> list[str]:
    """Natural English prose available offline: long docstrings of the standard library,
    cut to their first TEXT_WORDS words."""
    import ast
    import sysconfig

    lib = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    seen: set[str] = set()
    for path in sorted(lib.glob("*.py")) + sorted(lib.glob("*/*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc.split()) >= TEXT_WORDS:
                    text = " ".join(doc.split()[:TEXT_WORDS])
                    if text not in seen:
                        seen.add(text)
                        texts.append(text)
    return texts[:limit]


def edit(text: str, how: str, other: str, rng: np.random.Generator) -> str:
    words = text.split()
    if how == "reflow":  # new line breaks, upper case, different punctuation
        return "\n".join(" ".join(words[i : i + 9]) for i in range(0, len(words), 9)).upper() \
            .replace(",", " ;").replace(".", " !")
    if how.startswith("subst"):
        for position in rng.choice(len(words), int(how[5:]), replace=False):
            words[position] = f"replaced{position}"
        return " ".join(words)
    if how == "drop_sentence":  # one sentence (of ~10-20) removed
        sentences = text.split(". ")
        if len(sentences) > 2:
            del sentences[int(rng.integers(1, len(sentences) - 1))]
        return ". ".join(sentences)
    half = len(words) // 2  # the first half copied into someone else's text
    return " ".join(words[:half] + other.split()[half:])


def measure_text(limit: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    texts = stdlib_texts(limit)
    originals = [compute.text_fingerprints(t)["minhash"] for t in texts]
    report: dict[str, Any] = {
        "corpus": f"{len(texts)} standard-library docstrings, first {TEXT_WORDS} words each",
        "match_threshold": scoring.MINHASH_MATCH,
        "possible_threshold": scoring.MINHASH_POSSIBLE,
        "edits": {},
    }
    for how in TEXT_EDITS:
        estimated, exact = [], []
        for i, text in enumerate(texts):
            edited = edit(text, how, texts[(i + 1) % len(texts)], rng)
            edited_fp = compute.text_fingerprints(edited)["minhash"]
            estimated.append(scoring.minhash_similarity(originals[i], edited_fp))
            a, b = set(compute.text_shingles(text)), set(compute.text_shingles(edited))
            exact.append(len(a & b) / len(a | b))
        est = np.array(estimated)
        report["edits"][how] = {
            "pairs": len(est),
            "exact_jaccard_p50": round(float(np.median(exact)), 3),
            "estimate_p50": round(float(np.median(est)), 3),
            "estimate_min": round(float(est.min()), 3),
            "match": round(float(np.mean(est >= scoring.MINHASH_MATCH)), 4),
            "possible": round(
                float(np.mean((est < scoring.MINHASH_MATCH) & (est >= scoring.MINHASH_POSSIBLE))), 4
            ),
            "none": round(float(np.mean(est < scoring.MINHASH_POSSIBLE)), 4),
        }
    values = np.array([scoring.minhash_hashvalues(o) for o in originals])
    unrelated = [
        float(np.count_nonzero(values[i] == values[j])) / values.shape[1]
        for i in range(len(values))
        for j in range(i + 1, len(values))
    ]
    u = np.array(unrelated)
    report["unrelated_pairs"] = {
        "pairs": len(u),
        "max": round(float(u.max()), 3),
        "p99": round(float(np.percentile(u, 99)), 3),
        "false_match": int(np.count_nonzero(u >= scoring.MINHASH_MATCH)),
        "false_possible": int(np.count_nonzero(u >= scoring.MINHASH_POSSIBLE)),
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--originals", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--raw", help="also write every fingerprint to this JSON file")
    parser.add_argument("--texts", type=int, default=300, help="texts for the MinHash part")
    args = parser.parse_args()
    started = time.perf_counter()
    jobs = [(i, args.seed) for i in range(args.originals)]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(measure_one, jobs, chunksize=4))
    else:
        rows = [measure_one(j) for j in jobs]
    elapsed = time.perf_counter() - started
    if args.raw:
        with open(args.raw, "w") as out:
            json.dump(rows, out)
    report = {
        "bench": "fingerprint_rates",
        "originals": args.originals,
        "transforms": list(TRANSFORMS),
        "seed": args.seed,
        "seconds": round(elapsed, 1),
        "images_hashed": args.originals * (1 + len(TRANSFORMS)),
        "versions": {
            "pdqhash": rows[0]["original"]["pdq"]["version"],
            "imagehash": rows[0]["original"]["phash"]["version"],
        },
        **summarise(rows),
        "minhash": measure_text(args.texts, args.seed),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
