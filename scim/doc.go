// Package scim is devid-ca's SCIM 2.0 service (RFC 7643, RFC 7644): an
// IdP (Okta, Microsoft Entra ID) pushes the people who may own devices,
// and their groups, and deactivating a person there off-boards them here.
//
// It serves, below the prefix it is mounted at (devid-ca: /scim/v2):
//
//	GET    /Users              ListResponse; ?filter=…&startIndex=N&count=N
//	POST   /Users              User → User (201)
//	GET    /Users/{id}         User
//	PUT    /Users/{id}         User → User
//	PATCH  /Users/{id}         PatchOp → User
//	DELETE /Users/{id}         204
//	GET    /Groups             ListResponse; ?filter=…&startIndex=N&count=N&excludedAttributes=members
//	POST   /Groups             Group → Group (201)
//	GET    /Groups/{id}        Group; ?excludedAttributes=members
//	PUT    /Groups/{id}        Group → Group
//	PATCH  /Groups/{id}        PatchOp → 204
//	DELETE /Groups/{id}        204
//	GET    /ServiceProviderConfig, /ResourceTypes, /Schemas
//
// over a Backend (devid-ca's adapts its inventory). Every request needs
// "Authorization: Bearer TOKEN" with the token of a configured Client; the
// client's name is the actor in the inventory's audit trail, "scim:NAME".
// Only the SHA-256 of a token is configured (NewToken makes one): tokens
// are 256 random bits, so a hash without salt or stretching is as strong
// as the token, and the comparison is constant-time.
//
// # Mapping
//
//   - id: the inventory's stable user (or group) ID, never the email: a
//     userName may change, the id stays.
//   - email (the user's devid identity, their user:EMAIL principal): the
//     userName if it is an email address, else the primary email (else
//     the work one, else the first).
//   - login (login:LOGIN): Config.LoginFrom — by default the part of the
//     userName before "@", in lower case; or the whole userName in lower
//     case; or the part of the email before "@"; or an attribute of an
//     extension schema, as given (e.g.
//     urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber).
//   - groups: a user's groups are the Groups they are a member of: the
//     group's displayName made a principal name (inventory.GroupName:
//     "Engineering Team" → group:Engineering-Team). A group pushed here
//     owns that name: renaming or deleting it renames or removes it in its
//     members' groups. A user's groups attribute is read-only, as RFC 7643
//     says.
//   - active: false disables the user (inventory: no device of theirs gets
//     a certificate, and the SSH user certificates their devices hold are
//     revoked at once); true enables them again, without bringing back
//     what was revoked. DELETE deletes the user (revoked the same way;
//     their workstations quarantined).
//   - userName, externalId, displayName, name.givenName, name.familyName
//     and emails are kept as sent and given back. Other attributes of the
//     core and enterprise User schemas (password among them, never kept),
//     and those of extension schemas, are accepted and not kept.
//
// # What is parsed, and how strictly
//
// Request bodies are JSON objects, attribute names case-insensitive (RFC
// 7643 §2.1); an attribute given twice, an attribute no schema defines, a
// value of the wrong type, or trailing data is a 400 naming it. Filters
// are one or more "ATTRIBUTE eq VALUE" joined by "and": on userName,
// externalId, displayName, id, emails.value (emails[type eq "work"].value),
// and for groups members.value (members[value eq "ID"]); anything else is
// a 400 invalidFilter. PatchOp operations are add, replace and remove, in
// any case ("Replace", as Entra ID sends it), with a path or (add,
// replace) without one; active may be given as "True" or "False" (Entra
// ID's strings). Errors are SCIM Error bodies (status as a string,
// scimType where RFC 7644 §3.12 has one), every response
// application/scim+json.
//
// Paging: startIndex is 1-based (below 1 is 1), count defaults to 100 and
// is at most 1000; resources are listed in a stable order (by id), so
// pages do not shift while a client reads them.
package scim
