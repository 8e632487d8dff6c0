package adminapi

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client calls the admin API over TLS, trusting only the pinned roots.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client for the CA at caURL (https://host:port),
// trusting only roots, authenticating with cert (the admin certificate).
func NewClient(caURL string, roots *x509.CertPool, cert *tls.Certificate) (*Client, error) {
	u, err := url.Parse(caURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("adminapi: CA URL %q: want https://host[:port]", caURL)
	}
	tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return &Client{
		base: strings.TrimRight(u.String(), "/"),
		hc: &http.Client{
			Timeout:   60 * time.Second,
			Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true},
		},
	}, nil
}

// APIError is an error the CA answered with.
type APIError struct {
	Status  int    // HTTP status
	Message string // the CA's error text
	Field   string // the field it is about, if any
	Line    int    // the import line it is about, if any
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

func (c *Client) do(method, path string, query url.Values, body io.Reader, contentType string, out any) error {
	return c.doLimit(method, path, query, body, contentType, out, MaxBody)
}

// MaxImportReport bounds the report of an import the Client reads: a
// result per row.
const MaxImportReport = 1 << 30

func (c *Client) doLimit(method, path string, query url.Values, body io.Reader, contentType string, out any, limit int64) error {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return fmt.Errorf("adminapi: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("adminapi: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return fmt.Errorf("adminapi: %s %s: reading response: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e ErrorResponse
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
			if e.Error == "" {
				e.Error = resp.Status
			}
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error, Field: e.Field, Line: e.Line}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("adminapi: %s %s: decoding response: %w", method, path, err)
	}
	return nil
}

func (c *Client) doJSON(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return c.do(method, path, nil, body, "application/json", out)
}

// WhoAmI returns the admin name the CA sees.
func (c *Client) WhoAmI() (string, error) {
	var out WhoAmI
	err := c.doJSON("GET", Prefix+"whoami", nil, &out)
	return out.Admin, err
}

// Devices lists devices; filter may hold status, kind, collection, owner.
func (c *Client) Devices(filter url.Values) ([]*Device, error) {
	var out DeviceList
	err := c.do("GET", Prefix+"devices", filter, nil, "", &out)
	return out.Devices, err
}

// Device returns a device by ID or name.
func (c *Client) Device(ref string) (*Device, error) {
	var d Device
	err := c.doJSON("GET", Prefix+"devices/"+url.PathEscape(ref), nil, &d)
	return &d, err
}

// AddDevice registers a device.
func (c *Client) AddDevice(nd NewDevice) (*Device, error) {
	var d Device
	err := c.doJSON("POST", Prefix+"devices", nd, &d)
	return &d, err
}

// SetStatus quarantines, retires or activates a device.
func (c *Client) SetStatus(ref string, st Status, reason string) (*Device, error) {
	return c.ChangeStatus(ref, StatusRequest{Status: st, Reason: reason})
}

// ChangeStatus quarantines (for a time, with For), retires or activates a
// device.
func (c *Client) ChangeStatus(ref string, req StatusRequest) (*Device, error) {
	var d Device
	err := c.doJSON("POST", Prefix+"devices/"+url.PathEscape(ref)+"/status", req, &d)
	return &d, err
}

// ImportDevices sends an export (CSV or JSON) to import; file names it in
// errors.
func (c *Client) ImportDevices(file string, data []byte, dryRun bool) (*ImportReport, error) {
	return c.ImportDevicesFrom(file, bytes.NewReader(data), dryRun)
}

// ImportDevicesFrom is ImportDevices for an export read from r as it is
// sent (a file of any size: the CA bounds it).
func (c *Client) ImportDevicesFrom(file string, r io.Reader, dryRun bool) (*ImportReport, error) {
	return c.doImportQuery("devices", file, r, dryRun, url.Values{})
}

// ImportUsers sends a user export (CSV or JSON) to import.
func (c *Client) ImportUsers(file string, data []byte, dryRun bool) (*ImportReport, error) {
	return c.ImportUsersFrom(file, bytes.NewReader(data), dryRun)
}

// ImportUsersFrom is ImportUsers for an export read from r as it is sent.
func (c *Client) ImportUsersFrom(file string, r io.Reader, dryRun bool) (*ImportReport, error) {
	return c.doImportQuery("users", file, r, dryRun, url.Values{})
}

// ImportMDM sends an MDM's device export (Jamf Pro, Intune) to import.
func (c *Client) ImportMDM(file string, data []byte, opts MDMImport, dryRun bool) (*ImportReport, error) {
	return c.ImportMDMFrom(file, bytes.NewReader(data), opts, dryRun)
}

// ImportMDMFrom is ImportMDM for an export read from r as it is sent.
func (c *Client) ImportMDMFrom(file string, r io.Reader, opts MDMImport, dryRun bool) (*ImportReport, error) {
	q := url.Values{"format": {opts.Format}}
	for k, v := range map[string]string{"missing": opts.Missing, "kind": opts.Kind, "collection": opts.Collection} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return c.doImportQuery("devices", file, r, dryRun, q)
}

func (c *Client) doImportQuery(what, file string, r io.Reader, dryRun bool, q url.Values) (*ImportReport, error) {
	var rep ImportReport
	q.Set("file", file)
	q.Set("dry_run", strconv.FormatBool(dryRun))
	err := c.doLimit("POST", Prefix+"import/"+what, q, r, "application/octet-stream", &rep, MaxImportReport)
	return &rep, err
}

// Users lists users.
func (c *Client) Users() ([]*User, error) {
	var out UserList
	err := c.doJSON("GET", Prefix+"users", nil, &out)
	return out.Users, err
}

// User returns a user by email.
func (c *Client) User(email string) (*User, error) {
	var u User
	err := c.doJSON("GET", Prefix+"users/"+url.PathEscape(email), nil, &u)
	return &u, err
}

// AddUser adds a user.
func (c *Client) AddUser(nu NewUser) (*User, error) {
	var u User
	err := c.doJSON("POST", Prefix+"users", nu, &u)
	return &u, err
}

// Audit returns the audit trail, optionally for one subject (device ID or
// name, or user email).
func (c *Client) Audit(subject string) ([]AuditEntry, error) {
	var out AuditList
	var q url.Values
	if subject != "" {
		q = url.Values{"subject": {subject}}
	}
	err := c.do("GET", Prefix+"audit", q, nil, "", &out)
	return out.Entries, err
}

// RevokeCert revokes a certificate by serial, or by the certificate itself
// (authorized_keys format).
func (c *Client) RevokeCert(req RevokeRequest) (*RevokedCert, error) {
	var rc RevokedCert
	err := c.doJSON("POST", Prefix+"certs/revoke", req, &rc)
	return &rc, err
}

// Collections lists collections: those set, and those devices name with
// their defaults.
func (c *Client) Collections() ([]*Collection, error) {
	var out CollectionList
	err := c.doJSON("GET", Prefix+"collections", nil, &out)
	return out.Collections, err
}

// Collection returns a collection.
func (c *Client) Collection(name string) (*Collection, error) {
	var out Collection
	err := c.doJSON("GET", Prefix+"collections/"+url.PathEscape(name), nil, &out)
	return &out, err
}

// SetCollection creates or changes a collection; nil fields keep their
// values.
func (c *Client) SetCollection(name string, u CollectionUpdate) (*Collection, error) {
	var out Collection
	err := c.doJSON("PUT", Prefix+"collections/"+url.PathEscape(name), u, &out)
	return &out, err
}
