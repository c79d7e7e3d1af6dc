"""Process-wide state of the running operator: settings and the API facade.

Set once at start-up; handlers read it. Nothing about any resource lives here — that
belongs in the resource's status.
"""

from __future__ import annotations

from dataclasses import dataclass

from stt_operator.services import notify
from stt_operator.services.kube import APPLY_THREADS, Kube, load_api_client
from stt_operator.settings import OperatorSettings


@dataclass
class OperatorContext:
    settings: OperatorSettings
    kube: Kube


_current: OperatorContext | None = None


def configure(settings: OperatorSettings, kubeconfig: str | None = None) -> OperatorContext:
    global _current
    client = load_api_client(kubeconfig, pool_size=settings.workers + APPLY_THREADS + 4)
    _current = OperatorContext(settings=settings, kube=Kube(client))
    notify.configure(settings.notifications)  # webhook senders, off without receivers
    # Import for the side effect of registering handlers, after the context exists.
    from stt_operator.controllers import handlers  # noqa: F401

    return _current


def current() -> OperatorContext:
    if _current is None:
        raise RuntimeError("operator context used before configure()")
    return _current
