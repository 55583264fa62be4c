#!/bin/sh
# Stand-in for configuring one region's Kubernetes cluster (kubectl/helm).
# usage: configure-kubernetes.sh REGION CLUSTER BASE_SECONDS
set -eu
. "$(dirname "$0")/lib.sh"
region=$1
cluster=$2
base=${3:-1.5}
mark
echo "Merged \"$cluster\" as current context in kubeconfig"
echo "namespace/besu created"
echo "storageclass.storage.k8s.io/premium-ssd created"
scaled_sleep "$base" "k8s:$region"
fail_if_listed "$region" "kubectl apply"
echo "Release \"ingress-nginx\" has been upgraded. Happy Helming!"
echo "context=$cluster" >>"$FLEETRUN_OUTPUT"
