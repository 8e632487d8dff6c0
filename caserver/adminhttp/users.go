package adminhttp

import (
	"net/http"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/inventory"
)

// routeUsers adds the off-boarding routes (adminapi/users.go).
func (h *Handler) routeUsers() {
	const p = adminapi.Prefix
	h.mux.HandleFunc("POST "+p+"users/{email}/status", h.setUserStatus)
	h.mux.HandleFunc("DELETE "+p+"users/{email}", h.deleteUser)
}

func (h *Handler) setUserStatus(w http.ResponseWriter, r *http.Request) {
	var req adminapi.UserStatusRequest
	if !h.decode(w, r, &req) {
		return
	}
	if req.Disabled == nil {
		h.fail(w, r, &inventory.Error{Kind: inventory.ErrInvalid, Field: "disabled", Msg: "required: true to disable the user, false to enable them"})
		return
	}
	u, err := h.store.SetUserDisabled(actor(r), r.PathValue("email"), *req.Disabled, req.Reason)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	devs, err := h.store.Devices()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := &adminapi.UserDevices{User: user(u), Devices: []*adminapi.Device{}}
	for _, d := range devs {
		if d.Owner == u.Email {
			out.Devices = append(out.Devices, device(d))
		}
	}
	h.log.Warn("user status changed", "admin", actor(r), "user", u.Email, "disabled", u.Disabled, "devices", len(out.Devices), "reason", req.Reason)
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) deleteUser(w http.ResponseWriter, r *http.Request) {
	var req adminapi.ReasonRequest
	if r.ContentLength != 0 && !h.decode(w, r, &req) {
		return
	}
	del, err := h.store.DeleteUser(actor(r), r.PathValue("email"), req.Reason)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := &adminapi.UserDevices{User: user(del.User), Devices: []*adminapi.Device{}}
	for _, d := range del.Devices {
		out.Devices = append(out.Devices, device(d))
	}
	h.log.Warn("user deleted", "admin", actor(r), "user", del.User.Email, "devices", len(out.Devices), "reason", req.Reason)
	writeJSON(w, http.StatusOK, out)
}
