package scim

import (
	"net/http"
	"strings"
)

// The discovery endpoints (RFC 7644 §4), minimal: what devid supports, the
// two resource types, and their attributes that devid keeps.

func (h *Handler) serviceProviderConfig(w http.ResponseWriter, r *request) error {
	if _, err := query(r); err != nil {
		return err
	}
	type supported struct {
		Supported bool `json:"supported"`
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"schemas":          []string{"urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"},
		"documentationUri": "https://github.com/devid-ssh/devid#connecting-okta",
		"patch":            supported{true},
		"bulk":             map[string]any{"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
		"filter":           map[string]any{"supported": true, "maxResults": MaxCount},
		"changePassword":   supported{false},
		"sort":             supported{false},
		"etag":             supported{false},
		"authenticationSchemes": []map[string]any{{
			"type": "oauthbearertoken", "name": "Bearer token", "primary": true,
			"description": "A long-lived bearer token made by devid-ca scim-token; devid-ca's configuration holds its SHA-256.",
		}},
		"meta": metaJSON{ResourceType: "ServiceProviderConfig", Location: h.base(r) + "/ServiceProviderConfig"},
	})
	return nil
}

func (h *Handler) resourceTypes(w http.ResponseWriter, r *request) error {
	if _, err := query(r); err != nil {
		return err
	}
	rt := func(name, endpoint, schema string) map[string]any {
		return map[string]any{
			"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:ResourceType"},
			"id":      name, "name": name, "endpoint": endpoint, "schema": schema,
			"meta": metaJSON{ResourceType: "ResourceType", Location: h.base(r) + "/ResourceTypes/" + name},
		}
	}
	all := []map[string]any{rt("User", "/Users", userSchema), rt("Group", "/Groups", groupSchema)}
	return one(w, r, all, "ResourceType")
}

// one answers a list, or, with a name in the path, the one it names.
func one(w http.ResponseWriter, r *request, all []map[string]any, what string) error {
	name := r.PathValue("name")
	if name == "" {
		name = r.PathValue("id")
	}
	if name == "" {
		writeJSON(w, http.StatusOK, listResponse(all, page{start: 1, count: len(all)}))
		return nil
	}
	for _, m := range all {
		if strings.EqualFold(m["id"].(string), name) {
			writeJSON(w, http.StatusOK, m)
			return nil
		}
	}
	return &Error{Status: http.StatusNotFound, Detail: "no " + what + " " + name}
}

func (h *Handler) schemas(w http.ResponseWriter, r *request) error {
	if _, err := query(r); err != nil {
		return err
	}
	attr := func(name, typ string, multi, required bool, mutability string, subs ...map[string]any) map[string]any {
		a := map[string]any{"name": name, "type": typ, "multiValued": multi, "required": required,
			"caseExact": false, "mutability": mutability, "returned": "default", "uniqueness": "none"}
		if len(subs) > 0 {
			a["subAttributes"] = subs
		}
		return a
	}
	s := func(id, name string, attrs ...map[string]any) map[string]any {
		return map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Schema"}, "id": id, "name": name,
			"attributes": attrs, "meta": metaJSON{ResourceType: "Schema", Location: h.base(r) + "/Schemas/" + id}}
	}
	userName := attr("userName", "string", false, true, "readWrite")
	userName["uniqueness"] = "server"
	all := []map[string]any{
		s(userSchema, "User", userName,
			attr("externalId", "string", false, false, "readWrite"),
			attr("name", "complex", false, false, "readWrite",
				attr("givenName", "string", false, false, "readWrite"), attr("familyName", "string", false, false, "readWrite")),
			attr("displayName", "string", false, false, "readWrite"),
			attr("active", "boolean", false, false, "readWrite"),
			attr("emails", "complex", true, false, "readWrite",
				attr("value", "string", false, false, "readWrite"), attr("type", "string", false, false, "readWrite"),
				attr("primary", "boolean", false, false, "readWrite")),
			attr("groups", "complex", true, false, "readOnly",
				attr("value", "string", false, false, "readOnly"), attr("display", "string", false, false, "readOnly"))),
		s(groupSchema, "Group",
			attr("displayName", "string", false, true, "readWrite"),
			attr("externalId", "string", false, false, "readWrite"),
			attr("members", "complex", true, false, "readWrite",
				attr("value", "string", false, false, "immutable"), attr("display", "string", false, false, "readOnly"))),
	}
	return one(w, r, all, "schema")
}
