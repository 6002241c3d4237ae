"""Thin client of the AKS agentPools API (azure-mgmt-containerservice).

The Machine hook runs inside Metacontroller's 10 s webhook timeout, so every call here is a single
HTTP round trip with short connect/read timeouts and no SDK retries, and no call waits on a
long-running operation (``polling=False``): ARM's answer is handed back and the caller re-syncs.

This is the only module that talks to ARM. It returns and raises the Machine side's types
(hooks/machine/pools.py); SDK errors are translated into four of them so callers never touch azure.*:
``PoolNotFound`` (the agent pool's own 404), ``ArmThrottled`` (429, with ``retry_after`` seconds, clamped),
``ArmRefused`` (ARM answered with a 4xx error: code + message; a 404 for the subscription, resource group
or cluster is one: the pool may well exist) and ``ArmUnreachable`` (connection failure, timeout, 5xx,
or an answer that is not what ARM documents, e.g. a 200 without a pool in it: transient, never a refusal).

The Azure SDK is imported lazily so that ``hooks`` stays light to import.
"""

from __future__ import annotations

import os
from typing import Any

from hooks.machine.pools import (
    ArmError,
    ArmRefused,
    ArmSettingsError,
    ArmThrottled,
    ArmUnreachable,
    Pool,
    PoolAlreadyExists,
    PoolNotFound,
    install_id_problem,
)

# Connect/read timeouts (seconds) per HTTP request and an overall cap for one SDK call; kept well
# under Metacontroller's default 10 s hook timeout.
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 8
DEFAULT_RETRY_AFTER_S = 10
# Metacontroller requeues after our Retry-After: a hostile or broken value must not park a Machine for days.
MAX_RETRY_AFTER_S = 300

# 404 codes that mean something above the pool is missing (a mistyped aks.env, a deleted cluster):
# the pool itself may exist, so they are refusals, never "pool gone".
PARENT_NOT_FOUND_CODES = frozenset({"ResourceGroupNotFound", "SubscriptionNotFound", "ParentResourceNotFound"})


class MalformedAnswer(ValueError):
    """ARM answered 2xx with a body that is not an agent pool."""


def is_pool_not_found(code: str, message: str) -> bool:
    """A 404 about the agent pool itself. ARM's generic ResourceNotFound counts only when it names the
    pool (agentPools/...); for the managed cluster it means the cluster is missing."""
    if code in PARENT_NOT_FOUND_CODES:
        return False
    if code == "ResourceNotFound":
        return "agentpools/" in message.lower()
    return True


def pool_from_rest(body: Any, expected_name: str | None = None) -> Pool:
    """The Pool in an agentPools REST body (the SDK model's ``as_dict()``); MalformedAnswer if it is none."""
    if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
        raise MalformedAnswer(f"ARM answered an agent pool without properties: {str(body)[:200]}")
    props = body["properties"]
    state = props.get("provisioningState")
    if not isinstance(state, str) or not state:
        raise MalformedAnswer(f"ARM answered an agent pool without properties.provisioningState: {str(body)[:200]}")
    if expected_name is not None and body.get("name") not in (None, expected_name):
        raise MalformedAnswer(f"ARM answered agent pool {body.get('name')!r} when asked for {expected_name!r}")
    error = (props.get("status") or {}).get("provisioningError") or {}
    count = props.get("count")
    system = body.get("systemData") or {}
    return Pool(
        name=str(body.get("name") or expected_name or ""),
        provisioning_state=state,
        vm_size=str(props.get("vmSize") or ""),
        node_labels=dict(props.get("nodeLabels") or {}),
        error_code=str(error.get("code") or ""),
        error_message=str(error.get("message") or ""),
        last_modified=str(system.get("lastModifiedAt") or system.get("createdAt") or ""),
        tags={str(k): str(v) for k, v in (props.get("tags") or body.get("tags") or {}).items()},
        count=count if isinstance(count, int) and not isinstance(count, bool) else None,
        scale_down_mode=str(props.get("scaleDownMode") or "Delete"),
    )


def _retry_after_seconds(response: Any) -> int:
    headers = getattr(response, "headers", None) or {}
    raw = headers.get("Retry-After") or headers.get("retry-after")
    try:
        seconds = float(str(raw))
    except (TypeError, ValueError):  # absent, or an HTTP date: our default
        return DEFAULT_RETRY_AFTER_S
    if seconds != seconds:  # NaN
        return DEFAULT_RETRY_AFTER_S
    return int(min(max(seconds, 1), MAX_RETRY_AFTER_S))


def _arm_code_and_message(error: Any) -> tuple[str, str]:
    """ARM's ``{"error": {"code", "message"}}`` from an HttpResponseError, falling back to text."""
    model = getattr(error, "error", None)
    code = getattr(model, "code", None) or ""
    message = getattr(model, "message", None) or ""
    if not code or not message:
        response = getattr(error, "response", None)
        try:
            body = response.json() if response is not None else None
        except ValueError:  # not JSON (or not text): keep what the SDK gave us
            body = None
        inner = body.get("error") if isinstance(body, dict) else None
        if isinstance(inner, dict):
            code = code or str(inner.get("code") or "")
            message = message or str(inner.get("message") or "")
    status = getattr(error, "status_code", None)
    return code or (f"HTTP{status}" if status else "Unknown"), message or str(getattr(error, "message", "") or error)


def translate(error: Exception) -> ArmError:
    """Map an azure-core / azure-identity exception to one of ours; re-raise anything else."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        DecodeError,
        DeserializationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(error, ArmError):
        return error
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        return ArmUnreachable(f"ARM unreachable: {error}")
    # ValueError: e.g. the SDK's json.loads of an empty or HTML 200 body
    if isinstance(error, (MalformedAnswer, DecodeError, DeserializationError, ValueError)) and not isinstance(
        error, ArmSettingsError
    ):
        return ArmUnreachable(f"ARM answered something that is not an agent pool (retrying): {str(error)[:300]}")
    if isinstance(error, HttpResponseError):
        status = error.status_code
        if status is None:
            if isinstance(error, ClientAuthenticationError):
                # Raised by the credential itself (no HTTP answer from ARM): a setup problem that
                # must show on the Machine, not a transient outage.
                return ArmRefused("AuthenticationFailed", str(error.message or error), None)
            return ArmUnreachable(f"ARM unreachable: {error}")
        if status < 400:  # the SDK raises on 2xx/3xx only when it cannot read the answer
            return ArmUnreachable(f"ARM answered HTTP {status} with an unreadable body (retrying): {str(error)[:300]}")
        code, message = _arm_code_and_message(error)
        if status == 404:
            if is_pool_not_found(code, message):
                return PoolNotFound(code, message)
            return ArmRefused(code, message, 404)
        if status == 412:
            return PoolAlreadyExists(code, message)
        if status == 429:
            return ArmThrottled(f"ARM throttled the request ({code}: {message})", _retry_after_seconds(error.response))
        if status >= 500:
            return ArmUnreachable(f"ARM answered HTTP {status} ({code}: {message})")
        return ArmRefused(code, message, status)
    raise error


class AgentPools:
    """Agent pools of one AKS cluster."""

    def __init__(
        self,
        credential: Any,
        subscription_id: str,
        resource_group: str,
        cluster_name: str,
        *,
        install_id: str,
        base_url: str | None = None,
        **client_kwargs: Any,
    ):
        from azure.mgmt.containerservice import ContainerServiceClient

        problem = install_id_problem(install_id)
        if problem:
            raise ArmSettingsError(problem)
        self.install_id = install_id
        self.resource_group = resource_group
        self.cluster_name = cluster_name
        client_kwargs.setdefault("connection_timeout", CONNECT_TIMEOUT_S)
        client_kwargs.setdefault("read_timeout", READ_TIMEOUT_S)
        # Metacontroller retries for us (and honours our 429 Retry-After); SDK retries would only
        # push a call past the hook timeout.
        client_kwargs.setdefault("retry_total", 0)
        client_kwargs.setdefault("timeout", CALL_TIMEOUT_S)
        if base_url:
            client_kwargs.setdefault("credential_scopes", [base_url.rstrip("/") + "/.default"])
        self._client = ContainerServiceClient(credential, subscription_id, base_url=base_url, **client_kwargs)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AgentPools:
        """Production construction: settings from the environment, DefaultAzureCredential.

        ``AZURE_SUBSCRIPTION_ID``, ``AZURE_RESOURCE_GROUP`` (the cluster's group, not ``MC_*``),
        ``AZURE_CLUSTER_NAME``, ``KAITO_INSTALL_ID`` (this install's identity, tagged on its pools);
        optional ``ARM_ENDPOINT`` for clouds other than Azure public.
        """
        env = os.environ if environ is None else environ
        names = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZURE_CLUSTER_NAME", "KAITO_INSTALL_ID")
        missing = [name for name in names if not env.get(name)]
        if missing:
            hint = ""
            if "KAITO_INSTALL_ID" in missing:
                hint = (
                    " (KAITO_INSTALL_ID: this cluster's kube-system namespace UID, "
                    "kubectl get namespace kube-system -o jsonpath='{.metadata.uid}')"
                )
            raise ArmSettingsError("the Machine hook needs ARM settings; missing: " + ", ".join(missing) + hint)
        from azure.identity import DefaultAzureCredential

        return cls(
            DefaultAzureCredential(),
            env["AZURE_SUBSCRIPTION_ID"],
            env["AZURE_RESOURCE_GROUP"],
            env["AZURE_CLUSTER_NAME"],
            install_id=env["KAITO_INSTALL_ID"],
            base_url=env.get("ARM_ENDPOINT") or None,
        )

    def get(self, name: str) -> Pool | None:
        """The pool, or None when ARM answers 404."""
        try:
            pool = self._client.agent_pools.get(self.resource_group, self.cluster_name, name)
            return pool_from_rest(pool.as_dict() if hasattr(pool, "as_dict") else pool, name)
        except Exception as error:  # translated below; anything unknown is re-raised
            translated = translate(error)
            if isinstance(translated, PoolNotFound):
                return None
            raise translated from error

    def create(self, name: str, body: dict[str, Any]) -> None:
        """PUT the pool (REST-shaped ``{"properties": {...}}`` body) without waiting for it.

        Create-only (``If-None-Match: *``): when an overlapping or retried sync already created the
        pool, ARM answers 412 without touching it, and that counts as created.
        """
        from azure.core import MatchConditions

        try:
            self._client.agent_pools.begin_create_or_update(  # type: ignore[call-overload]  # REST-shaped dict body
                self.resource_group,
                self.cluster_name,
                name,
                body,
                polling=False,
                match_condition=MatchConditions.IfMissing,
            )
        except Exception as error:
            translated = translate(error)
            if isinstance(translated, PoolAlreadyExists):
                return
            if isinstance(translated, PoolNotFound):
                # A 404 on PUT means the cluster or resource group is not there: a refusal to show.
                raise ArmRefused(translated.code, translated.message, 404) from error
            raise translated from error

    def update(self, name: str, body: dict[str, Any]) -> None:
        """PUT the full body over an existing pool (e.g. a new count) without waiting: one round trip.

        No ``If-None-Match`` here: the pool exists, and this PUT is meant to change it.
        """
        try:
            self._client.agent_pools.begin_create_or_update(  # type: ignore[call-overload]  # REST-shaped dict body
                self.resource_group, self.cluster_name, name, body, polling=False
            )
        except Exception as error:
            translated = translate(error)
            if isinstance(translated, PoolNotFound):
                raise ArmRefused(translated.code, translated.message, 404) from error
            raise translated from error

    def delete(self, name: str) -> bool:
        """DELETE the pool without waiting. True when ARM accepted a deletion, False when gone."""
        try:
            poller = self._client.agent_pools.begin_delete(
                self.resource_group,
                self.cluster_name,
                name,
                polling=False,
                cls=lambda pipeline_response, _body, _headers: pipeline_response.http_response.status_code,
            )
            # With polling=False, result() only hands the initial response to ``cls``: no waiting.
            status = poller.result()
        except Exception as error:
            translated = translate(error)
            if isinstance(translated, PoolNotFound):
                return False
            raise translated from error
        return status != 204

    def list(self) -> list[Pool]:
        """Every agent pool of the cluster (the orphan sweep picks ours by tag and node label)."""
        try:
            return [
                pool_from_rest(p.as_dict() if hasattr(p, "as_dict") else p)
                for p in self._client.agent_pools.list(self.resource_group, self.cluster_name)
            ]
        except Exception as error:
            raise translate(error) from error

    def close(self) -> None:
        self._client.close()
