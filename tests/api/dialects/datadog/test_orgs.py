"""Datadog dialect, organizations (v1 and v2), driven by the official datadog-api-client.

Each call's effect is checked through the native API as well: the org Datadog created is the
native child with the same name and plan, the settings Datadog wrote are the org's settings.
Errors are Datadog's ``{"errors": [...]}`` and raise the client's exceptions.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
import pytest
from datadog_api_client.exceptions import (
    ApiException,
    ForbiddenException,
    NotFoundException,
)
from datadog_api_client.v1.api.organizations_api import OrganizationsApi as OrgsV1
from datadog_api_client.v1.model.access_role import AccessRole
from datadog_api_client.v1.model.organization import Organization
from datadog_api_client.v1.model.organization_billing import OrganizationBilling
from datadog_api_client.v1.model.organization_create_body import OrganizationCreateBody
from datadog_api_client.v1.model.organization_settings import OrganizationSettings
from datadog_api_client.v1.model.organization_settings_saml import OrganizationSettingsSaml
from datadog_api_client.v1.model.organization_settings_saml_autocreate_users_domains import (
    OrganizationSettingsSamlAutocreateUsersDomains,
)
from datadog_api_client.v1.model.organization_settings_saml_strict_mode import (
    OrganizationSettingsSamlStrictMode,
)
from datadog_api_client.v1.model.organization_subscription import OrganizationSubscription
from datadog_api_client.v2.api.organizations_api import OrganizationsApi as OrgsV2

from orgplane.core.people.capabilities import CATALOG
from support.datadog import datadog_key, dd
from support.harness import Harness, LiveServer, start_harness, stop_harness

IDP_METADATA = b"""<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.example.com/saml">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data>
      <ds:X509Certificate>MIIBszCCAVmgAwIBAgIU
        AbCdEf==</ds:X509Certificate>
    </ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
        Location="https://idp.example.com/sso/post"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
        Location="https://idp.example.com/sso/redirect"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"""
XML_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="&lol3;"/>"""


async def native_org(h: Harness, public_id: str) -> dict[str, Any]:
    response = await h.client.get(f"/orgs/{public_id}", headers=h.auth())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def upload(name: str, content: bytes) -> io.BufferedReader:
    raw = io.BytesIO(content)
    raw.name = name
    return io.BufferedReader(raw)  # type: ignore[arg-type]


def assert_envelope(exc: ApiException, status: int, fragment: str) -> None:
    assert exc.status == status
    assert isinstance(exc.body, dict) and list(exc.body) == ["errors"], exc.body
    assert any(fragment in message for message in exc.body["errors"]), exc.body


async def test_v1_orgs_create_get_update_and_list(h: Harness, live: LiveServer) -> None:
    keys = await datadog_key(h, h.root.org_id, ["*"])
    native_child = await h.create_org(h.root.org_id, "Native child")
    with dd(live, keys) as client:
        api = OrgsV1(client)
        body = OrganizationCreateBody(
            name="Datadog child",
            billing=OrganizationBilling(type="parent_billing"),
            subscription=OrganizationSubscription(type="pro"),
        )
        created = await live.call(api.create_child_org, body)
        assert len(created.api_key.key) == 32 and len(created.application_key.hash) == 40
        child_id = created.org.public_id
        assert not created._unparsed
        assert created.org.name == "Datadog child"
        assert created.org.subscription.type == "pro" and created.org.trial is False
        assert created.org.billing.type == "parent_billing"

        listed = await live.call(api.list_orgs)
        ids = [o.public_id for o in listed.orgs]
        assert ids[0] == h.root.org_id
        assert {native_child["id"], child_id} <= set(ids)

        settings = OrganizationSettings(
            private_widget_share=True,
            saml=OrganizationSettingsSaml(enabled=True),
            saml_autocreate_access_role=AccessRole("ro"),
            saml_autocreate_users_domains=OrganizationSettingsSamlAutocreateUsersDomains(
                domains=["example.com"], enabled=True
            ),
            saml_strict_mode=OrganizationSettingsSamlStrictMode(enabled=True),
        )
        update = Organization(
            name="Renamed child",
            settings=settings,
            subscription=OrganizationSubscription(type="enterprise"),
        )
        updated = await live.call(api.update_org, child_id, update)
        assert updated.org.name == "Renamed child"
        assert updated.org.settings.saml_autocreate_access_role == AccessRole("ro")
        got = await live.call(api.get_org, child_id)
        assert not got._unparsed and not listed._unparsed
        assert got.org.settings.saml_autocreate_users_domains.domains == ["example.com"]
        assert got.org.settings.saml_idp_metadata_uploaded is False

    # The same org, natively: the parent, the name, the plan and the settings Datadog set.
    org = await native_org(h, child_id)
    assert org["parent_id"] == h.root.org_id
    assert org["name"] == "Renamed child" and org["plan"] == "enterprise"
    assert org["settings"]["private_widget_share"] is True
    assert org["settings"]["saml"] == {"enabled": True}
    assert org["settings"]["saml_autocreate_access_role"] == "ro"
    assert org["settings"]["saml_autocreate_users_domains"] == {
        "domains": ["example.com"],
        "enabled": True,
    }
    assert org["settings"]["billing"] == {"type": "parent_billing"}

    # The minted key is a real datadog key of the child: it reaches the child, not the root.
    child_keys = (created.api_key.key, created.application_key.hash)
    listed_keys = await h.client.get(f"/orgs/{child_id}/api_keys", headers=h.auth())
    assert [k["kind"] for k in listed_keys.json()["data"]] == ["datadog"]
    with dd(live, child_keys) as client:
        api = OrgsV1(client)
        assert (await live.call(api.get_org, child_id)).org.public_id == child_id
        with pytest.raises(NotFoundException) as missing:
            await live.call(api.get_org, h.root.org_id)
        assert_envelope(missing.value, 404, "not found")
        assert [o.public_id for o in (await live.call(api.list_orgs)).orgs] == [child_id]


async def test_v2_managed_orgs_with_name_filter(h: Harness, live: LiveServer) -> None:
    first = await h.create_org(h.root.org_id, "Alpha team")
    await h.create_org(first["id"], "Beta grandchild")
    keys = await datadog_key(h, h.root.org_id, ["orgs:read"])
    with dd(live, keys) as client:
        api = OrgsV2(client)
        everything = await live.call(api.list_orgs)
        filtered = await live.call(api.list_orgs, filter_name="alpha")
    root = await native_org(h, h.root.org_id)
    assert str(everything.data.id) == root["uuid"]
    assert str(everything.data.relationships.current_org.data.id) == root["uuid"]
    assert len(everything.data.relationships.managed_orgs.data) == 2
    included = {o.attributes.public_id: o for o in everything.included}
    assert set(included) == {h.root.org_id, first["id"], *(set(included) - {h.root.org_id})}
    alpha = included[first["id"]]
    assert str(alpha.id) == first["uuid"] and alpha.attributes.name == "Alpha team"
    assert alpha.attributes.disabled is False
    assert not everything._unparsed
    assert [str(o.id) for o in filtered.data.relationships.managed_orgs.data] == [first["uuid"]]


async def test_idp_metadata_is_parsed_safely_and_stored(h: Harness, live: LiveServer) -> None:
    child = await h.create_org(h.root.org_id, "SAML child")
    keys = await datadog_key(h, h.root.org_id, ["orgs:write"])
    with dd(live, keys) as client:
        api = OrgsV1(client)
        done = await live.call(api.upload_idp_for_org, child["id"], upload("idp.xml", IDP_METADATA))
        assert done.message == "IdP metadata successfully uploaded for SAML child"
        settings = (await live.call(api.get_org, child["id"])).org.settings
        assert settings.saml_idp_metadata_uploaded is True and settings.saml_can_be_enabled
        assert settings.saml_idp_endpoint == "https://idp.example.com/sso/redirect"
        for name, content, fragment in (
            ("garbage.xml", b"this is not xml", "not well-formed"),
            ("bomb.xml", XML_BOMB, "must not contain a DTD"),
            ("other.xml", b"<html><body>hi</body></html>", "not SAML 2.0 metadata"),
            ("empty.xml", b"", "empty"),
        ):
            with pytest.raises(ApiException) as bad:
                await live.call(api.upload_idp_for_org, child["id"], upload(name, content))
            assert_envelope(bad.value, 400, fragment)
            assert "idp_file" in bad.value.body["errors"][0]
    stored = (await native_org(h, child["id"]))["settings"]["saml_idp_metadata"]
    assert stored["entity_id"] == "https://idp.example.com/saml"
    assert stored["sso_url"] == "https://idp.example.com/sso/redirect"
    assert stored["certificates"] == ["MIIBszCCAVmgAwIBAgIUAbCdEf=="]


async def test_downgrade_makes_the_child_a_deactivated_trial(h: Harness, live: LiveServer) -> None:
    child = await h.create_org(h.root.org_id, "Leaving")
    child_keys = await datadog_key(h, child["id"], ["orgs:read"])
    keys = await datadog_key(h, h.root.org_id, ["orgs:write"])
    with dd(live, keys) as client:
        done = await live.call(OrgsV1(client).downgrade_org, child["id"])
    assert done.message == f"Child organization {child['id']} downgraded successfully"
    org = await native_org(h, child["id"])
    assert org["status"] == "deactivated" and org["plan"] == "trial"
    with dd(live, child_keys) as client, pytest.raises(ForbiddenException) as refused:
        await live.call(OrgsV1(client).list_orgs)
    assert refused.value.body == {"errors": ["Forbidden"]}
    # A key cannot downgrade its own org (Datadog: only a child can be downgraded).
    with dd(live, keys) as client, pytest.raises(ApiException) as own:
        await live.call(OrgsV1(client).downgrade_org, h.root.org_id)
    assert_envelope(own.value, 409, "own organization")


async def test_errors_use_datadogs_envelope_and_client_exceptions(
    h: Harness, live: LiveServer
) -> None:
    keys = await datadog_key(h, h.root.org_id, ["orgs:read"])
    with dd(live, None) as client, pytest.raises(ForbiddenException) as missing:
        await live.call(OrgsV1(client).list_orgs)
    assert missing.value.body == {"errors": ["Forbidden"]}
    with dd(live, (keys[0], "0" * 40)) as client, pytest.raises(ForbiddenException) as bad:
        await live.call(OrgsV2(client).list_orgs)
    assert bad.value.body == {"errors": ["Forbidden"]}
    with dd(live, keys) as client:
        api = OrgsV1(client)
        with pytest.raises(NotFoundException) as unknown:
            await live.call(api.get_org, "nope")
        assert_envelope(unknown.value, 404, "'nope' not found")
        # A read-only key cannot create: 403 naming the scope.
        with pytest.raises(ForbiddenException) as scope:
            await live.call(api.create_child_org, OrganizationCreateBody(name="No"))
        assert_envelope(scope.value, 403, "orgs:write")
    # The client refuses a 33-character name itself; sent raw, orgplane answers 400.
    headers = {"DD-API-KEY": keys[0], "DD-APPLICATION-KEY": keys[1]}
    async with httpx.AsyncClient(base_url=f"{live.url}/datadog") as raw:
        too_long = await raw.post("/api/v1/org", json={"name": "x" * 33}, headers=headers)
        assert too_long.status_code == 400
        assert too_long.json() == {"errors": ["name: Expected `str` of length <= 32"]}
        wrong_type = await raw.put(
            f"/api/v1/org/{h.root.org_id}",
            json={"settings": {"saml_autocreate_access_role": "superuser"}},
            headers=headers,
        )
        assert wrong_type.status_code == 400
        assert "saml_autocreate_access_role" in wrong_type.json()["errors"][0]
        assert "x-ratelimit-limit" in {k.lower() for k in too_long.headers}
    write_keys = await datadog_key(h, h.root.org_id, ["orgs:write"])
    async with httpx.AsyncClient(base_url=f"{live.url}/datadog") as raw:
        plan = await raw.put(
            f"/api/v1/org/{h.root.org_id}",
            json={"subscription": {"type": "platinum"}},
            headers={"DD-API-KEY": write_keys[0], "DD-APPLICATION-KEY": write_keys[1]},
        )
    assert plan.status_code == 400
    assert plan.json()["errors"][0].startswith("subscription.type: must be one of")
    assert (await native_org(h, h.root.org_id))["plan"] == "free"


async def test_rate_limit_is_datadogs_429_with_its_headers(db_url: str) -> None:
    h = await start_harness(db_url, rate_limit_per_key="3/minute")
    try:
        keys = await datadog_key(h, h.root.org_id, ["orgs:read"])
        headers = {"DD-API-KEY": keys[0], "DD-APPLICATION-KEY": keys[1]}
        for remaining in (2, 1, 0):
            ok = await h.client.get("/datadog/api/v1/org", headers=headers)
            assert ok.status_code == 200
            assert ok.headers["X-RateLimit-Limit"] == "3"
            assert ok.headers["X-RateLimit-Period"] == "60"
            assert ok.headers["X-RateLimit-Remaining"] == str(remaining)
            assert ok.headers["X-RateLimit-Name"] == "key"
            assert 0 <= int(ok.headers["X-RateLimit-Reset"]) <= 60
        refused = await h.client.get("/datadog/api/v2/org", headers=headers)
        assert refused.status_code == 429
        assert refused.json() == {"errors": ["Too many requests"]}
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert 1 <= int(refused.headers["X-RateLimit-Reset"]) <= 60
        assert "retry-after" not in refused.headers
        # The official client, retries off (its default), raises at once with status 429.
        live = await _serve(h)
        try:
            with dd(live.server, keys) as client, pytest.raises(ApiException) as limited:
                await live.server.call(OrgsV1(client).list_orgs)
        finally:
            await live.stop()
        assert type(limited.value) is ApiException
        assert limited.value.status == 429
        assert limited.value.body == {"errors": ["Too many requests"]}
        assert {k.lower(): v for k, v in limited.value.headers.items()}["x-ratelimit-limit"] == "3"
    finally:
        await stop_harness(h)


class _Served:
    def __init__(self, server: LiveServer, stop: Any) -> None:
        self.server = server
        self.stop = stop


async def _serve(h: Harness) -> _Served:
    import asyncio

    import uvicorn

    config = uvicorn.Config(
        h.app, host="127.0.0.1", port=0, lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]

    async def stop() -> None:
        server.should_exit = True
        await task

    return _Served(LiveServer(f"http://127.0.0.1:{port}"), stop)


def test_permission_ids_are_stable_uuids() -> None:
    from orgplane.api.dialects.datadog import permissions

    # Every capability has a Datadog-style name of its own (none fell back to a derived one).
    assert {p.capability for p in permissions.BY_CAPABILITY.values()} == set(CATALOG)
    assert all(p.group_name != "orgplane" for p in permissions.BY_CAPABILITY.values())
    ids = [p["id"] for p in permissions.every()]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 5 for i in ids)
