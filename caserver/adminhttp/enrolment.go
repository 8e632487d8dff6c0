package adminhttp

import (
	"net/http"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/revocation"
)

// Onboarding: enrolment tokens, rebinding, and what a device holds.

func (h *Handler) enrolmentRoutes() {
	const p = adminapi.Prefix
	h.mux.HandleFunc("POST "+p+"devices/{ref}/token", h.issueToken)
	h.mux.HandleFunc("POST "+p+"devices/{ref}/rebind", h.rebind)
	h.mux.HandleFunc("GET "+p+"devices/{ref}/details", h.deviceDetails)
}

func (h *Handler) issueToken(w http.ResponseWriter, r *http.Request) {
	var req adminapi.TokenRequest
	if !h.decode(w, r, &req) {
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl == 0 {
			writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: "ttl: " + req.TTL + ": want a duration such as 24h or 90m", Field: "ttl"})
			return
		}
	}
	tok, rec, err := h.store.IssueToken(actor(r), r.PathValue("ref"), ttl)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d, err := h.store.Device(rec.DeviceID)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("enrolment token issued", "admin", actor(r), "device", d.ID, "name", d.Name, "token", rec.Short(), "expires", rec.Expires)
	w.Header().Set("Cache-Control", "no-store") // the answer holds a secret
	writeJSON(w, http.StatusCreated, adminapi.IssuedToken{Token: tok.Text(), Hash: rec.Short(), Device: d.Name, DeviceID: d.ID,
		Kind: adminapi.Kind(d.Kind), Expires: rec.Expires})
}

func (h *Handler) rebind(w http.ResponseWriter, r *http.Request) {
	var req adminapi.RebindRequest
	if !h.decode(w, r, &req) {
		return
	}
	var ek *deviceid.EK
	if req.EK != "" {
		var err error
		if ek, err = deviceid.ParseEKText(req.EK); err != nil {
			writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: "ek: " + err.Error(), Field: "ek"})
			return
		}
	}
	retired, d, err := h.store.Rebind(actor(r), r.PathValue("ref"), req.Reason, ek)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Warn("device rebound to a new TPM", "admin", actor(r), "name", d.Name, "device", d.ID, "status", d.Status,
		"old_tpm", retired.ID, "old_record", retired.Name, "reason", req.Reason)
	writeJSON(w, http.StatusOK, adminapi.Rebound{Device: device(d), Retired: device(retired)})
}

func (h *Handler) deviceDetails(w http.ResponseWriter, r *http.Request) {
	d, err := h.store.Device(r.PathValue("ref"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := adminapi.DeviceDetails{Device: *device(d), Certificates: []adminapi.IssuedCert{}}
	if !inventory.IsPendingID(d.ID) {
		certs, err := h.revoke.IssuedTo(d.ID)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		for _, c := range certs {
			out.Certificates = append(out.Certificates, issuedCert(c))
		}
	}
	last, err := h.store.LastAttestation(d.ID)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if last != nil {
		out.LastAttestation = &adminapi.Attestation{Time: last.Time, Manufacturer: last.Manufacturer, Model: last.Model,
			FirmwareVersion: last.FirmwareVersion, Token: last.Token}
	}
	tok, state, err := h.store.DeviceToken(d)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if tok != nil {
		out.Token = &adminapi.TokenInfo{State: string(state), Hash: tok.Short(), IssuedBy: tok.IssuedBy, Issued: tok.Issued,
			Expires: tok.Expires, Used: tok.Used, BoundTo: tok.BoundTo, Superseded: tok.Superseded}
	}
	writeJSON(w, http.StatusOK, out)
}

func issuedCert(c *revocation.IssuedCert) adminapi.IssuedCert {
	return adminapi.IssuedCert(*c)
}
