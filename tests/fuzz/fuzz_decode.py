"""Long fuzzing campaign of ``qlic_codec.decode`` (and, with ``--target model``, of the model
loader). Run it niced, it is CPU-bound::

    nice -n 19 python tests/fuzz/fuzz_decode.py --runs 1000000 --max-time 3600
    nice -n 19 python tests/fuzz/fuzz_model.py --runs 200000
    nice -n 19 python tests/fuzz/fuzz_decode.py --engine plain --runs 50000   # no atheris

With atheris installed (``pip install atheris``) libFuzzer drives the search with coverage
of the pure-Python layers (container, entropy coder, validators) and our structure-aware
mutators (``harness.py``), which re-seal the checksums of most inputs so that they get past
the CRC32 / SHA-256 checks. libFuzzer's own ``-timeout`` catches hangs and its signal
handlers catch a crash in a kernel. ``--engine plain`` is a seeded random loop with the same
mutators.

Anything but a ``QlicError`` is a finding: the input is saved under ``--findings`` (default
``fuzz-findings/``) with its traceback, and the campaign goes on. At the end (``--runs``
inputs or ``--max-time`` seconds) it prints the number of inputs, the time, every outcome
class and the findings, and exits 1 if there was any.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Hang(Exception):
    """An input took longer than --input-timeout (plain engine)."""


def _args(default_target: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", choices=("decode", "model"), default=default_target)
    p.add_argument("--engine", choices=("atheris", "plain"), default=None,
                   help="default: atheris if it is installed")
    p.add_argument("--runs", type=int, default=1_000_000)
    p.add_argument("--max-time", type=float, default=3600.0, help="seconds")
    p.add_argument("--seed", type=int, default=0, help="plain engine RNG seed")
    p.add_argument("--reseal", type=float, default=None,
                   help="share of inputs whose checksums are re-sealed (default 0.8 / 0.85)")
    p.add_argument("--findings", type=Path, default=Path("fuzz-findings"))
    p.add_argument("--workdir", type=Path, default=None, help="atheris corpus directory")
    p.add_argument("--report-every", type=int, default=20000)
    p.add_argument("--input-timeout", type=int, default=60, help="seconds per input")
    return p.parse_args()


def main(default_target: str = "decode") -> None:
    args = _args(default_target)
    # One thread per kernel: the campaign shares the machine, and threads only add noise.
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "plain"
    sys.path.insert(0, str(HERE))
    if engine == "atheris":
        import atheris
        # Coverage for the pure-Python layers; the Numba kernels must keep their bytecode.
        with atheris.instrument_imports(include=["qlic_codec"],
                                        exclude=["qlic_codec.engine.kernels",
                                                 "qlic_codec.engine.reference"]):
            import harness
    else:
        import harness

    if args.target == "decode":
        seeds = harness.make_seed_streams()
        target = harness.check_decode
        fuzz_one, reseal = harness.fuzz_qlic_input, harness.reseal_qlic
        mutate = harness.mutate_qlic
        reseal_p = 0.8 if args.reseal is None else args.reseal
    else:
        seeds = [harness.model_bytes()]
        target = harness.ModelProbe()
        fuzz_one, reseal = harness.fuzz_model_input, harness.reseal_model
        mutate = harness.mutate_model
        reseal_p = 0.85 if args.reseal is None else args.reseal
    for s in seeds:  # warm up the JIT and check that the seeds are valid
        assert not target(s).startswith("FINDING"), "a seed fails"

    campaign = harness.Campaign(args.findings, args.report_every)
    print(f"fuzzing {args.target} with {engine}: {len(seeds)} seeds, re-seal share "
          f"{reseal_p}, up to {args.runs} inputs or {args.max_time:.0f} s", flush=True)

    def finish() -> None:
        campaign.report(final=True)
        sys.stdout.flush()
        os._exit(1 if campaign.findings else 0)

    def alarm(signum, frame):
        raise Hang(f"input took over {args.input_timeout} s")

    if engine == "plain":
        signal.signal(signal.SIGALRM, alarm)

    def test_one(data: bytes) -> None:
        # libFuzzer's -timeout owns SIGALRM under atheris; the plain loop sets its own.
        if engine == "plain":
            signal.alarm(args.input_timeout)
        try:
            campaign.run(target, data, args.target)
        finally:
            if engine == "plain":
                signal.alarm(0)
        if campaign.count >= args.runs or campaign_time() > args.max_time:
            finish()

    def campaign_time() -> float:
        import time
        return time.monotonic() - campaign.start

    if engine == "plain":
        rng = random.Random(args.seed)
        while True:
            test_one(fuzz_one(rng.choice(seeds), rng, reseal_p))

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        # Restart from a real file often, so that most inputs stay deep (coverage alone
        # favours the many cheap ways of breaking a header).
        if len(data) < 8 or rng.random() < 0.4:
            data = rng.choice(seeds)
        if rng.random() < 0.2:
            data = atheris.Mutate(data, max(max_size, len(data)))  # libFuzzer's own
        else:
            for _ in range(rng.choice((1, 1, 2))):
                data = mutate(data, rng)
        if rng.random() < reseal_p:
            data = reseal(data)
        return data[:max_size]

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"qlic-fuzz-{args.target}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(seeds):
        (workdir / f"seed-{i}").write_bytes(s)
    args.findings.mkdir(parents=True, exist_ok=True)
    max_len = max(len(s) for s in seeds) * 2 + 4096
    atheris.Setup([sys.argv[0], str(workdir), f"-max_len={max_len}",
                   f"-timeout={args.input_timeout}", "-rss_limit_mb=4096",
                   f"-artifact_prefix={args.findings}/{args.target}-", "-print_final_stats=1"],
                  test_one, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main("decode")
