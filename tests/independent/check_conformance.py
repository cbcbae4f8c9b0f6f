"""Decode every conformance stream with the independent decoder, the large ones included
(minutes each), and compare with the committed digests: ``python
tests/independent/check_conformance.py``. The test suite checks only the streams below a
megapixel (``test_independent_conformance.py``); this is the whole check, run by hand."""

import hashlib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import qlicref  # noqa: E402

ROOT = HERE.parents[1]


def main() -> int:
    streams = json.loads((ROOT / "conformance" / "manifest.json").read_text())["streams"]
    models = {}
    failed = 0
    for s in streams:
        name = s["model"]
        if name not in models:
            models[name] = (ROOT / "models" / f"qlic-{name}.qlicm").read_bytes()
        start = time.monotonic()
        rgb = qlicref.decode((ROOT / "conformance" / s["file"]).read_bytes(), models[name])
        ok = hashlib.md5(rgb.tobytes()).hexdigest() == s["pixels_md5"]
        failed += not ok
        print(f"{'OK  ' if ok else 'FAIL'} {s['file']} {s['width']}x{s['height']} "
              f"({time.monotonic() - start:.1f} s)", flush=True)
    print(f"{len(streams) - failed} of {len(streams)} streams match")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
