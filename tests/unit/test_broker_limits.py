"""The broker's resource limits (broker/config.py ``Limits``): each checked
before anything is proposed, and the replicated ones again, deterministically,
when the command is applied."""

from __future__ import annotations

from typing import Any

import pytest

from raftmq.broker.config import Limits
from raftmq.broker.errors import NameTooLong, PropertyTooLong
from raftmq.broker.produce import ProduceRequest, parse_produce

LIMITS = Limits(max_property_key_chars=4, max_property_value_chars=8, max_producer_id_bytes=6)


def parse(body: dict[str, Any]) -> ProduceRequest:
    return parse_produce(body, LIMITS)


def test_property_names_and_values_are_bounded() -> None:
    assert parse({"messages": [{"body": "x", "properties": {"abcd": "12345678"}}]}).messages[0].properties
    with pytest.raises(PropertyTooLong, match="a property name of 5 characters exceeds the limit of 4") as err:
        parse({"messages": [{"body": "x", "properties": {"abcde": "1"}}]})
    assert (err.value.code, err.value.http_status) == ("property_too_long", 400)
    with pytest.raises(PropertyTooLong, match=r"messages\[1\].properties\['a'\]: a value of 9 characters"):
        parse({"messages": [{"body": "x"}, {"body": "x", "properties": {"a": "123456789"}}]})


def test_the_producer_id_is_bounded_in_utf8_bytes() -> None:
    assert parse({"messages": [{"body": "x"}], "producer_id": "abcdef", "sequence": 1}).producer_id == "abcdef"
    with pytest.raises(NameTooLong, match="longer than 6 bytes") as err:
        parse({"messages": [{"body": "x"}], "producer_id": "abcdefg", "sequence": 1})
    assert (err.value.code, err.value.http_status) == ("name_too_long", 400)
    with pytest.raises(NameTooLong):
        parse({"messages": [{"body": "x"}], "producer_id": "ééé" + "é", "sequence": 1})  # 4 chars, 8 bytes


@pytest.mark.parametrize("field", ["max_property_key_chars", "max_property_value_chars", "max_producer_id_bytes",
                                   "max_group_name_chars", "max_topics", "max_groups"])
def test_every_new_limit_is_validated(field: str) -> None:
    with pytest.raises(ValueError, match=f"limits.{field}: must be at least 1"):
        Limits(**{field: 0})

