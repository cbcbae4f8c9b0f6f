"""A short, deterministic run of the fuzzing harness (the long campaigns are
``fuzz_decode.py`` and ``fuzz_model.py``): seeded mutations of real streams and of the tiny
model, most of them re-sealed so they reach the entropy decoder, the network and the model
validator. Any exception other than a ``QlicError`` fails the test."""

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def test_reseal_makes_mutations_pass_the_checksums(tiny_model):
    seed = harness.make_seed_streams(tiny_model)[2]
    flipped = bytearray(seed)
    flipped[len(seed) // 2] ^= 0x10
    assert "checksum" in harness.check_decode(bytes(flipped))
    assert "checksum" not in harness.check_decode(harness.reseal_qlic(bytes(flipped)))
    model = bytearray(harness.model_bytes(tiny_model))
    model[-100] ^= 1
    assert "hash mismatch" in harness.ModelProbe()(bytes(model))
    assert "hash mismatch" not in harness.ModelProbe()(harness.reseal_model(bytes(model)))


def test_short_decode_campaign(tiny_model):
    seeds = harness.make_seed_streams(tiny_model)
    campaign = harness.Campaign()
    rng = random.Random(1234)
    for _ in range(600):
        campaign.run(harness.check_decode, harness.fuzz_qlic_input(rng.choice(seeds), rng),
                     "decode")
    assert not campaign.findings, campaign.findings
    deep = sum(n for k, n in campaign.outcomes.items()
               if k == "decoded" or "entropy-coded" in k)
    assert deep >= 150, campaign.outcomes  # a good share gets past the checksums


def test_short_model_campaign(tiny_model):
    seed = harness.model_bytes(tiny_model)
    probe = harness.ModelProbe()
    campaign = harness.Campaign()
    rng = random.Random(99)
    for _ in range(80):
        campaign.run(probe, harness.fuzz_model_input(seed, rng), "model")
    assert not campaign.findings, campaign.findings
    assert sum(n for k, n in campaign.outcomes.items() if k.startswith("loaded")) >= 5
    assert sum(n for k, n in campaign.outcomes.items() if "hash mismatch" not in k) >= 60
