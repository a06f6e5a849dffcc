#!/usr/bin/env bash
# Install (from Debian's packages), start and prepare PostgreSQL for the multi-worker search tests.
# Prints the database URL on stdout; fails (non-zero) if the server does not answer.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -q "^$ver main$"; then
    pg_createcluster "$ver" main >&2
fi
pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 || true
for _ in $(seq 1 60); do
    if su postgres -c "pg_isready -q" 2>/dev/null; then break; fi
    sleep 0.5
done
su postgres -c "pg_isready -q" || { echo "PostgreSQL $ver did not start" >&2; exit 1; }
su postgres -c "psql -q -v ON_ERROR_STOP=1" >&2 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'funnelbench') THEN
    CREATE ROLE funnelbench LOGIN PASSWORD 'funnelbench';
  END IF;
END $$;
SQL
su postgres -c "psql -q -tAc \"SELECT 1 FROM pg_database WHERE datname = 'funnelbench_test'\"" | grep -q 1 \
    || su postgres -c "createdb -O funnelbench funnelbench_test" >&2
echo "postgresql://funnelbench:funnelbench@localhost:5432/funnelbench_test"
