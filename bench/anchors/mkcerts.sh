#!/bin/bash
# Creates ECDSA P-256 PKI: server CA -> server cert (CN=localhost), device CA -> device client cert
# Usage: mkcerts.sh [DIR] (default: pki/ beside this script). Same as the 2026-11-23 anchors.
set -e
mkdir -p "${1:-$(dirname "$0")/pki}"
cd "${1:-$(dirname "$0")/pki}"
C="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $C -keyout ca.key -out ca.crt -days 3650 -subj "/CN=Test Server CA" 2>/dev/null
openssl req -x509 $C -keyout devca.key -out devca.crt -days 3650 -subj "/CN=Test Device CA" 2>/dev/null
openssl req $C -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 825 -extfile server.ext 2>/dev/null
openssl req $C -keyout device.key -out device.csr -subj "/CN=device-0001" 2>/dev/null
printf "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n" > device.ext
openssl x509 -req -in device.csr -CA devca.crt -CAkey devca.key -CAcreateserial -out device.crt -days 825 -extfile device.ext 2>/dev/null
chmod 644 *.key
openssl verify -CAfile ca.crt server.crt >/dev/null
openssl verify -CAfile devca.crt device.crt >/dev/null
