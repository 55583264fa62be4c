#!/bin/sh
# Stand-in for installing monitoring (Prometheus, Grafana) in the admin region.
# usage: deploy-monitoring.sh REGION BASE_SECONDS
set -eu
. "$(dirname "$0")/lib.sh"
region=$1
base=${2:-2}
mark
echo "helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack -n monitoring"
scaled_sleep "$base" "monitoring:$region"
fail_if_listed "$region" "helm upgrade monitoring"
echo "STATUS: deployed"
echo "grafana_url=https://grafana.$region.chain138.example.invalid" >>"$FLEETRUN_OUTPUT"
