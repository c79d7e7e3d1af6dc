"""Watch streams are renewed every `watch_timeout_s`: a stream the apiserver keeps open but
stops feeding cannot hide events for longer than that."""

from __future__ import annotations

import argparse
import itertools

import kopf
import pytest
from pydantic import ValidationError

from stt_operator.controllers.kopf_tuning import tune_kopf
from stt_operator.runner import add_arguments
from stt_operator.settings import OperatorSettings


def test_the_default_renews_each_stream_within_a_minute() -> None:
    settings = kopf.OperatorSettings()
    tune_kopf(settings, OperatorSettings())
    assert settings.watching.server_timeout == 60
    assert OperatorSettings().log_watch_streams is False


@pytest.mark.parametrize("seconds", [0, 9, 1801])
def test_timeouts_outside_the_bounds_are_refused(seconds: int) -> None:
    with pytest.raises(ValidationError, match="watch_timeout_s"):
        OperatorSettings(watch_timeout_s=seconds)


def test_kopf_renews_streams_at_the_configured_timeout() -> None:
    settings = kopf.OperatorSettings()
    tune_kopf(settings, OperatorSettings(watch_timeout_s=45))
    assert settings.watching.server_timeout == 45
    # The client gives up a little later than the server, so a healthy stream ends server-side.
    assert settings.watching.client_timeout == 75


def test_flag_and_environment_reach_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--watch-timeout", "120"])
    assert OperatorSettings.load(None, watch_timeout_s=args.watch_timeout_s).watch_timeout_s == 120
    monkeypatch.setenv("STT_OPERATOR_WATCH_TIMEOUT_S", "90")
    monkeypatch.setenv("STT_OPERATOR_LOG_WATCH_STREAMS", "true")
    loaded = OperatorSettings.load(None)
    assert loaded.watch_timeout_s == 90 and loaded.log_watch_streams


def test_api_failures_are_retried_without_end() -> None:
    settings = kopf.OperatorSettings()
    tune_kopf(settings, OperatorSettings())
    delays = list(itertools.islice(settings.networking.error_backoffs, 12))
    assert delays[:6] == [1, 2, 4, 8, 15, 30] and set(delays[5:]) == {30}
    # Iterable afresh for every request (Kopf walks it once per failing request).
    assert next(iter(settings.networking.error_backoffs)) == 1
