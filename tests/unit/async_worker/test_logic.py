"""Pure logic of the async worker."""

from __future__ import annotations

import base64

from functions.async_worker.logic import dead_letter_reason


def test_dead_letter_reason_decodes_the_broker_detail() -> None:
    data = base64.b64encode(b"upstream\n  said no").decode()
    reason = dead_letter_reason({"knativeerrorcode": "503", "knativeerrordata": data})
    assert reason == "the worker failed after every retry (last status 503): upstream said no"
    assert dead_letter_reason({}).endswith("(last status ?)")
    assert dead_letter_reason({"knativeerrordata": "%%%"}).endswith("(last status ?)")
