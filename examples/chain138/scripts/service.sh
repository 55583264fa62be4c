#!/bin/sh
# Stand-in for start/stop/status of one region's services (kubectl scale / get).
# usage: service.sh start|stop|status REGION [ROLE]
set -eu
. "$(dirname "$0")/lib.sh"
action=$1
region=$2
role=${3:-validator}
mark
scaled_sleep 0.3 "service-$action:$region"
fail_if_listed "$region" "$action"
case $action in
    start) echo "statefulset.apps/besu-validator scaled (region $region, replicas up)" ;;
    stop) echo "statefulset.apps/besu-validator scaled (region $region, replicas 0)" ;;
    status)
        if [ "$role" = admin ]; then
            echo "region $region: monitoring Running"
        else
            echo "region $region: besu-validator Running, peers $(( $(hash32 "peers/$region") % 20 + 20 ))"
        fi
        ;;
    *) echo "unknown action $action" >&2; exit 2 ;;
esac
