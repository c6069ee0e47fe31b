#!/usr/bin/env bash
# Makes a local certificate authority and a server certificate for NATS over TLS.
#
#   deploy/make-certs.sh [OUT_DIR] [NAME...]
#
# OUT_DIR (default deploy/certs, git-ignored) receives:
#   ca.pem / ca-key.pem           the local CA (kept and reused when present, so clients keep trusting it)
#   server-cert.pem / server-key.pem   the nats-server certificate, signed by that CA, valid for
#                                 localhost, 127.0.0.1, ::1, nats, nats-1, nats-2, nats-3 and every NAME given
#                                 (a host name, or an IP address)
# Services then connect with NATS_URL=tls://HOST:4222 and NATS_CA=OUT_DIR/ca.pem;
# nats-server-tls.conf reads NATS_TLS_CERT / NATS_TLS_KEY (and NATS_TLS_CA) from the environment.
# Needs openssl. Keys are RSA 2048, the server certificate lasts 825 days, the CA 10 years.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-$here/certs}
(($# == 0)) || shift
command -v openssl >/dev/null 2>&1 || { echo "make-certs: error: openssl not found (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
umask 077

if [[ ! -s ca.pem || ! -s ca-key.pem ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
        -keyout ca-key.pem -out ca.pem -subj "/CN=nats-chat local CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
    echo "make-certs: created CA $out/ca.pem" >&2
fi

sans="DNS:localhost,IP:127.0.0.1,IP:::1,DNS:nats,DNS:nats-1,DNS:nats-2,DNS:nats-3"
for name in "$@"; do
    if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then sans+=",IP:$name"; else sans+=",DNS:$name"; fi
done

extensions=$(mktemp)
trap 'rm -f "$extensions" server.csr' EXIT
cat >"$extensions" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$sans
EXT
openssl req -newkey rsa:2048 -nodes -sha256 -keyout server-key.pem -out server.csr -subj "/CN=nats" 2>/dev/null
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 -sha256 \
    -extfile "$extensions" -out server-cert.pem 2>/dev/null
chmod 644 ca.pem server-cert.pem
# The server key must be readable by the nats-server user inside a container.
chmod 644 server-key.pem
echo "make-certs: created $out/server-cert.pem for $sans" >&2
