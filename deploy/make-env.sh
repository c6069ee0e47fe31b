#!/usr/bin/env bash
# Writes the .env file Docker Compose reads (next to docker-compose.yml): one random password per NATS
# user of deploy/auth.conf, and the cluster routes' (NATS_ROUTE_PASSWORD, used by
# docker-compose.cluster.yml only). The Compose files have no default passwords and refuse to start
# without them.
#
#   deploy/make-env.sh [ENV_FILE]     default: .env at the top of the repository
#
# Idempotent: a password already in the file is kept, so running it again never locks a running
# deployment out; only missing ones are added. A new file is created with mode 600. Passwords are 32
# letters and digits from /dev/urandom, the first a letter (nats-server reads a variable's value as a
# config value, and one that starts with a digit may be taken for a number); no character needs escaping
# in the route URLs that carry NATS_ROUTE_PASSWORD.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
file=${1:-$(cd "$here/.." && pwd)/.env}
VARIABLES=(NATS_ADMIN_PASSWORD NATS_CHAT_SERVICE_PASSWORD NATS_BROADCASTER_PASSWORD NATS_GATEWAY_PASSWORD NATS_ROUTE_PASSWORD)

# No `tr </dev/urandom | head`: the cut-off pipe kills tr with SIGPIPE, which pipefail would report.
random_password() {
    local pool letters
    pool=$(LC_ALL=C tr -dc 'A-Za-z0-9' < <(head -c 4096 /dev/urandom))
    letters=${pool//[0-9]/}
    ((${#pool} >= 31 && ${#letters} >= 1)) || { echo "make-env: error: /dev/urandom gave too little" >&2; exit 1; }
    echo "${letters:0:1}${pool:1:31}"
}

umask 077
[[ -e $file ]] || : >"$file"
# Appending to a last line without its newline would glue two assignments together.
[[ ! -s $file || $(tail -c 1 "$file") == "" ]] || echo >>"$file"
added=()
for variable in "${VARIABLES[@]}"; do
    if grep -Eq "^${variable}=.+" "$file"; then
        continue
    fi
    grep -Eq "^${variable}=" "$file" && { echo "make-env: error: $file has an empty $variable; set it or delete the line" >&2; exit 1; }
    printf '%s=%s\n' "$variable" "$(random_password)" >>"$file"
    added+=("$variable")
done
if ((${#added[@]})); then
    echo "make-env: wrote ${added[*]} to $file" >&2
else
    echo "make-env: $file already has every password; nothing changed" >&2
fi
