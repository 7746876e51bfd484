"""How fast the face model aligns raw photos: ``FaceAligner(96).align`` over every LFW-62 photo.

LFW-62's raw 250x250 photos (``lfw_funneled``, people with at least 20 photos: 3023) are decoded
as training decodes them, then aligned one photo per MTCNN call (what training and serving
both do); prints seconds, images/s, the faces found and the load average before and after.
Compare with one VGG16 pass over the same photos (``bench.floor``, or the main benchmark).

Run (about a minute on 2 idle cores): ``.venv/bin/python -m bench.align_speed``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from bench.env import LFW_RAW, REPO


def main(argv: list[str] | None = None) -> None:
    """Time the alignment of LFW-62's raw photos."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=96, help="crop side in px")
    parser.add_argument("--limit", type=int, default=None, help="align only the first N photos")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(REPO / "models" / "face_vgg16"))  # face_aligner.py imports no pipeline code
    from face_aligner import FaceAligner, decode_photo

    people = [p for p in sorted(LFW_RAW.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= 20]
    files = [photo for person in people for photo in sorted(person.glob("*.jpg"))][: args.limit]
    photos = [decode_photo(path.read_bytes()) for path in files]
    aligner = FaceAligner(args.size)
    aligner.align(photos[:2])  # the graphs' one trace, outside the timing
    before = os.getloadavg()[0]
    started = time.perf_counter()
    _, found = aligner.align(photos)
    seconds = time.perf_counter() - started
    print(
        f"{len(photos)} photos of {len(people)} people aligned at {args.size} px in {seconds:.1f} s "
        f"({len(photos) / seconds:.1f} img/s), a face in {int(found.sum())}; "
        f"load {before:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
