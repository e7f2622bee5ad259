"""The triggers' strict base64 decoding (handlers.triggers.unbase64), the same on Python 3.10-3.13.

Kinesis, SNS, SQS, DynamoDB and API Gateway hand records over as base64 text;
anything but padded RFC 4648 base64 is a broken transport, parked, never guessed at.
"""

from __future__ import annotations

import base64
import binascii
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.triggers import unbase64

NEAR_BASE64 = st.text(alphabet="QUJDa+/=\n -_é\x00", max_size=14)


@given(st.binary(max_size=64))
def test_what_base64_encodes_decodes_back(data):
    assert unbase64(base64.b64encode(data).decode("ascii"), "data") == data


@pytest.mark.parametrize("text", [
    "QQ", "QQ=", "QUJ", "Q", "QUJDQ", "=", "==QQ", "QQ==QQ==", "QUJD=", "QUJD==", "QQ==\n", "QU JD",
    "QUJD\n", "QU-_", "QUJ\u00e9", "QUJD\x00",
])
def test_anything_but_padded_base64_is_refused_naming_the_field(text):
    with pytest.raises(ValueError, match=r"^kinesis\.data is not valid base64 "):
        unbase64(text, "kinesis.data")


@pytest.mark.parametrize("value", [b"QUJD", None, 3, ["QUJD"]])
def test_a_non_string_is_refused_naming_its_type(value):
    with pytest.raises(ValueError, match=rf"^Sns\.Message must be a base64 string, not {type(value).__name__}$"):
        unbase64(value, "Sns.Message")


@pytest.mark.skipif(sys.version_info < (3, 13), reason="a2b_base64(strict_mode=True) refuses surplus padding from 3.13")
@given(NEAR_BASE64)
def test_agrees_with_the_standard_librarys_strict_mode(text):
    try:
        expected = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        expected = None
    try:
        got = unbase64(text, "text")
    except ValueError:
        got = None
    assert got == expected
