package vault

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/token"
)

// The secrets that open delivered seed files (brief decision 4): the PGP private key, one
// ASCII-armored key per secret version (older enabled versions are older keys, still tried),
// and the accepted zip passwords as a JSON array of strings.
const (
	DefaultPGPKeySecret       = "oathpipe-pgp-key"
	DefaultZipPasswordsSecret = "oathpipe-zip-passwords"
	PGPKeyContentType         = "application/pgp-keys"
	ZipPasswordsContentType   = "application/json"
	tagPGPKeyValue            = "pgp-key-v1"
	maxPGPKeyVersions         = 25
	tagKeyCreated             = "keyCreated"
)

// PGPKeys returns the value of every enabled version of the secret name, newest first: the
// armored private keys. No secret (or none enabled) is an empty list, not an error.
func (v *Vault) PGPKeys(ctx context.Context, name string) ([][]byte, error) {
	op := "read the PGP keys in secret " + name
	type ver struct {
		id      string
		created time.Time
	}
	var vers []ver
	pager := v.client.NewListSecretPropertiesVersionsPager(name, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			err = classify(op, err)
			if token.KindOf(err) == token.KindNotFound {
				return nil, nil
			}
			return nil, err
		}
		for _, p := range page.Value {
			a := p.Attributes
			if p.ID == nil || a == nil || a.Enabled == nil || !*a.Enabled {
				continue
			}
			if a.Expires != nil && a.Expires.Before(time.Now()) {
				continue // Key Vault refuses to read an expired version
			}
			// Key Vault's created time has whole seconds: PutPGPKey's tag orders keys made
			// within one second.
			var created time.Time
			if a.Created != nil {
				created = *a.Created
			}
			if t, err := time.Parse(time.RFC3339Nano, tag(p.Tags, tagKeyCreated)); err == nil {
				created = t
			}
			vers = append(vers, ver{p.ID.Version(), created})
		}
	}
	// Key Vault lists versions in no documented order.
	slices.SortFunc(vers, func(a, b ver) int { return cmp.Or(b.created.Compare(a.created), strings.Compare(b.id, a.id)) })
	if len(vers) > maxPGPKeyVersions {
		v.log.WarnContext(ctx, "only the newest PGP key versions are tried", logctx.Secret, name, "versions", len(vers), "tried", maxPGPKeyVersions)
		vers = vers[:maxPGPKeyVersions]
	}
	keys := make([][]byte, 0, len(vers))
	for _, ver := range vers {
		resp, err := v.client.GetSecret(ctx, name, ver.id, nil)
		if err != nil {
			err = classify(op, err)
			if token.KindOf(err) == token.KindNotFound || token.KindOf(err) == token.KindConflict {
				continue // deleted or disabled between the listing and the read
			}
			return nil, err
		}
		if resp.Value != nil && strings.TrimSpace(*resp.Value) != "" {
			keys = append(keys, []byte(*resp.Value))
		}
	}
	return keys, nil
}

// PutPGPKey stores armored as a new version of the secret name (older versions stay enabled,
// so files encrypted to an older key still open).
func (v *Vault) PutPGPKey(ctx context.Context, name, armored, fingerprint string) error {
	_, err := v.client.SetSecret(ctx, name, azsecrets.SetSecretParameters{
		Value:       &armored,
		ContentType: ptr(PGPKeyContentType),
		Tags: map[string]*string{TagApp: ptr(tagPGPKeyValue), TagFingerprint: ptr(fingerprint),
			tagKeyCreated: ptr(time.Now().UTC().Format(time.RFC3339Nano))},
	}, nil)
	if err != nil {
		return classify("store the PGP key in secret "+name, err)
	}
	v.log.InfoContext(ctx, "PGP key stored as a new secret version", logctx.Secret, name, logctx.Fingerprint, fingerprint)
	return nil
}

// ZipPasswords returns the accepted zip passwords held in the secret name (a JSON array of
// strings). No secret is an empty list; a value that is not such an array is KindInvalid.
func (v *Vault) ZipPasswords(ctx context.Context, name string) ([]string, error) {
	op := "read the zip passwords in secret " + name
	resp, err := v.client.GetSecret(ctx, name, "", nil)
	if err != nil {
		err = classify(op, err)
		if token.KindOf(err) == token.KindNotFound {
			return nil, nil
		}
		return nil, err
	}
	if resp.Value == nil {
		return nil, nil
	}
	var pw []string
	if err := json.Unmarshal([]byte(*resp.Value), &pw); err != nil {
		return nil, &token.Error{Kind: token.KindInvalid, Op: op, Message: fmt.Sprintf("secret %s must hold a JSON array of strings, e.g. [\"first\",\"second\"]", name)}
	}
	return slices.DeleteFunc(pw, func(s string) bool { return s == "" }), nil
}

// PutZipPasswords stores the accepted zip passwords as a new version of the secret name.
func (v *Vault) PutZipPasswords(ctx context.Context, name string, passwords []string) error {
	b, err := json.Marshal(passwords)
	if err != nil {
		return err
	}
	value := string(b)
	if _, err := v.client.SetSecret(ctx, name, azsecrets.SetSecretParameters{
		Value: &value, ContentType: ptr(ZipPasswordsContentType),
		Tags: map[string]*string{TagApp: ptr("zip-passwords-v1")},
	}, nil); err != nil {
		return classify("store the zip passwords in secret "+name, err)
	}
	v.log.InfoContext(ctx, "zip passwords stored as a new secret version", logctx.Secret, name, "count", len(passwords))
	return nil
}

// EnvelopeSecrets reads the PGP keys and zip passwords from the two named secrets: the
// pipeline's EnvelopeKeys.
type EnvelopeSecrets struct {
	Vault        *Vault
	PGPKeySecret string // default DefaultPGPKeySecret
	ZipSecret    string // default DefaultZipPasswordsSecret
}

// PGPKeys implements pipeline.EnvelopeKeys.
func (s EnvelopeSecrets) PGPKeys(ctx context.Context) ([][]byte, error) {
	return s.Vault.PGPKeys(ctx, cmp.Or(s.PGPKeySecret, DefaultPGPKeySecret))
}

// ZipPasswords implements pipeline.EnvelopeKeys.
func (s EnvelopeSecrets) ZipPasswords(ctx context.Context) ([]string, error) {
	return s.Vault.ZipPasswords(ctx, cmp.Or(s.ZipSecret, DefaultZipPasswordsSecret))
}
