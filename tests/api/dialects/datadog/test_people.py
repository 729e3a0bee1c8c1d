"""Datadog dialect, users, invitations, roles and permissions (v2), driven by the official
datadog-api-client; every effect is checked through the native API (same member, same roles,
same capabilities)."""

from __future__ import annotations

from typing import Any

import pytest
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException, ForbiddenException, NotFoundException
from datadog_api_client.v1.api.organizations_api import OrganizationsApi as OrgsV1
from datadog_api_client.v1.model.organization_create_body import OrganizationCreateBody
from datadog_api_client.v2.api.roles_api import RolesApi
from datadog_api_client.v2.api.users_api import UsersApi
from datadog_api_client.v2.model.permissions_type import PermissionsType
from datadog_api_client.v2.model.relationship_to_permission import RelationshipToPermission
from datadog_api_client.v2.model.relationship_to_permission_data import (
    RelationshipToPermissionData,
)
from datadog_api_client.v2.model.relationship_to_permissions import RelationshipToPermissions
from datadog_api_client.v2.model.relationship_to_role_data import RelationshipToRoleData
from datadog_api_client.v2.model.relationship_to_roles import RelationshipToRoles
from datadog_api_client.v2.model.relationship_to_user import RelationshipToUser
from datadog_api_client.v2.model.relationship_to_user_data import RelationshipToUserData
from datadog_api_client.v2.model.role_clone import RoleClone
from datadog_api_client.v2.model.role_clone_attributes import RoleCloneAttributes
from datadog_api_client.v2.model.role_clone_request import RoleCloneRequest
from datadog_api_client.v2.model.role_create_attributes import RoleCreateAttributes
from datadog_api_client.v2.model.role_create_data import RoleCreateData
from datadog_api_client.v2.model.role_create_request import RoleCreateRequest
from datadog_api_client.v2.model.role_relationships import RoleRelationships
from datadog_api_client.v2.model.role_update_attributes import RoleUpdateAttributes
from datadog_api_client.v2.model.role_update_data import RoleUpdateData
from datadog_api_client.v2.model.role_update_request import RoleUpdateRequest
from datadog_api_client.v2.model.roles_type import RolesType
from datadog_api_client.v2.model.user_create_attributes import UserCreateAttributes
from datadog_api_client.v2.model.user_create_data import UserCreateData
from datadog_api_client.v2.model.user_create_request import UserCreateRequest
from datadog_api_client.v2.model.user_invitation_data import UserInvitationData
from datadog_api_client.v2.model.user_invitation_relationships import (
    UserInvitationRelationships,
)
from datadog_api_client.v2.model.user_invitations_request import UserInvitationsRequest
from datadog_api_client.v2.model.user_invitations_type import UserInvitationsType
from datadog_api_client.v2.model.user_relationships import UserRelationships
from datadog_api_client.v2.model.user_update_attributes import UserUpdateAttributes
from datadog_api_client.v2.model.user_update_data import UserUpdateData
from datadog_api_client.v2.model.user_update_request import UserUpdateRequest
from datadog_api_client.v2.model.users_type import UsersType

from orgplane.api.dialects.datadog.permissions import BY_CAPABILITY
from orgplane.core.people.capabilities import of_system_role
from support.harness import Harness, LiveServer

PASSWORD = "correct horse battery staple"


async def datadog_key(h: Harness, org: str, scopes: list[str], **fields: Any) -> tuple[str, str]:
    response = await h.client.post(
        f"/orgs/{org}/api_keys",
        json={"name": "datadog", "scopes": scopes, "kind": "datadog", **fields},
        headers=h.auth(),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["api_key"], body["application_key"]


def dd(live: LiveServer, keys: tuple[str, str]) -> ApiClient:
    configuration = Configuration(host=f"{live.url}/datadog")
    configuration.api_key["apiKeyAuth"], configuration.api_key["appKeyAuth"] = keys
    return ApiClient(configuration)


async def native(h: Harness, path: str) -> Any:
    response = await h.client.get(path, headers=h.auth())
    assert response.status_code == 200, response.text
    return response.json()


def new_user(email: str, name: str, roles: list[str]) -> UserCreateRequest:
    return UserCreateRequest(
        data=UserCreateData(
            type=UsersType.USERS,
            attributes=UserCreateAttributes(email=email, name=name, title="Engineer"),
            relationships=UserRelationships(
                roles=RelationshipToRoles(
                    data=[RelationshipToRoleData(id=r, type=RolesType.ROLES) for r in roles]
                )
            ),
        )
    )


def user_ref(user_id: str) -> RelationshipToUser:
    return RelationshipToUser(data=RelationshipToUserData(id=user_id, type=UsersType.USERS))


def permission_ref(permission_id: str) -> RelationshipToPermission:
    return RelationshipToPermission(
        data=RelationshipToPermissionData(id=permission_id, type=PermissionsType.PERMISSIONS)
    )


async def test_users_and_invitations(h: Harness, live: LiveServer) -> None:
    org = h.root.org_id
    keys = await datadog_key(h, org, ["users:write", "orgs:write", "keys:write"])
    with dd(live, keys) as client:
        users = UsersApi(client)
        jane = await live.call(
            users.create_user, new_user("jane@example.com", "Jane Doe", ["administrator"])
        )
        bob = await live.call(users.create_user, new_user("Bob@example.com", "Bob Roe", []))
        jane_id = jane.data.id
        assert not jane._unparsed and not bob._unparsed
        assert jane.data.attributes.status == "Pending"
        assert jane.data.attributes.name == "Jane Doe"
        assert [r.id for r in jane.data.relationships.roles.data] == ["administrator"]

        # The same member natively: email, names, title, roles.
        member = await native(h, f"/orgs/{org}/users/{jane_id}")
        assert member["email"] == "jane@example.com"
        assert (member["first_name"], member["last_name"], member["title"]) == (
            "Jane",
            "Doe",
            "Engineer",
        )
        assert member["roles"] == ["administrator"]

        got = await live.call(users.get_user, jane_id)
        assert got.data.attributes.email == "jane@example.com"
        page = await live.call(users.list_users, page_size=1, page_number=1, sort="-name")
        assert [u.attributes.email for u in page.data] == ["Bob@example.com"]
        assert not page._unparsed
        assert page.meta.page.total_count == 2 and page.meta.page.total_filtered_count == 2
        found = await live.call(users.list_users, filter="jane", filter_status="Pending")
        assert [u.id for u in found.data] == [jane_id]
        assert found.meta.page.total_filtered_count == 1

        updated = await live.call(
            users.update_user,
            jane_id,
            UserUpdateRequest(
                data=UserUpdateData(
                    id=jane_id,
                    type=UsersType.USERS,
                    attributes=UserUpdateAttributes(name="Jane Q Public", title="Lead"),
                )
            ),
        )
        assert updated.data.attributes.name == "Jane Q Public"
        assert updated.data.attributes.title == "Lead"
        member = await native(h, f"/orgs/{org}/users/{jane_id}")
        assert (member["first_name"], member["last_name"], member["title"]) == (
            "Jane Q",
            "Public",
            "Lead",
        )

        # An administrator holds every permission but the owners' (the login policy).
        permissions = await live.call(users.list_user_permissions, jane_id)
        assert {p.attributes.name for p in permissions.data} == {
            p.name
            for p in BY_CAPABILITY.values()
            if p.capability in of_system_role("administrator")
        }
        assert "org_login_policy_write" not in {p.attributes.name for p in permissions.data}
        assert (await live.call(users.list_user_permissions, bob.data.id)).data == []

        sent = await live.call(
            users.send_invitations,
            UserInvitationsRequest(
                data=[
                    UserInvitationData(
                        type=UserInvitationsType.USER_INVITATIONS,
                        relationships=UserInvitationRelationships(user=user_ref(jane_id)),
                    )
                ]
            ),
        )
        invitation = sent.data[0]
        assert not sent._unparsed
        assert invitation.relationships.user.data.id == jane_id
        fetched = await live.call(users.get_invitation, invitation.id)
        assert fetched.data.id == invitation.id
        assert fetched.data.attributes.expires_at > fetched.data.attributes.created_at
        native_invitation = await native(h, f"/orgs/{org}/invitations/{invitation.id}")
        assert native_invitation["email"] == "jane@example.com"

        # Jane accepts with the token the response carried, then acts with her own key:
        # creating a child org through Datadog makes her its administrator.
        token = invitation.attributes.to_dict()["token"]
        accepted = await h.client.post(f"/invitations/{token}/accept", json={"password": PASSWORD})
        assert accepted.status_code == 200, accepted.text
        assert (await live.call(users.get_user, jane_id)).data.attributes.status == "Active"

        await live.call(users.disable_user, bob.data.id)
        assert (await native(h, f"/orgs/{org}/users/{bob.data.id}"))["status"] == "disabled"
        enabled = await live.call(
            users.update_user,
            bob.data.id,
            UserUpdateRequest(
                data=UserUpdateData(
                    id=bob.data.id,
                    type=UsersType.USERS,
                    attributes=UserUpdateAttributes(disabled=False),
                )
            ),
        )
        assert enabled.data.attributes.status == "Pending"

        with pytest.raises(NotFoundException) as unknown:
            await live.call(users.get_user, "usr_unknown")
        assert unknown.value.body["errors"][0].startswith("user 'usr_unknown' not found")
        with pytest.raises(ApiException) as taken:
            await live.call(users.create_user, new_user("JANE@example.com", "Again", []))
        assert taken.value.status == 409 and "already a member" in taken.value.body["errors"][0]
        with pytest.raises(ApiException) as bad_email:
            await live.call(users.create_user, new_user("not-an-email", "X", []))
        assert bad_email.value.status == 400
        assert bad_email.value.body["errors"][0].startswith("email:")
        with pytest.raises(ApiException) as mismatch:
            await live.call(
                users.update_user,
                jane_id,
                UserUpdateRequest(
                    data=UserUpdateData(
                        id=bob.data.id, type=UsersType.USERS, attributes=UserUpdateAttributes()
                    )
                ),
            )
        assert mismatch.value.status == 422
        assert mismatch.value.body == {
            "errors": ["UUID's in the URL and request body do not match"]
        }

    jane_keys = await datadog_key(
        h, org, ["orgs:write", "keys:write", "users:write"], user_id=jane_id
    )
    with dd(live, jane_keys) as client:
        created = await live.call(
            OrgsV1(client).create_child_org, OrganizationCreateBody(name="Jane's team")
        )
    assert not created._unparsed
    assert created.user.email == "jane@example.com" and created.user.access_role.value == "adm"
    assert created.application_key.owner == "jane@example.com"
    child_members = await native(h, f"/orgs/{created.org.public_id}/users")
    assert [(m["email"], m["roles"]) for m in child_members["data"]] == [
        ("jane@example.com", ["administrator"])
    ]
    child_keys = await native(h, f"/orgs/{created.org.public_id}/api_keys")
    assert [k["user_id"] for k in child_keys["data"]] == [jane_id]


async def test_roles_permissions_and_role_users(h: Harness, live: LiveServer) -> None:
    org = h.root.org_id
    read_org = BY_CAPABILITY["viewOrganizations"].id
    audit = BY_CAPABILITY["viewAuditLog"].id
    keys = await datadog_key(h, org, ["users:write"])
    with dd(live, keys) as client:
        roles = RolesApi(client)
        users = UsersApi(client)
        catalog = await live.call(roles.list_permissions)
        assert {p.id for p in catalog.data} == {p.id for p in BY_CAPABILITY.values()}

        created = await live.call(
            roles.create_role,
            RoleCreateRequest(
                data=RoleCreateData(
                    type=RolesType.ROLES,
                    attributes=RoleCreateAttributes(name="Auditors"),
                    relationships=RoleRelationships(
                        permissions=RelationshipToPermissions(
                            data=[
                                RelationshipToPermissionData(
                                    id=read_org, type=PermissionsType.PERMISSIONS
                                )
                            ]
                        )
                    ),
                )
            ),
        )
        role_id = created.data.id
        assert not created._unparsed and not catalog._unparsed
        assert created.data.attributes.name == "Auditors"
        native_role = await native(h, f"/orgs/{org}/roles/{role_id}")
        assert native_role["name"] == "Auditors"
        assert native_role["capabilities"] == ["viewOrganizations"]

        granted = await live.call(roles.add_permission_to_role, role_id, permission_ref(audit))
        assert {p.id for p in granted.data} == {read_org, audit}
        assert (await native(h, f"/orgs/{org}/roles/{role_id}"))["capabilities"] == [
            "viewAuditLog",
            "viewOrganizations",
        ]
        revoked = await live.call(
            roles.remove_permission_from_role, role_id, permission_ref(read_org)
        )
        assert [p.id for p in revoked.data] == [audit]
        listed = await live.call(roles.list_role_permissions, role_id)
        assert [p.attributes.name for p in listed.data] == ["audit_logs_read"]

        updated = await live.call(
            roles.update_role,
            role_id,
            RoleUpdateRequest(
                data=RoleUpdateData(
                    id=role_id,
                    type=RolesType.ROLES,
                    attributes=RoleUpdateAttributes(name="Compliance"),
                )
            ),
        )
        assert updated.data.attributes.name == "Compliance"
        assert (await live.call(roles.get_role, role_id)).data.attributes.name == "Compliance"
        assert (await native(h, f"/orgs/{org}/roles/{role_id}"))["name"] == "Compliance"

        clone = await live.call(
            roles.clone_role,
            role_id,
            RoleCloneRequest(
                data=RoleClone(
                    type=RolesType.ROLES, attributes=RoleCloneAttributes(name="Compliance 2")
                )
            ),
        )
        assert clone.data.id != role_id
        assert (await native(h, f"/orgs/{org}/roles/{clone.data.id}"))["capabilities"] == [
            "viewAuditLog"
        ]
        with pytest.raises(ApiException) as duplicate:
            await live.call(
                roles.clone_role,
                role_id,
                RoleCloneRequest(
                    data=RoleClone(
                        type=RolesType.ROLES, attributes=RoleCloneAttributes(name="compliance")
                    )
                ),
            )
        assert (
            duplicate.value.status == 409 and "already exists" in duplicate.value.body["errors"][0]
        )

        listed_roles = await live.call(roles.list_roles, page_size=100, filter="compliance")
        assert [r.attributes.name for r in listed_roles.data] == ["Compliance", "Compliance 2"]
        all_roles = await live.call(roles.list_roles, page_size=100)
        assert {"owner", "administrator", "standard", "read-only"} <= {r.id for r in all_roles.data}

        kim = await live.call(users.create_user, new_user("kim@example.com", "Kim Lee", []))
        kim_id = kim.data.id
        holders = await live.call(roles.add_user_to_role, role_id, user_ref(kim_id))
        assert [u.id for u in holders.data] == [kim_id]
        assert not holders._unparsed and not all_roles._unparsed
        assert (await native(h, f"/orgs/{org}/users/{kim_id}"))["roles"] == [role_id]
        role_users = await live.call(roles.list_role_users, role_id)
        assert [u.attributes.email for u in role_users.data] == ["kim@example.com"]
        assert role_users.meta.page.total_count == 1
        kim_permissions = await live.call(users.list_user_permissions, kim_id)
        assert [p.id for p in kim_permissions.data] == [audit]

        with pytest.raises(ApiException) as held:
            await live.call(roles.delete_role, role_id)
        assert held.value.status == 409 and "held by 1 user" in held.value.body["errors"][0]
        emptied = await live.call(roles.remove_user_from_role, role_id, user_ref(kim_id))
        assert emptied.data == []
        assert (await native(h, f"/orgs/{org}/users/{kim_id}"))["roles"] == []
        await live.call(roles.delete_role, role_id)
        gone = await h.client.get(f"/orgs/{org}/roles/{role_id}", headers=h.auth())
        assert gone.status_code == 404
        with pytest.raises(NotFoundException):
            await live.call(roles.get_role, role_id)

        with pytest.raises(ApiException) as system:
            await live.call(roles.delete_role, "owner")
        assert system.value.status == 409 and "system role" in system.value.body["errors"][0]
        with pytest.raises(ApiException) as unknown_permission:
            await live.call(
                roles.add_permission_to_role,
                clone.data.id,
                permission_ref("00000000-0000-0000-0000-000000000000"),
            )
        assert unknown_permission.value.status == 400
        assert unknown_permission.value.body["errors"][0].startswith("data.id: unknown permission")

    # A key with users:read only may read roles but not change them.
    reader = await datadog_key(h, org, ["users:read"])
    with dd(live, reader) as client:
        assert (await live.call(RolesApi(client).get_role, "standard")).data.id == "standard"
        with pytest.raises(ForbiddenException) as scope:
            await live.call(
                RolesApi(client).create_role,
                RoleCreateRequest(data=RoleCreateData(attributes=RoleCreateAttributes(name="X"))),
            )
        assert scope.value.body["errors"][0] == "this credential lacks the 'users:write' scope"
