"""Serving the admission webhook: TLS, Kopf's WebhookServer, and registration of the configuration.

`configure_webhook` is the one call the operator's startup makes. With SESAME_WEBHOOK=off it
installs a server that never listens (Kopf refuses to start with admission handlers and no
server); with `local` or `service` it prepares the certificates and a `kopf.WebhookServer`. The
MutatingWebhookConfiguration is written when that server is actually listening, and again when
the certificate files change (cert-manager renewals, or Sesame rotating the certificates it
generated), so the API server is never pointed at a port nobody serves with a CA not in use.
It is deliberately NOT removed at exit: with `failurePolicy: Fail` a stopped Sesame refuses
labelled pods instead of letting them run without their secrets.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import kopf
import urllib3

from sesame.kube.client import api_client
from sesame.webhook import certificates, configuration
from sesame.webhook.handler import HANDLER_ID, MEMO_KEY, WebhookRuntime
from sesame.webhook.options import WebhookOptions

logger = logging.getLogger("sesame.webhook")
RETRY_SECONDS = 10
FILE_CHECK_SECONDS = 60
CA_PROPAGATION_SECONDS = 2  # for the API server to see a new caBundle (it watches the configuration)


class NoWebhookServer:
    """SESAME_WEBHOOK=off: the admission handler stays registered but nothing listens."""

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        await asyncio.Event().wait()
        return
        yield  # an async generator that never yields


def _fill_namespace(request: Any) -> None:
    """Pods created without metadata.namespace take it from the request path; Kopf reads the body."""
    payload = request.get("request") if isinstance(request, dict) else None
    if not isinstance(payload, dict):
        return
    namespace, obj = payload.get("namespace"), payload.get("object")
    if namespace and isinstance(obj, dict):
        metadata = obj.setdefault("metadata", {})
        if isinstance(metadata, dict) and not metadata.get("namespace"):
            metadata["namespace"] = namespace


class SesameWebhookServer(kopf.WebhookServer):
    """Kopf's HTTPS server plus: the namespace from the request, registration once listening, and
    rotation of generated certificates before they expire."""

    def __init__(
        self, options: WebhookOptions, files: certificates.CertificateFiles, runtime: WebhookRuntime
    ) -> None:
        super().__init__(
            addr=options.addr,
            port=options.port,
            host=options.host,
            certfile=str(files.cert),
            pkeyfile=str(files.key),
            cafile=str(files.ca),
            # Kopf serves anew when the files change: cert-manager's renewals (checked every
            # minute, Kopf's default), and Sesame's own (written by `_rotate`).
            file_check_interval=min(FILE_CHECK_SECONDS, options.cert_check_seconds),
            # Mutual TLS when a client CA is given: only the API server holds a certificate it signed.
            verify_mode=ssl.CERT_REQUIRED if options.client_ca else None,
            verify_cafile=str(options.client_ca) if options.client_ca else None,
        )
        self.options = options
        self.files = files
        self.runtime = runtime
        self.served: kopf.WebhookClientConfig | None = None

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async def with_namespace(request: Any, **kwargs: Any) -> Any:
            _fill_namespace(request)
            return await fn(request, **kwargs)

        rotation = asyncio.create_task(self._rotate()) if self.files.generated else None
        try:
            async for client_config in super().__call__(with_namespace):
                self.served = client_config
                await self._register(client_config)
                yield client_config
        finally:
            if rotation is not None:
                rotation.cancel()

    async def _register(self, served: kopf.WebhookClientConfig) -> None:
        """Write the configuration; until that works, labelled pods are refused (fail closed)."""
        body = configuration_for(self.options, served)
        while True:
            try:
                await asyncio.to_thread(configuration.apply_configuration, self.runtime.api, body)
                return
            except (configuration.ConfigurationError, OSError, urllib3.exceptions.HTTPError) as error:
                logger.error("webhook not registered: %s (retrying in %d s)", error, RETRY_SECONDS)
                await asyncio.sleep(RETRY_SECONDS)

    async def _rotate(self) -> None:
        """Replace generated certificates a third of their lifetime before they expire.

        The API server is told to trust the old and the new CA first, then the new files are
        written; Kopf serves them at its next file check and yields the new CA alone, which
        `__call__` registers. So no admission fails verification during the change.
        """
        validity = datetime.timedelta(seconds=self.options.cert_validity_seconds)
        hosts = self.options.certificate_hosts
        while True:
            await asyncio.sleep(self.options.cert_check_seconds)
            served = self.served
            try:
                renewed = await asyncio.to_thread(
                    certificates.renewal, self.files.directory, hosts, validity=validity
                )
                if renewed is None or served is None:
                    continue
                trusted = base64.b64decode(served.get("caBundle") or "") + renewed.ca_pem
                await self._register({**served, "caBundle": base64.b64encode(trusted).decode("ascii")})
                await asyncio.sleep(CA_PROPAGATION_SECONDS)
                await asyncio.to_thread(certificates.write, self.files.directory, renewed)
            except (OSError, ValueError) as error:  # a full or read-only disk: the old files serve on
                logger.error("webhook certificate rotation failed: %s (retrying)", error)


def configuration_for(options: WebhookOptions, served: kopf.WebhookClientConfig) -> dict[str, Any]:
    """The configuration for what the server reports it serves (its URL and CA bundle)."""
    ca_bundle = served.get("caBundle")
    if options.mode == "service":
        assert options.service is not None
        client_config = configuration.service_client_config(
            options.service.namespace, options.service.name, options.service.port, HANDLER_ID, ca_bundle
        )
    else:
        base = served.get("url") or f"https://{options.host}:{options.port}"
        client_config = configuration.url_client_config(base, HANDLER_ID, ca_bundle)
    return configuration.build_configuration(
        name=options.config_name,
        client_config=client_config,
        timeout_seconds=options.timeout_seconds,
        excluded_namespaces=options.excluded_namespaces,
        only_namespaces=options.only_namespaces,
    )


def configure_webhook(settings: kopf.OperatorSettings, memo: kopf.Memo, options: WebhookOptions) -> None:
    """Startup: set `settings.admission.server` for `options.mode`; never Kopf's managed mode."""
    settings.admission.managed = None  # Sesame owns its configuration (see sesame.webhook.configuration)
    if not options.enabled:
        settings.admission.server = NoWebhookServer()
        return
    try:
        if options.default_cert_dir:
            certificates.ensure_private(options.cert_dir)
        files = certificates.ensure(
            options.cert_dir,
            options.certificate_hosts,
            validity=datetime.timedelta(seconds=options.cert_validity_seconds),
        )
    except (certificates.CertificateError, OSError) as error:
        raise kopf.PermanentError(f"webhook certificates: {error}") from None
    runtime = WebhookRuntime(api=api_client(), options=options)
    memo[MEMO_KEY] = runtime
    settings.admission.server = SesameWebhookServer(options, files, runtime)
    logger.info(
        "pod admission webhook (%s mode) on %s:%d, configuration %s",
        options.mode,
        options.addr,
        options.port,
        options.config_name,
    )


def close_webhook(memo: kopf.Memo) -> None:
    runtime = memo.get(MEMO_KEY)
    if isinstance(runtime, WebhookRuntime):
        runtime.api.close()
