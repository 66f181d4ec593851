"""Why a cluster worker failed, as the run's one line says it (`service/cluster/pool.py`): the
worker's own error, which Ray wraps in errors whose first line only names the actor."""

from __future__ import annotations

import pytest

from service.cluster.pool import _reason

exceptions = pytest.importorskip("ray.exceptions")


def test_a_workers_own_error_is_the_line_not_rays_wrapping() -> None:
    own = ValueError("personas.path: no such file\n(the rest of its message)")
    wrapped = exceptions.RayTaskError("SampleWorker.start", "Traceback (most recent call last): ...", own)
    assert str(wrapped).splitlines()[0] != "personas.path: no such file"  # Ray's line names the actor
    assert _reason(wrapped) == "personas.path: no such file"
    assert _reason(wrapped.as_instanceof_cause()) == "personas.path: no such file"


def test_an_actor_that_died_is_rays_first_line() -> None:
    died = exceptions.ActorDiedError()
    assert _reason(died) == str(died).strip().splitlines()[0]
    assert _reason(RuntimeError()) == "RuntimeError"
