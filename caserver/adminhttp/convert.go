package adminhttp

import (
	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/revocation"
)

// The stores' types and the wire types have the same fields, in the same
// order, with the same JSON: a response is byte for byte what the store's
// record would marshal to (convert_test.go checks it field by field).
// Where the field types allow, a Go conversion does the work, and a field
// added to one side and not the other fails to compile.

func device(d *inventory.Device) *adminapi.Device {
	return &adminapi.Device{
		ID: d.ID, Name: d.Name, Kind: adminapi.Kind(d.Kind), Collection: d.Collection, Owner: d.Owner,
		Status: adminapi.Status(d.Status), StatusReason: d.StatusReason, StatusChanged: d.StatusChanged,
		QuarantineUntil: d.QuarantineUntil, EKPublic: d.EKPublic, EKCert: d.EKCert, HostNames: d.HostNames,
		Serial: d.Serial, AssetTag: d.AssetTag, OS: d.OS, Source: d.Source, SourceID: d.SourceID,
		Created: d.Created, Updated: d.Updated,
	}
}

func user(u *inventory.User) *adminapi.User {
	w := &adminapi.User{ID: u.ID, Email: u.Email, Login: u.Login, Groups: u.Groups, Disabled: u.Disabled, DisabledBy: u.DisabledBy,
		StatusReason: u.StatusReason, StatusChanged: u.StatusChanged, Created: u.Created, Updated: u.Updated}
	if s := u.SCIM; s != nil {
		w.SCIM = &adminapi.SCIMIdentity{UserName: s.UserName, ExternalID: s.ExternalID, DisplayName: s.DisplayName,
			GivenName: s.GivenName, FamilyName: s.FamilyName}
		for _, e := range s.Emails {
			w.SCIM.Emails = append(w.SCIM.Emails, adminapi.SCIMEmail(e))
		}
	}
	return w
}

func importReport(r *inventory.ImportReport) *adminapi.ImportReport {
	out := &adminapi.ImportReport{DryRun: r.DryRun, Counts: r.Counts, Results: make([]adminapi.ImportResult, len(r.Results))}
	for i, res := range r.Results {
		out.Results[i] = adminapi.ImportResult(res)
	}
	return out
}

func revokedCert(rc *revocation.RevokedCert) *adminapi.RevokedCert {
	w := adminapi.RevokedCert(*rc)
	return &w
}

func collection(c *inventory.Collection) *adminapi.Collection {
	w := adminapi.Collection(*c)
	return &w
}
