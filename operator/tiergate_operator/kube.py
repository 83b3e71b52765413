"""Every Kubernetes API call the operator makes: writes, and the one read watches cannot
give (who holds a name the operator's label-filtered watches do not see).

Credentials come from the kubeconfig or the in-cluster service account, loaded by
the ``kubernetes`` client; requests go through one pooled ``aiohttp.ClientSession``.
HTTP and transport failures (timeouts, refused connections) become ``KubeError``
subclasses, so callers never see transport types.

Writes never take over someone else's object: ``create`` is a plain POST (409 when the
name is taken), ``apply`` (server-side apply) carries the uid of the object of ours it
updates, which the API server checks, and ``delete`` has the same uid as a precondition.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
from collections import Counter
from datetime import datetime
from typing import Any

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from tiergate_operator.ownership import fields_handed_to_apply
from tiergate_operator.refs import ObjectRef
from tiergate_operator.registry import EVENT, KINDS, OPERATOR

__all__ = [
    "FIELD_MANAGER",
    "Conflict",
    "Forbidden",
    "Invalid",
    "KubeApi",
    "KubeError",
    "NotFound",
    "ObjectRef",
    "Unreachable",
    "load_client_configuration",
]

FIELD_MANAGER = OPERATOR


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    pass


class Forbidden(KubeError):
    pass


class Invalid(KubeError):
    pass


class Unreachable(KubeError):
    """No answer: a timeout or a failed connection (status 0)."""


_ERRORS: dict[int, type[KubeError]] = {403: Forbidden, 404: NotFound, 409: Conflict, 422: Invalid}


def load_client_configuration() -> k8s_client.Configuration:
    """The kubeconfig ($KUBECONFIG or ~/.kube/config), else the in-cluster service account."""
    configuration = k8s_client.Configuration()
    kubeconfig = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if os.path.exists(kubeconfig.split(os.pathsep)[0]):
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
        return configuration
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException as error:
        raise KubeError(
            0, "NoCredentials", f"no kubeconfig at {kubeconfig} and not in a cluster ({error})"
        ) from error
    return configuration


class KubeApi:
    """The operator's writes: server-side apply, delete, status patches and events."""

    def __init__(self, configuration: k8s_client.Configuration) -> None:
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        if not configuration.verify_ssl:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        headers = {}
        if token := configuration.api_key.get("authorization") or configuration.api_key.get(
            "BearerToken"
        ):
            headers["Authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
        self._host, self._ssl, self._headers = configuration.host.rstrip("/"), context, headers
        self._session: aiohttp.ClientSession | None = None
        # Requests by verb, for the scale benchmark and for tests that assert "no writes".
        self.writes: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()

    def _client(self) -> aiohttp.ClientSession:
        # aiohttp rather than httpx: at a thousand concurrent-ish writes, httpx's connection
        # pool bookkeeping cost the operator more CPU than the writes themselves (profiled).
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=30),
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=16),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> dict[str, Any]:
        (self.reads if method == "GET" else self.writes)[method] += 1
        try:
            async with self._client().request(
                method,
                f"{self._host}/{path}",
                params=params,
                data=body,
                headers={"Content-Type": content_type, "Accept": accept},
            ) as response:
                raw = await response.read()
        except TimeoutError as error:
            raise Unreachable(0, "Timeout", f"no answer from the API server ({error})") from error
        except aiohttp.ClientError as error:
            raise Unreachable(0, "ConnectionError", str(error) or type(error).__name__) from error
        if response.status >= 400:
            try:
                error_body = json.loads(raw)
                reason, message = (
                    error_body.get("reason", ""),
                    error_body.get("message", raw.decode()),
                )
            except ValueError:
                reason, message = "", raw.decode(errors="replace")
            error_type = _ERRORS.get(response.status, KubeError)
            raise error_type(response.status, reason, message)
        return json.loads(raw) if raw else {}

    async def apply(self, manifest: dict[str, Any], uid: str | None = None) -> dict[str, Any]:
        """Server-side apply as ``tiergate-operator``, taking ownership of conflicting fields.

        With ``uid`` (the operator's callers always pass it), the API server applies only to
        the object with that uid (409 otherwise, also when there is none): an object that
        replaced ours under the same name is never taken over.
        """
        if uid is not None:
            manifest = {**manifest, "metadata": {**manifest["metadata"], "uid": uid}}
        return await self._request(
            "PATCH",
            ObjectRef.of(manifest).path(),
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=json.dumps(manifest).encode(),
            content_type="application/apply-patch+yaml",
        )

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """A plain create (POST): ``Conflict`` (409 AlreadyExists) when the name is taken."""
        ref = ObjectRef.of(manifest)
        return await self._request(
            "POST",
            KINDS[ref.kind].collection_path(ref.namespace),
            params={"fieldManager": FIELD_MANAGER},
            body=json.dumps(manifest).encode(),
        )

    async def hand_fields_to_apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """Turn the fields our create recorded (an ``Update``) into our server-side apply's,
        as ``kubectl`` does when it moves to server-side apply; otherwise a later apply
        could never remove a field the create set. Fails (409/422) if ``body`` is stale."""
        metadata = body["metadata"]
        fields = fields_handed_to_apply(metadata.get("managedFields") or [])
        patch = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": metadata["resourceVersion"],
            },
            {"op": "replace", "path": "/metadata/managedFields", "value": fields},
        ]
        return await self._request(
            "PATCH",
            ObjectRef.of(body).path(),
            params={"fieldManager": FIELD_MANAGER},
            body=json.dumps(patch).encode(),
            content_type="application/json-patch+json",
        )

    async def get_metadata(self, ref: ObjectRef) -> dict[str, Any] | None:
        """The metadata of whatever holds ``ref``'s name (labels, owners, field managers),
        or None: what a name the watches do not show is held by, without its content."""
        try:
            found = await self._request(
                "GET",
                ref.path(),
                accept="application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            )
        except NotFound:
            return None
        return {**found, "kind": ref.kind}

    async def delete(self, ref: ObjectRef, uid: str | None = None) -> None:
        """Delete ``ref``; with ``uid``, only the object with that uid (someone else's object
        that took the name meanwhile is left alone). Gone already: done."""
        options: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        with contextlib.suppress(NotFound):
            try:
                await self._request("DELETE", ref.path(), body=json.dumps(options).encode())
            except Conflict:
                if uid is None:
                    raise

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        """The object, or None when there is none."""
        try:
            return await self._request("GET", ref.path())
        except NotFound:
            return None

    async def delete_unchanged(
        self, ref: ObjectRef, uid: str, resource_version: str
    ) -> dict[str, Any] | None:
        """Delete ``ref`` only as it was read (its uid and resourceVersion): the object as
        deleted (still there while a finalizer holds it), or None when it changed or is gone."""
        options = {
            "propagationPolicy": "Background",
            "preconditions": {"uid": uid, "resourceVersion": resource_version},
        }
        try:
            return await self._request("DELETE", ref.path(), body=json.dumps(options).encode())
        except (Conflict, NotFound):
            return None

    async def merge_patch(
        self,
        ref: ObjectRef,
        patch: dict[str, Any],
        resource_version: str | None = None,
        subresource: str = "",
    ) -> dict[str, Any]:
        """A JSON merge patch; with ``resource_version``, only of the object as it was read
        (``Conflict`` otherwise)."""
        if resource_version is not None:
            patch = {
                **patch,
                "metadata": {**patch.get("metadata", {}), "resourceVersion": resource_version},
            }
        return await self._request(
            "PATCH",
            ref.path() + (f"/{subresource}" if subresource else ""),
            body=json.dumps(patch).encode(),
            content_type="application/merge-patch+json",
        )

    async def patch_status(self, ref: ObjectRef, status: dict[str, Any]) -> dict[str, Any]:
        return await self._request(
            "PATCH",
            ref.path() + "/status",
            body=json.dumps({"status": status}).encode(),
            content_type="application/merge-patch+json",
        )

    async def event(
        self, involved: dict[str, Any], *, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        metadata = involved["metadata"]
        timestamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            **EVENT.type_meta(),
            "metadata": {
                "generateName": f"{metadata['name']}.",
                "namespace": metadata["namespace"],
            },
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata.get("uid", ""),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
        }
        collection = EVENT.collection_path(metadata["namespace"])
        await self._request("POST", collection, body=json.dumps(event).encode())
