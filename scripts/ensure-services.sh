#!/usr/bin/env bash
# Installs the servers the test suite starts by itself when missing: redis-server, PostgreSQL,
# rsyslog, rabbitmq-server and nats-server (all from Debian's packages).
# The suite starts its own throwaway instances on free loopback ports; nothing is left running:
# the packages' own services are kept from starting during the install (policy-rc.d).
set -euo pipefail

find_initdb() {
    command -v initdb 2>/dev/null && return 0
    ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 | grep . && return 0
    return 1
}

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
find_initdb >/dev/null || need+=(postgresql)
command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ] || need+=(rsyslog)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1 || need+=(rabbitmq-server)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "ensure-services: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
        exit 1
    fi
    echo "ensure-services: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages from starting their system-wide services (a redis on 6379, the main
    # PostgreSQL cluster): the suite starts its own. Only add the policy if none exists.
    policy=/usr/sbin/policy-rc.d
    added_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    cleanup() { if [ "$added_policy" = 1 ]; then rm -f "$policy"; fi; }
    trap cleanup EXIT
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

command -v redis-server >/dev/null 2>&1 || { echo "ensure-services: redis-server still missing" >&2; exit 1; }
initdb=$(find_initdb) || { echo "ensure-services: initdb still missing" >&2; exit 1; }
for server in /usr/sbin/rsyslogd nats-server; do
    command -v "$server" >/dev/null 2>&1 || { echo "ensure-services: $server still missing" >&2; exit 1; }
done
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1 \
    || { echo "ensure-services: rabbitmq-server still missing" >&2; exit 1; }
echo "ensure-services: redis-server $(redis-server --version | awk '{print $3}'), $("$initdb" --version), $(/usr/sbin/rsyslogd -v | head -n 1 | awk '{print $1, $2}'), nats-server $(nats-server --version | awk '{print $NF}')"
