package seedfile

// Problem codes. They are stable: reports, the ledger and other tools match on them.
// docs/seed-files.md lists each with its meaning. No message quotes a cell's content: a
// shifted column could put a seed anywhere.
const (
	// File-level (Line 0, Field "file").
	CodeFileEmpty         = "file.empty"           // zero bytes, or only blank lines
	CodeFileNotText       = "file.not-text"        // binary, UTF-16 or not UTF-8
	CodeFileNoHeader      = "file.no-header"       // the first line is no recognisable seed-file header
	CodeFileMissingColumn = "file.missing-column"  // the header lacks a required column
	CodeFileHeaderTooLong = "file.header-too-long" // a header line over 1 MiB (headers up to 1 MiB are read; extra columns are ignored)
	CodeFileNoRows        = "file.no-rows"         // a header but no token rows
	CodeFileNotPSKC       = "file.not-pskc"        // --format pskc on a file that is not PSKC XML
	CodePSKCMalformed     = "pskc.malformed"       // XML syntax error or a PSKC element that cannot be read
	CodePSKCKeyMissing    = "pskc.key-missing"     // encrypted secrets but no usable --pskc-key / --pskc-password
	CodePSKCBadKey        = "pskc.bad-key"         // the key or password does not decrypt the file (MAC mismatch or bad padding)
	CodePSKCMACMissing    = "pskc.mac-missing"     // encrypted secrets without a MAC to verify them
	CodePSKCUnsupported   = "pskc.unsupported"     // X.509 key transport: encrypted to a certificate

	CodePSKCUnsupportedAlgorithm = "pskc.unsupported-algorithm" // an encryption, key derivation, PRF or MAC algorithm oathpipe does not implement (named in the message)

	// Row-level.
	CodeRowColumns          = "row.columns"           // the row has a different number of columns than the header
	CodeRowTooLong          = "row.too-long"          // a line longer than 64 KiB
	CodeRowShifted          = "row.columns-shifted"   // a serial, manufacturer or model that decodes (Base32, hex, base64) to 16 bytes or more: a seed in the wrong column
	CodeFieldNotText        = "field.not-text"        // a serial, manufacturer, model or UPN with control characters or bytes that are not UTF-8
	CodeSerialMissing       = "serial.missing"        // empty serial number
	CodeSerialDuplicate     = "serial.duplicate"      // the serial already appeared on an earlier line
	CodeManufacturerMissing = "manufacturer.missing"  // empty manufacturer
	CodeModelMissing        = "model.missing"         // empty model
	CodeUPNMalformed        = "upn.malformed"         // not a user principal name (empty is fine: inventory)
	CodeSecretMissing       = "secret.missing"        // empty secret
	CodeSecretNotBase32     = "secret.not-base32"     // not Base32 (A–Z, 2–7), the default encoding
	CodeSecretNotHex        = "secret.not-hex"        // not hex, with --secret-encoding hex
	CodeSecretNotBase64     = "secret.not-base64"     // PSKC PlainValue that is not Base64
	CodeSecretTooShort      = "secret.too-short"      // under 128 bits (RFC 4226 R6)
	CodeSecretTooLong       = "secret.too-long"       // over Entra's 128 Base32 characters (80 bytes)
	CodeSecretDuplicate     = "secret.duplicate"      // the same seed already appeared under another serial
	CodeSecretMACMismatch   = "secret.mac-mismatch"   // PSKC: this secret's MAC fails while others verified
	CodeIntervalMissing     = "interval.missing"      // empty time interval
	CodeIntervalUnsupported = "interval.unsupported"  // not 30 or 60 seconds (or not a number)
	CodeDigitsUnsupported   = "digits.unsupported"    // not 6 digits (Entra's only length)
	CodeHashUnsupported     = "hash.unsupported"      // not SHA-1 or SHA-256
	CodeAlgorithmHOTP       = "algorithm.hotp"        // PSKC HOTP key: Entra takes TOTP only
	CodeAlgorithmUnknown    = "algorithm.unsupported" // PSKC key that is neither TOTP nor HOTP
)

// Row warnings (Record.Warnings): the row is valid and imported.
const (
	WarnManufacturerHint = "manufacturer.from-hint" // no manufacturer in the file: the manufacturer hint is used
	WarnModelHint        = "model.from-hint"        // no model in the file: the model hint is used
	WarnModelFallback    = "model.fallback"         // no model in the file nor a hint: FallbackModel is used
	WarnKeyExpired       = "key.expired"            // PSKC <Policy><ExpiryDate> has passed
	WarnKeyExpiring      = "key.expiring"           // PSKC <Policy><ExpiryDate> falls within 90 days
)
