"""``eventlive serve --workers``: how many processes, and the secrets they share."""

from __future__ import annotations

import argparse
import os

import pytest

from shim import cli
from shim.serve import workers


def test_workers_auto_is_one_per_usable_core_and_numbers_are_taken_as_given() -> None:
    assert workers.count("auto") == len(os.sched_getaffinity(0))
    assert workers.count("3") == 3
    parsed = cli._parser().parse_args(["serve"]).workers
    assert parsed == workers.count(workers.DEFAULT)


@pytest.mark.parametrize("text", ["0", "-2", "two", ""])
def test_workers_refuses_what_is_not_a_positive_number_or_auto(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        workers.count(text)


def test_serve_gives_its_workers_one_ticket_secret_and_keeps_a_given_one() -> None:
    """Several workers of one server accept each other's SSE tickets: one secret drawn for
    all of them; one worker draws its own; an operator's value is never replaced."""
    many: dict[str, str] = {}
    workers.share_secrets(2, many)
    assert len(many[workers.SHARED_PER_SERVER[0]]) == 64
    one: dict[str, str] = {}
    workers.share_secrets(1, one)
    assert one == {}
    given = {workers.SHARED_PER_SERVER[0]: "operator-secret"}
    workers.share_secrets(4, given)
    assert given == {workers.SHARED_PER_SERVER[0]: "operator-secret"}
