"""The exchange-isolation fuzzer as part of the normal suite: a short bounded run (fixed seeds
and one random seed, printed), with the section-1 shapes (bodies on HEAD/204/304 answers,
late forged bytes) in the default generation. The longer runs: `python -m
tests.differential.fuzz --seconds 60` (CI) or more, on demand."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from tests.differential.fuzz import report, run_round

FIXED_SEEDS = (1, 2)
SECONDS = 3.5  # per seed: about 10 s of requests in all


RANDOM_SEED = random.SystemRandom().randrange(1000, 2**31)  # printed with the round's summary


@pytest.mark.parametrize("seed", [*FIXED_SEEDS, pytest.param(RANDOM_SEED, id="random")])
async def test_no_exchange_leaks_into_another(seed: int, tmp_path: Path) -> None:
    result = await run_round(seed, SECONDS, tmp=tmp_path)
    text = io.StringIO()
    report(result, text)
    print(text.getvalue())
    assert result.outcome.stats["own answers"] > 50, text.getvalue()  # it did exercise the proxy
    assert not result.outcome.violations, text.getvalue()
    assert not result.log_problems, text.getvalue()  # no traceback: bad answers never crash
