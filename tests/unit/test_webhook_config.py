"""The webhook's pure parts: options, the configuration Sesame owns, certificates, the review."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from sesame import naming
from sesame.injection import Reason, SecretFacts
from sesame.requests import parse_annotation
from sesame.webhook import certificates, configuration
from sesame.webhook.handler import HANDLER_ID, Refusal, review, stale_names
from sesame.webhook.options import OptionsError, ServiceRef, WebhookOptions, from_env, parse_service
from sesame.webhook.server import _fill_namespace, configuration_for

ANY_ADDRESS = "0.0.0.0"  # noqa: S104  (the value under test, not a bind)
NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


# --- options -------------------------------------------------------------------------------------


def test_options_default_to_off_and_local_loopback() -> None:
    assert not from_env({}).enabled
    options = from_env({"SESAME_WEBHOOK": "local"})
    assert (options.mode, options.addr, options.host, options.port) == (
        "local",
        "127.0.0.1",
        "127.0.0.1",
        9443,
    )
    assert options.timeout_seconds == 5
    assert options.config_name == "sesame"
    assert options.excluded_namespaces == ["kube-system"]


def test_options_service_mode() -> None:
    options = from_env(
        {
            "SESAME_WEBHOOK": "service",
            "SESAME_WEBHOOK_SERVICE": "sesame-system/sesame-webhook",
            "POD_NAMESPACE": "sesame-system",
            "SESAME_WEBHOOK_TIMEOUT": "3",
            "SESAME_WEBHOOK_CONFIG_NAME": "sesame-prod",
            "SESAME_WEBHOOK_NAMESPACES": "a, b,,a",
        }
    )
    assert options.addr == ANY_ADDRESS
    assert options.service == ServiceRef("sesame-system", "sesame-webhook", 443)
    assert options.excluded_namespaces == ["kube-system", "sesame-system"]
    assert options.only_namespaces == ("a", "b")
    assert options.timeout_seconds == 3
    assert "sesame-webhook.sesame-system.svc" in options.certificate_hosts
    assert "127.0.0.1" in options.certificate_hosts
    assert ANY_ADDRESS not in options.certificate_hosts


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SESAME_WEBHOOK": "on"}, "use one of"),
        ({"SESAME_WEBHOOK": "local", "SESAME_WEBHOOK_TIMEOUT": "30"}, "must be 1..5"),
        ({"SESAME_WEBHOOK": "local", "SESAME_WEBHOOK_TIMEOUT": "0"}, "must be 1..5"),
        ({"SESAME_WEBHOOK": "local", "SESAME_WEBHOOK_PORT": "x"}, "not a number"),
        ({"SESAME_WEBHOOK": "service"}, "needs SESAME_WEBHOOK_SERVICE"),
    ],
)
def test_options_refuse_what_cannot_work(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(OptionsError, match=fragment):
        from_env(env)


def test_parse_service() -> None:
    assert parse_service("ns/svc:8443") == ServiceRef("ns", "svc", 8443)
    for bad in ("svc", "ns/", "/svc", "ns/svc:x", "ns/svc:0"):
        with pytest.raises(OptionsError):
            parse_service(bad)


# --- the configuration -----------------------------------------------------------------------------


def _webhook(body: dict[str, Any]) -> dict[str, Any]:
    assert body["kind"] == "MutatingWebhookConfiguration"
    assert len(body["webhooks"]) == 1
    webhook: dict[str, Any] = body["webhooks"][0]
    return webhook


def test_configuration_local_mode() -> None:
    options = from_env(
        {"SESAME_WEBHOOK": "local", "SESAME_WEBHOOK_PORT": "12345", "SESAME_NAMESPACE": "sesame"}
    )
    body = configuration_for(options, {"url": "https://127.0.0.1:12345", "caBundle": "Q0E="})
    assert body["metadata"]["name"] == "sesame"
    webhook = _webhook(body)
    assert webhook["name"] == "inject.sesame.dev"
    assert webhook["clientConfig"] == {"url": f"https://127.0.0.1:12345/{HANDLER_ID}", "caBundle": "Q0E="}
    assert webhook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert webhook["objectSelector"] == {"matchLabels": {"sesame.dev/inject": "true"}}
    assert webhook["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "sesame"]}
        ]
    }
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["sideEffects"] == "None"
    assert webhook["timeoutSeconds"] == 5
    assert webhook["matchPolicy"] == "Equivalent"
    assert webhook["reinvocationPolicy"] == "Never"
    assert webhook["admissionReviewVersions"] == ["v1"]


def test_configuration_service_mode_and_namespace_scope() -> None:
    options = from_env(
        {
            "SESAME_WEBHOOK": "service",
            "SESAME_WEBHOOK_SERVICE": "sesame/sesame-webhook:8443",
            "SESAME_WEBHOOK_NAMESPACES": "team-a",
            "SESAME_WEBHOOK_TIMEOUT": "2",
        }
    )
    webhook = _webhook(configuration_for(options, {"url": "https://0.0.0.0:9443", "caBundle": "Q0E="}))
    assert webhook["clientConfig"] == {
        "service": {"namespace": "sesame", "name": "sesame-webhook", "port": 8443, "path": "/inject"},
        "caBundle": "Q0E=",
    }
    assert webhook["timeoutSeconds"] == 2
    assert {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a"]} in webhook[
        "namespaceSelector"
    ]["matchExpressions"]


def test_configuration_builder_is_pure_and_json() -> None:
    kwargs: dict[str, Any] = {
        "name": "x",
        "client_config": configuration.url_client_config("https://h:1/", "/inject", None),
        "timeout_seconds": 1,
        "excluded_namespaces": ["kube-system"],
    }
    first = configuration.build_configuration(**kwargs)
    assert first == configuration.build_configuration(**kwargs)
    assert json.loads(json.dumps(first)) == first
    assert first["webhooks"][0]["clientConfig"] == {"url": "https://h:1/inject"}


# --- certificates ------------------------------------------------------------------------------


HOSTS = ["127.0.0.1", "localhost", "sesame-webhook.sesame.svc"]


def _cert(bundle: certificates.Bundle) -> x509.Certificate:
    return x509.load_pem_x509_certificate(bundle.cert_pem)


def test_generated_certificate_covers_hosts_and_chains_to_ca(tmp_path: Path) -> None:
    bundle = certificates.generate(HOSTS, now=NOW)
    cert = _cert(bundle)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "sesame-webhook.sesame.svc"]
    assert cert.not_valid_after_utc - NOW == certificates.DEFAULT_VALIDITY
    assert cert.not_valid_before_utc < NOW
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca = x509.load_pem_x509_certificate(bundle.ca_pem)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca)
    assert certificates.rotation_reason(bundle, HOSTS, now=NOW) is None
    # What a TLS client does: trust the CA, check the serving certificate and its key.
    certificates.write(tmp_path, bundle)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0


def test_rotation_decision() -> None:
    bundle = certificates.generate(HOSTS, now=NOW, validity=datetime.timedelta(days=90))
    assert certificates.rotation_reason(bundle, HOSTS, now=NOW + datetime.timedelta(days=59)) is None
    late = certificates.rotation_reason(bundle, HOSTS, now=NOW + datetime.timedelta(days=61))
    assert late is not None
    assert "last third" in late
    expired = certificates.rotation_reason(bundle, HOSTS, now=NOW + datetime.timedelta(days=91))
    assert expired is not None
    early = certificates.rotation_reason(bundle, HOSTS, now=NOW - datetime.timedelta(days=1))
    assert early is not None
    assert "not valid yet" in early
    uncovered = certificates.rotation_reason(bundle, [*HOSTS, "other.ns.svc"], now=NOW)
    assert uncovered is not None
    assert "other.ns.svc" in uncovered
    other = certificates.generate(HOSTS, now=NOW)
    mixed = certificates.Bundle(ca_pem=other.ca_pem, cert_pem=bundle.cert_pem, key_pem=bundle.key_pem)
    assert "not issued by the CA" in (certificates.rotation_reason(mixed, HOSTS, now=NOW) or "")
    wrong_key = certificates.Bundle(ca_pem=bundle.ca_pem, cert_pem=bundle.cert_pem, key_pem=other.key_pem)
    assert "key does not match" in (certificates.rotation_reason(wrong_key, HOSTS, now=NOW) or "")
    broken = certificates.Bundle(ca_pem=b"x", cert_pem=b"y", key_pem=b"z")
    assert certificates.rotation_reason(broken, HOSTS, now=NOW) is not None


def test_ensure_generates_keeps_and_rotates(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    files = certificates.ensure(directory, HOSTS, now=NOW)
    assert files.generated
    first = files.cert.read_bytes()
    assert certificates.ensure(directory, HOSTS, now=NOW + datetime.timedelta(days=30)).generated
    assert files.cert.read_bytes() == first  # still good: kept
    certificates.ensure(directory, HOSTS, now=NOW + datetime.timedelta(days=300))
    assert files.cert.read_bytes() != first  # within the last third: rotated
    second = files.cert.read_bytes()
    certificates.ensure(directory, [*HOSTS, "new.ns.svc"], now=NOW + datetime.timedelta(days=300))
    assert files.cert.read_bytes() != second  # a new host to cover: rotated
    assert "new.ns.svc" in certificates.covered_hosts(x509.load_pem_x509_certificate(files.cert.read_bytes()))


def test_every_state_a_rotation_passes_through_is_one_whole_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kopf rereads tls.crt, tls.key and ca.crt whenever one changes: had it caught the new
    certificate with the old CA, the API server would be told to trust a CA that signed nothing it
    is served. So the three names must switch together, from any older layout too."""
    old, new = (certificates.generate(HOSTS, now=NOW) for _ in range(2))
    bundles = {(b.ca_pem, b.cert_pem, b.key_pem): name for name, b in (("old", old), ("new", new))}
    seen: list[str] = []

    def observe() -> None:
        names = [tmp_path / n for n in ("ca.crt", "tls.crt", "tls.key")]
        if all(path.exists() for path in names):
            triple = tuple(path.read_bytes() for path in names)
            seen.append(bundles.get(triple, "a mix of both"))  # type: ignore[arg-type]

    def observed(mutation: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            observe()
            result = mutation(*args, **kwargs)
            observe()
            return result

        return call

    # The layout of Sesame before this rule: plain files, one replaced after the other.
    (tmp_path / certificates.MARKER_FILE).write_text("generated\n")
    for name, data in (("ca.crt", old.ca_pem), ("tls.crt", old.cert_pem), ("tls.key", old.key_pem)):
        (tmp_path / name).write_bytes(data)
    for name in ("replace", "rename", "symlink", "unlink", "remove"):
        monkeypatch.setattr(os, name, observed(getattr(os, name)))
    assert certificates.ensure(tmp_path, HOSTS, now=NOW).generated  # still good: relinked, kept
    certificates.write(tmp_path, new)
    certificates.write(tmp_path, old)
    assert seen, "no file system change was observed"
    assert "a mix of both" not in seen, seen
    assert seen[-1] == "old"
    assert "new" in seen


def test_short_lived_certificates_rotate_after_two_thirds_and_are_checked_often_enough(
    tmp_path: Path,
) -> None:
    options = from_env({"SESAME_WEBHOOK": "local", "SESAME_WEBHOOK_CERT_VALIDITY_SECONDS": "30"})
    assert (options.cert_validity_seconds, options.cert_check_seconds) == (30, 1)
    assert from_env({"SESAME_WEBHOOK": "local"}).cert_check_seconds == 3600  # one year: hourly
    with pytest.raises(OptionsError, match="at least 10 seconds"):
        from_env({"SESAME_WEBHOOK": "local", "SESAME_WEBHOOK_CERT_VALIDITY_SECONDS": "5"})

    validity = datetime.timedelta(seconds=30)
    files = certificates.ensure(tmp_path, HOSTS, now=NOW, validity=validity)
    # The backdating for clock skew is a tenth of a short lifetime, so a fresh one is not rotated at once.
    assert certificates.renewal(tmp_path, HOSTS, now=NOW, validity=validity) is None
    later = NOW + datetime.timedelta(seconds=15)
    assert certificates.renewal(tmp_path, HOSTS, now=later, validity=validity) is None
    renewed = certificates.renewal(
        tmp_path, HOSTS, now=NOW + datetime.timedelta(seconds=21), validity=validity
    )
    assert renewed is not None
    assert files.ca.read_bytes() != renewed.ca_pem  # computed, not written: the server decides when


def test_ensure_uses_provided_certificates_as_they_are(tmp_path: Path) -> None:
    bundle = certificates.generate(["sesame-webhook.sesame.svc"], now=NOW)
    for name, data in (("tls.crt", bundle.cert_pem), ("tls.key", bundle.key_pem), ("ca.crt", bundle.ca_pem)):
        (tmp_path / name).write_bytes(data)
    # Provided (no marker): never replaced, even when they do not cover loopback or are old.
    files = certificates.ensure(tmp_path, HOSTS, now=NOW + datetime.timedelta(days=360))
    assert not files.generated
    assert (tmp_path / "tls.crt").read_bytes() == bundle.cert_pem
    assert not (tmp_path / certificates.MARKER_FILE).exists()


def test_ensure_refuses_a_partial_provided_set(tmp_path: Path) -> None:
    bundle = certificates.generate(HOSTS, now=NOW)
    (tmp_path / "tls.crt").write_bytes(bundle.cert_pem)
    (tmp_path / "tls.key").write_bytes(bundle.key_pem)
    with pytest.raises(certificates.CertificateError, match=r"not ca\.crt"):
        certificates.ensure(tmp_path, HOSTS, now=NOW)


# --- the admission review (pure part of the handler) -------------------------------------------------


def _pod(annotation: str | None, env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "busybox"}
    if env is not None:
        container["env"] = env
    pod: dict[str, Any] = {
        "metadata": {"labels": {naming.INJECT_LABEL: "true"}, "annotations": {}},
        "spec": {"containers": [container]},
    }
    if annotation is not None:
        pod["metadata"]["annotations"][naming.SECRETS_ANNOTATION] = annotation
    return pod


INVENTORY = {"my-secret": SecretFacts(frozenset({"my_secret"})), "cert": SecretFacts(frozenset({"cert"}))}


def test_review_patches_only_changed_fields_and_annotates() -> None:
    annotation = json.dumps([{"key": "my_secret"}, {"key": "cert", "mountRequirement": "FILE"}])
    pod = _pod(annotation)
    admission = review(pod, "ns", parse_annotation(annotation), INVENTORY)
    assert set(admission.patch["spec"]) == {"containers", "volumes"}
    env = {e["name"]: e for e in admission.patch["spec"]["containers"][0]["env"]}
    assert env["SESAME_SECRET_MY_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "my-secret"
    injected = json.loads(admission.patch["metadata"]["annotations"][naming.INJECTED_ANNOTATION])
    assert injected == [
        {"delivery": "env", "envVar": "SESAME_SECRET_MY_SECRET", "key": "my_secret"},
        {"delivery": "file", "key": "cert", "path": "/etc/sesame/secrets/cert"},
    ]
    # Already injected (e.g. a spec copied from an admitted pod): nothing left to change.
    again = {**pod, "spec": {**pod["spec"], **admission.patch["spec"]}}
    assert not review(again, "ns", parse_annotation(annotation), INVENTORY).changes_spec


def test_review_refuses_with_one_line() -> None:
    missing = parse_annotation('[{"key": "absent"}, {"key": "also_absent"}]')
    with pytest.raises(Refusal) as refused:
        review(_pod(None), "ns", missing, INVENTORY)
    assert refused.value.code == 403
    assert refused.value.reasons == [Reason.SECRET_NOT_FOUND, Reason.SECRET_NOT_FOUND]
    assert "sesame create secret --namespace ns absent" in refused.value.message
    assert refused.value.message.startswith("2 problems: [1] secret 'absent' not found")
    assert "[2] secret 'also_absent' not found" in refused.value.message
    assert "\n" not in refused.value.message

    clash = parse_annotation('[{"key": "my_secret", "envVar": "TOKEN"}]')
    with pytest.raises(Refusal) as refused:
        review(_pod(None, env=[{"name": "TOKEN", "value": "x"}]), "ns", clash, INVENTORY)
    assert refused.value.code == 400
    assert refused.value.reasons == [Reason.ENV_VAR_CLASH]


def test_stale_names_are_missing_secrets_or_keys() -> None:
    requests = parse_annotation(
        '[{"key": "my_secret"}, {"key": "gone"},'
        ' {"key": "x", "from": {"secret": "my-secret", "key": "other"}}]'
    )
    assert stale_names(requests, INVENTORY) == ["gone", "my-secret"]


def test_namespace_is_filled_from_the_request() -> None:
    request: dict[str, Any] = {"request": {"namespace": "ns", "object": {"metadata": {"name": "p"}}}}
    _fill_namespace(request)
    assert request["request"]["object"]["metadata"]["namespace"] == "ns"
    kept: dict[str, Any] = {"request": {"namespace": "ns", "object": {"metadata": {"namespace": "other"}}}}
    _fill_namespace(kept)
    assert kept["request"]["object"]["metadata"]["namespace"] == "other"


def test_default_cert_dir_is_absolute() -> None:
    assert os.path.isabs(WebhookOptions().cert_dir)


def test_a_pod_asking_for_more_than_256_secrets_is_refused_before_anything_is_read() -> None:
    import asyncio

    from sesame.webhook.handler import _admit

    many = json.dumps([{"key": f"k{i}"} for i in range(257)])
    body = _pod(many)
    with pytest.raises(Refusal) as refused:
        asyncio.run(_admit(body, "ns", {}, None))  # no index and no API: neither may be reached
    assert refused.value.code == 400
    assert (
        str(refused.value)
        == "annotation sesame.dev/secrets asks for 257 secrets; at most 256 are allowed per pod"
    )
    just = json.dumps([{"key": f"k{i}"} for i in range(256)])
    with pytest.raises(Refusal) as waiting:  # 256 pass the cap and go on to the Secrets (none here)
        asyncio.run(_admit(_pod(just), "ns", {}, None))
    assert "at most 256" not in str(waiting.value)
