"""What travels between a cluster worker and the driver (`service/cluster/protocol.py`): an
error that ended a sample or a script's screening reaches the other side as something Ray can
rebuild there, so one odd error cannot fail a whole report (and pass for a lost worker)."""

from __future__ import annotations

import pickle
import threading

from llm import RequestFailed, TransportError
from service.cluster.protocol import Report, portable

KEY = "sk-" + "a1" * 12  # shaped like a provider's key


class HoldsALock(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def travelled(report: Report) -> Report:
    return pickle.loads(pickle.dumps(report))


def test_an_error_that_pickles_but_cannot_be_rebuilt_travels_as_its_type_and_message() -> None:
    error = TransportError("reset", f"connection reset (key {KEY})")
    pickle.dumps(error)  # it pickles: only rebuilding it fails
    report = Report(finished=[])
    report.finished.append((None, portable(error)))  # type: ignore[arg-type]
    (_, arrived), *_ = travelled(report).finished
    assert isinstance(arrived, RuntimeError)
    assert "TransportError: connection reset" in str(arrived)
    assert KEY not in str(arrived)  # the message is redacted on the way


def test_an_error_that_does_not_pickle_travels_as_its_type_and_message() -> None:
    arrived = pickle.loads(pickle.dumps(portable(HoldsALock("the store is locked"))))
    assert isinstance(arrived, RuntimeError)
    assert str(arrived) == "HoldsALock: the store is locked"


def test_an_error_that_travels_as_it_is_keeps_its_type() -> None:
    error = RequestFailed("gave up after 5 tries")
    assert portable(error) is error
    arrived = pickle.loads(pickle.dumps(portable(error)))
    assert type(arrived) is RequestFailed and str(arrived) == "gave up after 5 tries"
