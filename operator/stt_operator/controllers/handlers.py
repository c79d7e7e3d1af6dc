"""Kopf registrations. Each handler is a thin shell: lock the object, call its reconciler.

Change handlers (create/update/resume) give a fast reaction to spec edits; a timer re-checks
the world (Deployments becoming Available, models becoming Ready) because those changes happen
on other objects. The reconcilers are level-triggered, so it does not matter which one fires.
"""

from __future__ import annotations

import threading
from typing import Any

import kopf

from stt_operator import API_GROUP, API_VERSION
from stt_operator.controllers import abtest, context, modeldeployment, sttmodel

_INTERVAL = context.current().settings.reconcile_interval_s


@kopf.on.startup()
def configure_kopf(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Kopf's bookkeeping goes to annotations, never into `status` (the API owns status).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.posting.level = 20  # INFO and above become Kubernetes Events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.peering.mandatory = False
    # Our handlers are sync; a small pool keeps concurrent reconciles bounded.
    settings.execution.max_workers = 8


def _locked(memo: kopf.Memo) -> threading.Lock:
    return memo.setdefault("reconcile_lock", threading.Lock())


# --- STTModel -------------------------------------------------------------------------------------


@kopf.on.create(API_GROUP, API_VERSION, "sttmodels")
@kopf.on.update(API_GROUP, API_VERSION, "sttmodels", field="spec")
@kopf.on.resume(API_GROUP, API_VERSION, "sttmodels")
def sttmodel_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    with _locked(memo):
        sttmodel.reconcile(body, patch, context.current())


@kopf.timer(API_GROUP, API_VERSION, "sttmodels", interval=_INTERVAL * 3, initial_delay=_INTERVAL)
def sttmodel_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    with _locked(memo):
        sttmodel.reconcile(body, patch, context.current())


@kopf.timer(
    API_GROUP,
    API_VERSION,
    "sttmodels",
    interval=context.current().settings.analytics_interval_s,
    initial_delay=_INTERVAL,
)
def sttmodel_analytics(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    sttmodel.refresh_analytics(body, patch, context.current())


# --- ModelDeployment -------------------------------------------------------------------------------


@kopf.on.create(API_GROUP, API_VERSION, "modeldeployments")
@kopf.on.update(API_GROUP, API_VERSION, "modeldeployments", field="spec")
@kopf.on.resume(API_GROUP, API_VERSION, "modeldeployments")
def modeldeployment_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    with _locked(memo):
        modeldeployment.reconcile(body, patch, context.current())


@kopf.timer(API_GROUP, API_VERSION, "modeldeployments", interval=_INTERVAL)
def modeldeployment_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    with _locked(memo):
        modeldeployment.reconcile(body, patch, context.current())


# --- ABTest ---------------------------------------------------------------------------------------


@kopf.on.create(API_GROUP, API_VERSION, "abtests")
@kopf.on.update(API_GROUP, API_VERSION, "abtests", field="spec")
@kopf.on.resume(API_GROUP, API_VERSION, "abtests")
def abtest_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    with _locked(memo):
        abtest.reconcile(body, patch, context.current())


@kopf.timer(API_GROUP, API_VERSION, "abtests", interval=_INTERVAL, initial_delay=_INTERVAL)
def abtest_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    with _locked(memo):
        abtest.reconcile(body, patch, context.current())


@kopf.on.delete(API_GROUP, API_VERSION, "abtests")
def abtest_deleted(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    # Give the endpoint back (route to its stable revision, release the hold) before the
    # ABTest's owned variants are garbage-collected.
    with _locked(memo):
        abtest.reconcile(body, patch, context.current(), deleting=True)
