package runner

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/oathpipe/oathpipe/handlers"
)

// dataBytes reads Data[key] of a blob trigger's invocation as the host sends it: a JSON string
// (possibly a string holding a JSON string) of base64-encoded content.
func dataBytes(in *handlers.Invocation, key string) ([]byte, error) {
	s, ok := in.DataString(key)
	if !ok {
		return nil, fmt.Errorf("invocation has no Data.%s", key)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("Data.%s is not base64: %w", key, err)
	}
	return b, nil
}

// metaObject decodes Metadata[key] (an object, or a string holding one) into v.
func metaObject(in *handlers.Invocation, key string, v any) error {
	raw, ok := in.Metadata[key]
	if !ok {
		return fmt.Errorf("invocation has no Metadata.%s", key)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		raw = json.RawMessage(s)
	}
	return json.Unmarshal(raw, v)
}
