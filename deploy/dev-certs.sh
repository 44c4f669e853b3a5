#!/usr/bin/env bash
# Development TLS material for otahub (never for production), made with the OpenSSL CLI, P-256 keys.
#
#   deploy/dev-certs.sh [DIR]        DIR defaults to deploy/dev-certs
#
# Writes, keeping whatever is already there and still valid:
#   server-ca.pem, server-ca-key.pem   dev server CA (clients trust server-ca.pem)
#   server.pem, server-key.pem         server certificate for localhost, 127.0.0.1 and ::1, chain leaf + CA
#   device-ca.pem, device-ca-key.pem   dev device CA and its key (signs device certificates)
# OTAHUB_DEV_CERT_SANS adds names to a new server certificate, e.g. "DNS:hub.lan,IP:192.168.1.20".
# server-key.pem is world-readable so that the otahub container user can read it through a read-only
# bind mount (docker-compose.yml); the CA keys are readable by their owner only.
set -Eeuo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:-$script_dir/dev-certs}
command -v openssl >/dev/null || { echo "dev-certs.sh: openssl is not installed" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

made=()
kept=()

new_key() {
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null)
}

# usage: make_ca NAME "Common Name"
make_ca() {
    new_key "$1-key.pem"
    openssl req -new -x509 -sha256 -days 3650 -key "$1-key.pem" -out "$1.pem" \
        -subj "/O=otahub development/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
        -addext "subjectKeyIdentifier=hash"
    made+=("$1.pem" "$1-key.pem")
}

usable_cert() {
    [[ -s $1 ]] && openssl x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1
}

usable_pair() {
    [[ -s $2 ]] && usable_cert "$1" &&
        [[ $(openssl x509 -in "$1" -noout -pubkey 2>/dev/null) == \
           "$(openssl pkey -in "$2" -pubout 2>/dev/null)" ]]
}

server_ca_new=0
if usable_pair server-ca.pem server-ca-key.pem; then
    kept+=(server-ca.pem)
else
    make_ca server-ca "otahub dev server CA"
    server_ca_new=1
fi

if ((server_ca_new == 0)) && usable_pair server.pem server-key.pem &&
    openssl verify -CAfile server-ca.pem server.pem >/dev/null 2>&1; then
    kept+=(server.pem)
else
    new_key "$work/server-key.pem"
    openssl req -new -sha256 -key "$work/server-key.pem" -out "$work/server.csr" \
        -subj "/O=otahub development/CN=localhost"
    sans="DNS:localhost,IP:127.0.0.1,IP:::1${OTAHUB_DEV_CERT_SANS:+,$OTAHUB_DEV_CERT_SANS}"
    cat >"$work/server.ext" <<EOF
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $sans
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    openssl x509 -req -sha256 -days 825 -in "$work/server.csr" -CA server-ca.pem \
        -CAkey server-ca-key.pem -CAcreateserial -CAserial "$work/server-ca.srl" \
        -extfile "$work/server.ext" -out "$work/server-leaf.pem" 2>/dev/null
    cat "$work/server-leaf.pem" server-ca.pem >server.pem
    install -m 0644 "$work/server-key.pem" server-key.pem
    made+=(server.pem server-key.pem)
fi

if usable_pair device-ca.pem device-ca-key.pem; then
    kept+=(device-ca.pem)
else
    make_ca device-ca "otahub dev device CA"
fi

chmod 0644 server-ca.pem server.pem server-key.pem device-ca.pem
chmod 0600 server-ca-key.pem device-ca-key.pem

if ((${#made[@]})); then echo "dev-certs: made ${made[*]} in $dir"; fi
if ((${#kept[@]})); then echo "dev-certs: kept ${kept[*]} in $dir"; fi
