"""SAML identity-provider metadata: parsed safely and reduced to what an org's settings keep.

The XML is parsed with defusedxml with DTDs, entities and external references refused, so an
entity-expansion bomb or an external entity is a clear 400, never a hang or a file read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from orgplane.core.errors import InvalidInput

MAX_METADATA_BYTES = 256 * 1024
MAX_CERTIFICATES = 8
SETTINGS_KEY = "saml_idp_metadata"
_MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"
_DS = "{http://www.w3.org/2000/09/xmldsig#}"
_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"


def _bad(field: str, message: str) -> InvalidInput:
    return InvalidInput.for_field(field, message)


def _parse(document: bytes, field: str) -> Element:
    if not document.strip():
        raise _bad(field, "is empty; send the identity provider's SAML metadata XML")
    if len(document) > MAX_METADATA_BYTES:
        raise _bad(field, f"must be at most {MAX_METADATA_BYTES} bytes")
    try:
        root: Element = fromstring(document, forbid_dtd=True)
    except DefusedXmlException:
        raise _bad(field, "must not contain a DTD, entities or external references") from None
    except (ParseError, ValueError) as exc:
        raise _bad(field, f"is not well-formed XML ({exc})") from None
    return root


def _entity(root: Element, field: str) -> Element:
    if root.tag == f"{_MD}EntityDescriptor":
        return root
    if root.tag == f"{_MD}EntitiesDescriptor":
        for entity in root.iter(f"{_MD}EntityDescriptor"):
            if entity.find(f"{_MD}IDPSSODescriptor") is not None:
                return entity
    raise _bad(field, "is not SAML 2.0 metadata: expected an md:EntityDescriptor")


def _sso_url(descriptor: Element, field: str) -> str:
    services = descriptor.findall(f"{_MD}SingleSignOnService")
    # The redirect binding is what a browser-initiated login uses; any binding otherwise.
    services.sort(key=lambda s: s.get("Binding") != _REDIRECT)
    for service in services:
        location = (service.get("Location") or "").strip()
        if location.startswith(("https://", "http://")):
            return location
    raise _bad(field, "has no md:SingleSignOnService with an http(s) Location")


def _certificates(descriptor: Element) -> list[str]:
    found = []
    for cert in descriptor.iter(f"{_DS}X509Certificate"):
        text = "".join((cert.text or "").split())
        if text and text not in found:
            found.append(text)
    return found[:MAX_CERTIFICATES]


def parse_idp_metadata(
    document: bytes, *, now: datetime, field: str = "idp_file"
) -> dict[str, Any]:
    """The identity provider's entity id, SSO endpoint and signing certificates, or a 400."""
    root = _parse(document, field)
    entity = _entity(root, field)
    entity_id = (entity.get("entityID") or "").strip()
    if not entity_id:
        raise _bad(field, "md:EntityDescriptor has no entityID")
    descriptor = entity.find(f"{_MD}IDPSSODescriptor")
    if descriptor is None:
        raise _bad(field, "describes no identity provider (no md:IDPSSODescriptor)")
    certificates = _certificates(descriptor)
    if not certificates:
        raise _bad(field, "md:IDPSSODescriptor has no ds:X509Certificate to verify assertions")
    return {
        "entity_id": entity_id,
        "sso_url": _sso_url(descriptor, field),
        "certificates": certificates,
        "uploaded_at": now.isoformat(),
    }
