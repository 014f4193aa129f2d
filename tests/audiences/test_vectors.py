"""The official Google and Meta test vectors (tests/data/audience_vectors.json,
copied verbatim from the project specs; see tests/data/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.audiences.normalise import Rejected, normalise, normalise_and_hash, sha256_hex

VECTORS_PATH = Path(__file__).resolve().parents[1] / "data/audience_vectors.json"
VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
CASES = [
    pytest.param(platform, case, id=f"{platform}-{case['field']}-{case['input'].strip()}")
    for platform, cases in VECTORS.items()
    for case in cases
]
# The platforms publish US vectors and format them with US as the default region: a
# number without "+" ("1-800-555-0100", "15559876543") is a US number with its trunk
# "1". Nudge reads such a number in the user's country, else the shop's, so the test
# says which: with the shop's default, CN, "1-800-555-0100" is a Chinese mobile number
# (see test_a_number_without_plus_is_read_in_the_given_region).
REGION = {"shop_country": "US"}


def test_the_vectors_file_is_the_official_one():
    assert set(VECTORS) == {"google", "meta"}
    assert len(CASES) == 14


@pytest.mark.parametrize(("platform", "case"), CASES)
def test_vector(platform, case):
    if case.get("rejected"):
        with pytest.raises(Rejected):
            normalise(platform, case["field"], case["input"], **REGION)
        return
    assert normalise(platform, case["field"], case["input"], **REGION) == case["normalised"]
    if "sha256" in case:
        assert sha256_hex(case["normalised"]) == case["sha256"]
        hashed = normalise_and_hash(platform, case["field"], case["input"], **REGION)
        assert hashed == case["sha256"]
    if case.get("hashed") is False:
        plain = normalise_and_hash(platform, case["field"], case["input"], **REGION)
        assert plain == case["normalised"]


def test_a_number_without_plus_is_read_in_the_given_region():
    assert normalise("google", "phone", "1-800-555-0100", shop_country="CN") == "+8618005550100"
    assert normalise("google", "phone", "1-800-555-0100", user_country="US") == "+18005550100"
    assert normalise("meta", "phone", "06 1234 5678", user_country="IT") == "390612345678"
    with pytest.raises(Rejected, match="no country code, and no country"):
        normalise("google", "phone", "1-800-555-0100")


def test_platforms_differ_where_the_specs_say():
    assert normalise("google", "email", "A.B+x@Gmail.com") == "ab@gmail.com"
    assert normalise("meta", "email", "A.B+x@Gmail.com") == "a.b+x@gmail.com"
    assert normalise("google", "phone", "+1 (555) 987-6543") == "+15559876543"
    assert normalise("meta", "phone", "+1 (555) 987-6543") == "15559876543"
    assert normalise("meta", "phone", "138 1234 5678", shop_country="CN") == "8613812345678"
    assert normalise("google", "last_name", " O'Brien ") == "obrien"
    assert normalise("meta", "country", " uS ") == "us"
