"""Errors cross process boundaries whole."""

from __future__ import annotations

import pickle
from types import MappingProxyType

import pytest

from geno_lewm.errors import (
    BackendUnavailableError,
    CollapseDetectedError,
    DistributedError,
    GenoLeWMError,
    InputError,
    TrainingAlertError,
)
from geno_lewm.integrations.sinks import SinkUnavailableError
from geno_lewm.training.collapse import CollapseAlert

_ERRORS = [
    InputError("'kl_reg' must be finite: got nan", details={"field": "kl_reg", "row": 3}),
    SinkUnavailableError("WandbSink", "wandb", where="sinks[0]"),
    BackendUnavailableError("torch", "torch"),
    DistributedError("rank 1 failed: boom"),
    TrainingAlertError("alerts in force", alerts=("x",), step=7),
    CollapseDetectedError("collapse", alerts=(CollapseAlert("kl_reg", 12.0, 10.0),), step=500),
]


@pytest.mark.parametrize("error", _ERRORS, ids=lambda error: type(error).__name__)
def test_every_error_survives_pickling_with_its_message_and_attributes(error: GenoLeWMError) -> None:
    """A pickled error comes back of its class, with its message, read-only details and attributes."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error) and copy.args == error.args
    assert set(vars(copy)) == set(vars(error))
    for name, value in vars(error).items():
        if isinstance(value, MappingProxyType):
            assert isinstance(getattr(copy, name), MappingProxyType)
            assert dict(getattr(copy, name)) == dict(value)
        else:
            assert repr(getattr(copy, name)) == repr(value)
    if isinstance(error, ImportError):
        assert isinstance(copy, ImportError) and copy.name == error.name


def test_an_unpickled_error_is_still_raised_and_caught_as_its_builtin() -> None:
    """The copy is caught by the builtin class a caller expects (ValueError for bad input)."""
    copy = pickle.loads(pickle.dumps(InputError("bad", details={"field": "x"})))
    with pytest.raises(ValueError, match="bad"):
        raise copy
