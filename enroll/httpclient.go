package enroll

import "net/http"

// SetHTTPClient makes c send its requests to the CA with hc instead of the
// client New made: a load tool (cmd/devid-bench) wraps the transport to
// time each request. hc must trust only the pinned roots, as New's does.
func (c *Client) SetHTTPClient(hc *http.Client) { c.hc = hc }
