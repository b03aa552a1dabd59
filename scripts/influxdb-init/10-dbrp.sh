#!/bin/bash
# Runs once inside the influxdb:2 container after setup: map the InfluxQL
# database/retention policy "finsentry/autogen" to the "finsentry" bucket, so
# Grafana's InfluxQL data source and the 1.x-style /query endpoint work.
set -euo pipefail
bucket_id=$(influx bucket list --org "${DOCKER_INFLUXDB_INIT_ORG}" --name "${DOCKER_INFLUXDB_INIT_BUCKET}" --hide-headers | awk '{print $1}')
influx v1 dbrp create --org "${DOCKER_INFLUXDB_INIT_ORG}" --db finsentry --rp autogen --bucket-id "${bucket_id}" --default
