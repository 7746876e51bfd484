"""The whole ``mlops tune`` past LFW-62's 62 people: identities made by augmenting real faces.

For k = 1, 2, 4, ... every LFW-62 person's raw photos (``lfw_funneled``, 250x250) are written k
times, variant v as a new identity ``<person>__v<v>``: v odd is mirrored, and each variant has
its own colour cast and zoom, the same for all of that identity's photos. So the gallery holds
62k people and about 3023k photos. Each size is one cold ``mlops tune`` (empty feature cache,
the whole raw photo at 96 px, no alignment, the face weights) capped at 8 trials, run one after
another: the face model's staged search opens fine-tuning of block 5 only after 8 trials without
progress, so every row's trials are heads (at 10 trials the 124-people run's tenth trial
fine-tuned block 5 for 337 s, and that row timed something else).

The variants of a person are the same face, so accuracy here means nothing (an augmented
identity is told apart by its cast, not its face): the rows time the pipeline (extraction,
trials, test scoring, logging) and size its memory as people and images grow. The head alone on
synthetic vectors up to 16,000 people is ``bench.gallery_scale``; real people, ``bench.gallery_people``.

Run (about 10 minutes on 2 idle cores for k = 1, 2, 4: extraction runs ~55 img/s)::

    .venv/bin/python -m bench.gallery_augmented --variants 1,2,4

Writes ``bench/results/<date>-gallery-augmented.{json,md}``; docs/scale.md reads it.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.align_compare import run_config
from bench.env import REPO, BenchEnv, default_weights, lfw_people, machine_header, require_lfw_raw

MIN_PHOTOS = 20  # LFW-62: the people with at least 20 photos


def write_gallery(raw: Path, variants: int, out: Path) -> tuple[int, int]:
    """``variants`` augmented identities per LFW-62 person under ``out``; (people, photos)."""
    from PIL import Image, ImageOps

    people = lfw_people(MIN_PHOTOS, raw)
    photos = 0
    for variant in range(variants):
        rng = np.random.default_rng(variant)
        cast = rng.uniform(0.8, 1.2, size=3) if variant else np.ones(3)  # variant 0: the real photos
        margin = 6 * (variant // 2)  # px cut from each side, then resized back: a zoom
        for person, sources in people:
            folder = out / f"{person.name}__v{variant}"
            folder.mkdir(parents=True)
            for source in sources:
                with Image.open(source) as opened:
                    picture = opened.convert("RGB")
                if variant % 2:
                    picture = ImageOps.mirror(picture)
                if margin:
                    width, height = picture.size
                    picture = picture.crop((margin, margin, width - margin, height - margin)).resize((width, height))
                pixels = np.clip(np.asarray(picture, np.float32) * cast, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / source.name, quality=92)
                photos += 1
    return len(people) * variants, photos


def markdown(header: dict[str, Any], records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The table docs/scale.md quotes."""
    lines = [
        "# The whole mlops tune against augmented identities (LFW-62 x k)",
        "",
        f"- date: {header['date']}; command: `{header['command']}`",
        f"- machine: {header['machine']}, {header['cpu_count']} CPUs",
        f"- each row: one cold `mlops tune` (empty cache), whole raw photo at {args.size} px, no alignment, "
        f"at most {args.max_trials} trials, goal {args.goal:g}, seed {args.seed}; timing and memory only",
        "",
        "| k | people | photos | VGG16 pass (s) | img/s | trials | search + finish (s) | whole command (s) "
        "| peak RSS (MB) | goal | load avg before → after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in records:
        stages = r.get("stage_seconds") or {}
        rest = stages.get("search", 0.0) + stages.get("finish", 0.0)
        goal = "met" if r.get("goal_met") else f"not met: {r.get('cut_by', '?')}"
        lines.append(
            f"| {r['variants']} | {r['people']} | {r['photos']} | {r.get('vgg_s', float('nan')):.0f} "
            f"| {r.get('vgg_ips', float('nan')):.1f} | {r.get('trials', '–')} | {rest:.1f} | {r['command_s']:.0f} "
            f"| {r['peak_rss_mb']:.0f} | {goal} | {r['load_avg_before'][0]:.1f} → {r['load_avg_after'][0]:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Write each gallery, run ``mlops tune`` on it, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="1,2,4", help="identities per LFW-62 person, comma-separated")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--goal", type=float, default=0.95)
    parser.add_argument("--max-trials", type=int, default=8, help="8: heads only (see above)")
    parser.add_argument("--budget-seconds", type=float, default=900.0, help="search budget per size")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--weights", type=Path, default=default_weights())
    args = parser.parse_args(argv)
    raw = require_lfw_raw()
    stem = REPO / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%d-%H%M}-gallery-augmented"
    header = machine_header([sys.executable, "-m", "bench.gallery_augmented", *(argv or sys.argv[1:])], args.weights)
    bench = BenchEnv(args.seed)
    records: list[dict[str, Any]] = []
    try:
        for variants in (int(part) for part in args.variants.split(",")):
            args.raw = bench.scratch(f"gallery-x{variants}")
            people, photos = write_gallery(raw, variants, args.raw)
            print(f"k={variants}: {people} people, {photos} photos written; running mlops tune", flush=True)
            record = run_config("raw-whole", args, bench)
            record.update(variants=variants, people=people, photos=photos)
            records.append(record)
            print(json.dumps({k: v for k, v in record.items() if k != "command"}, default=float)[:600], flush=True)
            results = {"header": header, "runs": records}
            stem.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
    finally:
        bench.cleanup()
    stem.with_suffix(".md").write_text(markdown(header, records, args))
    print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
