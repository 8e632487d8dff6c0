package adminhttp

import (
	"io"
	"net/http"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/inventory"
)

// importMDM serves POST /devid/v1/import/devices?format=jamf|intune
// [&missing=keep|quarantine&kind=K&collection=C&file=NAME&dry_run=BOOL]:
// an MDM's device export.
func (h *Handler) importMDM(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := inventory.MDMOptions{Format: q.Get("format"), Missing: q.Get("missing"), Kind: q.Get("kind"), Collection: q.Get("collection")}
	h.doImport(w, r, func(actor, file string, body io.Reader, iopts inventory.ImportOptions) (*inventory.ImportReport, error) {
		return h.store.ImportMDMFrom(actor, file, body, opts, iopts)
	}, "format", "missing", "kind", "collection")
}

// quarantineFor quarantines a device for req.For: a temporary quarantine.
func (h *Handler) quarantineFor(actor, ref string, req adminapi.StatusRequest) (*inventory.Device, error) {
	if req.Status != adminapi.StatusQuarantined {
		return nil, &inventory.Error{Kind: inventory.ErrInvalid, Field: "for", Msg: "only a quarantine has a duration (status quarantined)"}
	}
	dur, err := time.ParseDuration(req.For)
	if err != nil {
		return nil, &inventory.Error{Kind: inventory.ErrInvalid, Field: "for", Msg: "want a duration such as 2h or 90m: " + err.Error()}
	}
	if dur == 0 {
		return nil, &inventory.Error{Kind: inventory.ErrInvalid, Field: "for", Msg: "0: leave it out for a quarantine with no end"}
	}
	return h.store.Quarantine(actor, ref, req.Reason, dur)
}
