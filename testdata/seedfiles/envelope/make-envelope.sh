#!/usr/bin/env bash
# Makes the delivered-file fixtures of shared/envelope, validate and the pipeline with the
# tools vendors use: GnuPG 2.2 (Debian gnupg), Info-ZIP zip 3.0 (Debian zip), 7-Zip 26
# (Debian 7zip, 7zz). Fake seeds only (testdata/demo/token2-batch-clean.csv).
#   apt-get install -y gnupg zip 7zip && bash testdata/seedfiles/envelope/make-envelope.sh
# Keys are made anew on every run, so every .gpg/.asc here changes together.
set -euo pipefail
cd "$(dirname "$0")"
root=../../..
clean=$root/testdata/demo/token2-batch-clean.csv
GNUPGHOME=$(mktemp -d)
export GNUPGHOME
trap 'rm -rf "$GNUPGHOME" work' EXIT
g() { gpg --batch --quiet --pinentry-mode loopback --trust-model always "$@"; }

# RSA-3072 and Curve25519 (ed25519 primary + cv25519 encryption subkey, GnuPG's default),
# no passphrase, as `oathpipe pgp-keygen` stores them; one protected by a passphrase; one the
# deployment does not hold.
g --passphrase '' --quick-gen-key 'oathpipe fixture RSA <rsa@fixture.example>' rsa3072 cert,sign never
rsafpr=$(gpg --batch --with-colons --list-keys rsa@fixture.example | awk -F: '/^fpr/ {print $10; exit}')
g --passphrase '' --quick-add-key "$rsafpr" rsa3072 encr never
g --passphrase '' --quick-gen-key 'oathpipe fixture 25519 <cv25519@fixture.example>' future-default default never
g --passphrase 'fixture passphrase' --quick-gen-key 'oathpipe fixture protected <protected@fixture.example>' future-default default never
g --passphrase '' --quick-gen-key 'someone else <other@fixture.example>' future-default default never
for k in rsa cv25519 protected other; do
  pass=''; [ $k = protected ] && pass='fixture passphrase'
  g --passphrase "$pass" --armor --export-secret-keys "$k@fixture.example" > key-$k.asc
done
g --armor --export cv25519@fixture.example > key-cv25519.pub.asc

enc() { rm -f "$3"; g -r "$1" "${@:4}" --output "$3" --encrypt "$2"; }
enc rsa@fixture.example $clean clean.csv.rsa.gpg
enc rsa@fixture.example $clean clean.csv.rsa.asc --armor
enc cv25519@fixture.example $clean clean.csv.cv25519.gpg
enc cv25519@fixture.example $clean clean.csv.cv25519.asc --armor
enc protected@fixture.example $clean clean.csv.protected.gpg
enc other@fixture.example $clean clean.csv.other.gpg
# Signed by a key the deployment does not know, encrypted to it: read; the signature is not checked.
enc cv25519@fixture.example $clean clean.csv.signed.gpg --sign --local-user other@fixture.example

mkdir -p work && cp $clean work/batch-a.csv && cp $root/testdata/demo/token2-batch-mistakes.csv work/batch-b.csv
rm -f ./*.zip
(cd work && zip -q -P 'zip fixture password' ../zipcrypto.zip batch-a.csv)
(cd work && zip -q -P 'zip fixture password' - batch-a.csv > ../zipcrypto-stream.zip) # streamed: a data descriptor, the check byte is the DOS time's
(cd work && 7zz a -bso0 -tzip -p'zip fixture password' ../zipcrypto-7z.zip batch-a.csv)
(cd work && zip -q ../plain.zip batch-a.csv batch-b.csv)
(cd work && 7zz a -bso0 -tzip -mem=AES256 -p'zip fixture password' ../aes256.zip batch-a.csv)
(cd work && 7zz a -bso0 -tzip -mem=AES128 -p'zip fixture password' ../aes128.zip batch-a.csv)
(cd work && 7zz a -bso0 -tzip -mem=AES256 -mx=0 -p'zip fixture password' ../aes256-stored.zip batch-a.csv)
(cd work && zip -q -P 'zip fixture password' ../nested.zip ../zipcrypto.zip)
enc cv25519@fixture.example aes256.zip aes256.zip.gpg
# Test keys for the demo: oathpipe-dev demo --pgp-key testdata/demo/pgp-demo-key.asc --files token2-batch-clean.csv.gpg
cp key-cv25519.asc $root/testdata/demo/pgp-demo-key.asc
cp clean.csv.cv25519.gpg $root/testdata/demo/token2-batch-clean.csv.gpg
cp aes256.zip $root/testdata/demo/token2-batch-clean.zip
