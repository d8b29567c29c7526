#!/bin/bash
# `jobfleet logs JOB > /dev/null` timed with the code in $BEFORE (default: the main
# checkout) and this checkout's, alternately, three times each. Needs a running server
# with that job and JOBFLEET_BOOTSTRAP; run from the checkout's root.
job=${1:?usage: bench/cli_logs.sh JOB_ID}
before=${BEFORE:-/work/main/src}
: "${JOBFLEET_BOOTSTRAP:?point it at the bootstrap.json of the server}"
echo "uptime before: $(uptime)"
for i in 1 2 3; do
  for src in "$before" src; do
    start=$(date +%s.%N)
    PYTHONPATH=$src .venv/bin/python -m jobfleet logs "$job" > /dev/null
    end=$(date +%s.%N)
    echo "$src run $i: $(python3 -c "print(round($end - $start, 2))") s"
  done
done
echo "uptime after: $(uptime)"
