"""The media plane's errors as E<code>s: one table, by error and step."""

from __future__ import annotations

import pytest

from rtpp.commands.errors import CommandError, ECode, Step, media_ecode, media_step
from rtpp.media.errors import (
    BindFailed,
    DescriptorsExhausted,
    Draining,
    MediaError,
    Overloaded,
    PortsExhausted,
)


@pytest.mark.parametrize(
    ("error", "step", "code"),
    [
        (Draining(), Step.NEW_SESSION, ECode.SLOWSHTDN),
        (Overloaded(), Step.NEW_SESSION, ECode.OVERLOAD),
        (Draining(), Step.ANY, ECode.SLOWSHTDN),
        (PortsExhausted(), Step.NEW_SESSION, ECode.LSTFAIL_2),
        (DescriptorsExhausted(), Step.NEW_SESSION, ECode.LSTFAIL_2),
        (BindFailed(), Step.LEG, ECode.LSTFAIL_1),
        (PortsExhausted(), Step.LEG, ECode.LSTFAIL_1),
        (DescriptorsExhausted(), Step.COPY, ECode.CPYFAIL),
        (BindFailed(), Step.COPY, ECode.CPYFAIL),
    ],
)
def test_each_media_error_has_its_code_at_each_step(error, step, code):
    assert media_ecode(error, step) is code
    with pytest.raises(CommandError) as info, media_step(step):
        raise error
    assert info.value.ecode is code


def test_an_error_without_a_code_at_that_step_is_not_turned_into_one():
    assert media_ecode(PortsExhausted()) is None
    with pytest.raises(PortsExhausted), media_step(Step.ANY):
        raise PortsExhausted
    assert media_ecode(MediaError()) is None
