#!/usr/bin/env bash
# PostgreSQL 15 + PostGIS for the STAC-API tests (tests/test_pgstac.py start their own private
# cluster on 127.0.0.1 and stop it by PID). Installs from Debian's package registry when absent;
# does nothing when PostGIS is already there or when this is not a Debian-like machine.
set -euo pipefail
if [ -f /usr/share/postgresql/15/extension/postgis.control ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-postgres: no apt-get; install PostgreSQL 15 + PostGIS 3 yourself to run the pgstac tests" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-postgres: not root and no sudo; the pgstac tests will be skipped" >&2
    exit 0
  fi
fi
# The tests run their own cluster: do not let the package create and start a system one.
$SUDO mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/no-main.conf >/dev/null
# Best effort: without the packages the pgstac tests are skipped with the reason, the rest runs.
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
       --no-install-recommends postgresql-15 postgresql-15-postgis-3 >/dev/null; }; then
  echo "install-postgres: could not install postgresql-15-postgis-3; the pgstac tests will be skipped" >&2
fi
