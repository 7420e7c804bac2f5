#!/usr/bin/env bash
# A Warden worker in plain bash + psql: claims jobs of one topic, "handles" them, and
# completes them under their lease token. Any language can do the same with the four
# SQL functions (warden.claim_jobs, heartbeat_job, complete_job, fail_job). It needs
# nothing else: log in as a role that is a member of warden_worker and was granted the
# topic (`warden workers grant ROLE --tenant T --topic GLOB`, docs/sql-worker.md).
#
#   WARDEN_DATABASE_URL=postgresql://… docs/examples/psql_worker.sh TOPIC [MAX_JOBS]
#
# It exits after one batch when ONCE=1 (used by the test), else polls every 2 s.
set -euo pipefail
topic=${1:?usage: psql_worker.sh TOPIC [MAX_JOBS]}
max_jobs=${2:-10}
psql_() { psql "$WARDEN_DATABASE_URL" -X -q -t -A -v ON_ERROR_STOP=1 "$@"; }

while true; do
  # one claim = one short transaction; each row: job_id, lease_token, input (tab-separated)
  claimed=$(psql_ -F $'\t' -v topic="$topic" -v n="$max_jobs" <<'SQL'
SELECT job_id, lease_token, input
  FROM warden.claim_jobs(ARRAY[:'topic'], 'psql-worker', :n, interval '60 seconds');
SQL
)
  while IFS=$'\t' read -r job_id token input; do
    [ -n "$job_id" ] || continue
    # the "work": echo the input back as the result. A long job would call
    # warden.heartbeat_job(job_id, token, interval '60 seconds', checkpoint) meanwhile.
    result=$(printf '{"handled_by": "psql", "input": %s}' "$input")
    # psql substitutes :'var' (quoted safely) only in what it reads, not in -c
    if psql_ -v id="$job_id" -v tok="$token" -v res="$result" >/dev/null 2>&1 <<'SQL'
SELECT warden.complete_job(:'id', :'tok'::uuid, :'res'::jsonb);
SQL
    then
      echo "completed $job_id"
    else
      # fenced (WD001/WD002): the lease was lost or the run cancelled; nothing changed
      echo "lost $job_id" >&2
    fi
  done <<< "$claimed"
  [ "${ONCE:-0}" = 1 ] && exit 0
  sleep 2
done
