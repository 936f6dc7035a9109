package entra

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"

	abs "github.com/microsoft/kiota-abstractions-go"

	"github.com/oathpipe/oathpipe/shared/entra/internal/graphwire"
	"github.com/oathpipe/oathpipe/shared/token"
)

// ListDevices reads one page of the tenant's hardware OATH inventory: the first page (of at
// most pageSize devices, Graph's $top) when link is empty, else the page link names, which must
// be an @odata.nextLink this method returned (a link to anywhere but the inventory is refused,
// so a caller's continuation can never point the app's Graph token elsewhere). next is the
// following page's link ("" on the last page).
func (c *Client) ListDevices(ctx context.Context, link string, pageSize int) (devices []token.Device, next string, err error) {
	const op = "list the hardware token inventory"
	u := link
	if u == "" {
		u = c.devicesURL()
		if pageSize > 0 {
			u += "?$top=" + strconv.Itoa(min(pageSize, 999))
		}
	} else if !c.inventoryLink(u) {
		return nil, "", &token.Error{Kind: token.KindInvalid, Op: op, Message: "the continuation does not name a page of the inventory."}
	}
	var p struct {
		Value    []json.RawMessage `json:"value"`
		NextLink string            `json:"@odata.nextLink"`
	}
	if err := c.send(ctx, abs.GET, u, nil, &p); err != nil {
		return nil, "", c.classify(ctx, graphwire.AreaInventory, op, err)
	}
	devices = make([]token.Device, 0, len(p.Value))
	for _, raw := range p.Value {
		d, err := graphwire.ParseDevice(raw)
		if err != nil {
			return nil, "", &token.Error{Kind: token.KindInternal, Op: op, Message: "Graph's answer could not be read.", Err: err}
		}
		devices = append(devices, d)
	}
	if p.NextLink != "" && !c.inventoryLink(p.NextLink) {
		return nil, "", &token.Error{Kind: token.KindInternal, Op: op, Message: "Graph's next page link leaves the inventory."}
	}
	return devices, p.NextLink, nil
}

// inventoryLink reports whether u is a page of the inventory listing on the configured Graph.
func (c *Client) inventoryLink(u string) bool {
	base, err1 := url.Parse(c.devicesURL())
	pu, err2 := url.Parse(u)
	return err1 == nil && err2 == nil && pu.User == nil && pu.Fragment == "" &&
		strings.EqualFold(pu.Host, base.Host) && pu.EscapedPath() == base.EscapedPath() &&
		(pu.Scheme == base.Scheme || pu.Scheme == "https")
}

// DeleteDevice deletes a device from the inventory (it must be unassigned). A device that is
// already gone is KindNotFound.
func (c *Client) DeleteDevice(ctx context.Context, deviceID string) error {
	op := "delete token " + deviceID
	if strings.TrimSpace(deviceID) == "" {
		return &token.Error{Kind: token.KindInvalid, Op: op, Message: "the device id is empty."}
	}
	if err := c.send(ctx, abs.DELETE, c.devicesURL()+"/"+pathEscape(deviceID), nil, nil); err != nil {
		return c.classify(ctx, graphwire.AreaInventory, op, err)
	}
	return nil
}
