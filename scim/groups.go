package scim

import (
	"net/http"
	"slices"
	"strings"
)

// groupJSON is a Group resource as served.
type groupJSON struct {
	Schemas     []string   `json:"schemas"`
	ID          string     `json:"id"`
	ExternalID  string     `json:"externalId,omitempty"`
	DisplayName string     `json:"displayName"`
	Members     *[]refJSON `json:"members,omitempty"`
	Meta        metaJSON   `json:"meta"`
}

func (h *Handler) groupJSON(r *request, g *Group, members bool) groupJSON {
	j := groupJSON{Schemas: []string{groupSchema}, ID: g.ID, ExternalID: g.ExternalID, DisplayName: g.DisplayName,
		Meta: metaJSON{ResourceType: "Group", Created: timeOf(g.Created), LastModified: timeOf(g.Updated), Location: h.base(r) + "/Groups/" + g.ID}}
	if members {
		ms := []refJSON{}
		for _, m := range g.Members {
			ms = append(ms, refJSON{Value: m.ID, Ref: h.base(r) + "/Users/" + m.ID, Display: m.Display})
		}
		j.Members = &ms
	}
	return j
}

func groupView(g *Group) view {
	ms := []element{}
	for _, m := range g.Members {
		ms = append(ms, element{"value": m.ID, "display": m.Display, "type": "User"})
	}
	return view{"id": {{"": g.ID}}, "displayname": {{"": g.DisplayName}}, "externalid": {{"": g.ExternalID}}, "members": ms}
}

var groupFilterAttrs = map[string][]string{"id": {""}, "displayname": {""}, "externalid": {""}, "members": {"value"}}

// withMembers reads attributes and excludedAttributes: whether to give
// members (Entra ID asks for groups without them). Other attributes are
// always given.
func withMembers(q map[string]string) bool {
	has := func(list string) bool {
		for _, a := range strings.Split(list, ",") {
			if strings.EqualFold(strings.TrimSpace(a), "members") {
				return true
			}
		}
		return false
	}
	if a, ok := q["attributes"]; ok && !has(a) {
		return false
	}
	if e, ok := q["excludedAttributes"]; ok && has(e) {
		return false
	}
	return true
}

func (h *Handler) listGroups(w http.ResponseWriter, r *request) error {
	q, p, terms, err := listQuery(r, groupFilterAttrs, "groups")
	if err != nil {
		return err
	}
	groups, err := h.b.Groups()
	if err != nil {
		return err
	}
	slices.SortFunc(groups, func(a, b *Group) int { return strings.Compare(a.ID, b.ID) })
	out := []groupJSON{}
	for _, g := range groups {
		if terms == nil || groupView(g).match(terms) {
			out = append(out, h.groupJSON(r, g, withMembers(q)))
		}
	}
	writeJSON(w, http.StatusOK, listResponse(out, p))
	return nil
}

func (h *Handler) group(id string) (*Group, error) {
	groups, err := h.b.Groups()
	return byID(groups, err, func(g *Group) string { return g.ID }, id, "group")
}

// byID finds the resource with this id in list (as the backend listed
// it, with err), or says there is none: 404.
func byID[T any](list []*T, err error, idOf func(*T) string, id, what string) (*T, error) {
	if err != nil {
		return nil, err
	}
	for _, v := range list {
		if idOf(v) == id {
			return v, nil
		}
	}
	return nil, &Error{Status: http.StatusNotFound, Detail: "no " + what + " with id " + id}
}

func (h *Handler) getGroup(w http.ResponseWriter, r *request) error {
	q, err := query(r, "attributes", "excludedAttributes")
	if err != nil {
		return err
	}
	g, err := h.group(r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, h.groupJSON(r, g, withMembers(q)))
	return nil
}

func membersOf(ids []string) []Member {
	out := make([]Member, len(ids))
	for i, id := range ids {
		out[i] = Member{ID: id}
	}
	return out
}

func (h *Handler) createGroup(w http.ResponseWriter, r *request) error {
	b, err := body(r)
	if err != nil {
		return err
	}
	in, err := parseWholeGroup(b)
	if err != nil {
		return err
	}
	g := &Group{}
	in.apply(g)
	created, err := h.b.CreateGroup(r.actor(), g)
	if err != nil {
		return err
	}
	h.cfg.Log.Info("SCIM group created", "client", r.client.Name, "id", created.ID, "display_name", created.DisplayName, "members", len(created.Members))
	w.Header().Set("Location", h.base(r)+"/Groups/"+created.ID)
	writeJSON(w, http.StatusCreated, h.groupJSON(r, created, true))
	return nil
}

func (h *Handler) putGroup(w http.ResponseWriter, r *request) error {
	b, err := body(r)
	if err != nil {
		return err
	}
	in, err := parseWholeGroup(b)
	if err != nil {
		return err
	}
	g, err := h.b.UpdateGroup(r.actor(), r.PathValue("id"), func(g *Group) error {
		in.apply(g)
		return nil
	})
	if err != nil {
		return err
	}
	h.cfg.Log.Info("SCIM group replaced", "client", r.client.Name, "id", g.ID, "display_name", g.DisplayName, "members", len(g.Members))
	writeJSON(w, http.StatusOK, h.groupJSON(r, g, true))
	return nil
}

// patchGroup answers 204: Entra ID advises it, and Okta takes it.
func (h *Handler) patchGroup(w http.ResponseWriter, r *request) error {
	b, err := body(r)
	if err != nil {
		return err
	}
	ops, err := parsePatch(b)
	if err != nil {
		return err
	}
	g, err := h.b.UpdateGroup(r.actor(), r.PathValue("id"), func(g *Group) error { return applyGroupOps(g, ops) })
	if err != nil {
		return err
	}
	h.cfg.Log.Info("SCIM group changed", "client", r.client.Name, "id", g.ID, "display_name", g.DisplayName, "members", len(g.Members))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) deleteGroup(w http.ResponseWriter, r *request) error {
	id := r.PathValue("id")
	if err := h.b.DeleteGroup(r.actor(), id); err != nil {
		return err
	}
	h.cfg.Log.Info("SCIM group deleted", "client", r.client.Name, "id", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// parseWholeGroup parses the body of a POST or PUT: a whole group, which
// must have a displayName.
func parseWholeGroup(b []byte) (*groupInput, error) {
	in, err := parseGroup(b)
	if err != nil {
		return nil, err
	}
	if in.displayName == nil || *in.displayName == "" {
		return nil, badRequest("invalidValue", "Group: displayName is required")
	}
	return in, nil
}

// apply sets what a POST or PUT gives on g; what it does not give is kept.
func (in *groupInput) apply(g *Group) {
	g.DisplayName = *in.displayName
	if in.externalID != nil {
		g.ExternalID = *in.externalID
	}
	if in.members != nil {
		g.Members = membersOf(*in.members)
	}
}
