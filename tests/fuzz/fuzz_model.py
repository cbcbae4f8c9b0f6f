"""Long fuzzing campaign of the model loader (``modelfile.unpack``, ``IntegerNetwork``
validation, entropy tables); a model that loads is then run on a small image. Same options
as ``fuzz_decode.py``::

    nice -n 19 python tests/fuzz/fuzz_model.py --runs 200000 --max-time 3600
"""

from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_decode import main  # noqa: E402

if __name__ == "__main__":
    main("model")
