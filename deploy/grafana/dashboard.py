#!/usr/bin/env python3
"""Writes dashboards/mfpo.json, the Grafana dashboard of the MFPO job service.

Run after editing: /usr/bin/python3 deploy/grafana/dashboard.py. Every expression here uses
the metric names of docs/metrics.md (and the DCGM exporter's for the GPU row)."""
import json
import os

PANELS = [
    # (title, type, [(expr, legend)], unit, width)
    ("Jobs by state", "stat", [('sum by (state) (mfpo_jobs)', "{{state}}")], "short", 8),
    ("Job progress", "bargauge", [('mfpo_job_step / clamp_min(mfpo_job_total_steps, 1)', "{{job_id}}")], "percentunit", 8),
    ("ETA", "stat", [('mfpo_job_eta_seconds', "{{job_id}}")], "s", 8),
    ("Loss terms", "timeseries", [('mfpo_job_loss', "{{job_id}} {{term}}")], "short", 12),
    ("Reward accuracy: text vs image", "timeseries",
     [('mfpo_job_reward_accuracy{modality="text"}', "{{job_id}} text"),
      ('mfpo_job_reward_accuracy{modality="image"}', "{{job_id}} image")], "percentunit", 12),
    ("Throughput", "timeseries",
     [('mfpo_job_samples_per_second', "{{job_id}} samples/s"),
      ('sum(rate(mfpo_train_tokens_total[5m]))', "tokens/s")], "short", 12),
    ("Step time by part (p50 / p99)", "timeseries",
     [('histogram_quantile(0.5, sum by (le, part) (rate(mfpo_train_step_part_seconds_bucket[5m])))', "p50 {{part}}"),
      ('histogram_quantile(0.99, sum by (le, part) (rate(mfpo_train_step_part_seconds_bucket[5m])))', "p99 {{part}}")],
     "s", 12),
    ("Exposed all-reduce share of the step", "timeseries",
     [('sum(rate(mfpo_train_step_part_seconds_sum{part="allreduce_wait"}[5m])) / '
       'clamp_min(sum(rate(mfpo_train_step_seconds_sum[5m])), 1e-9)', "all-reduce wait / step")], "percentunit", 12),
    ("Checkpoint age", "stat", [('time() - mfpo_checkpoint_last_timestamp_seconds', "{{instance}}")], "s", 12),
    ("Datagen rate", "timeseries", [('sum by (result) (rate(mfpo_datagen_records_total[5m]))', "{{result}}")], "short", 12),
    ("Datagen backlog", "timeseries",
     [('sum(mfpo_datagen_queue_depth)', "queue depth"), ('sum(mfpo_datagen_records_in_flight)', "in flight")],
     "short", 12),
    ("Workers", "timeseries", [('sum by (role, state) (mfpo_workers)', "{{role}} {{state}}")], "short", 12),
    ("Heartbeat handling p99", "timeseries",
     [('histogram_quantile(0.99, sum by (le) (rate(mfpo_coordinator_heartbeat_seconds_bucket[5m])))', "p99")],
     "s", 12),
    ("GPU utilisation (DCGM)", "timeseries", [('DCGM_FI_DEV_GPU_UTIL', "{{Hostname}} gpu {{gpu}}")], "percent", 8),
    ("GPU memory used (DCGM)", "timeseries", [('DCGM_FI_DEV_FB_USED', "{{Hostname}} gpu {{gpu}}")], "decmbytes", 8),
    ("GPU power (DCGM)", "timeseries", [('DCGM_FI_DEV_POWER_USAGE', "{{Hostname}} gpu {{gpu}}")], "watt", 8),
]


def main():
    panels, x, y, row_height = [], 0, 0, 8
    for i, (title, kind, targets, unit, width) in enumerate(PANELS):
        if x + width > 24:
            x, y = 0, y + row_height
        panels.append({
            "id": i + 1, "title": title, "type": kind,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"x": x, "y": y, "w": width, "h": row_height},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
            "targets": [{"refId": chr(65 + j), "expr": e, "legendFormat": legend,
                         "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                        for j, (e, legend) in enumerate(targets)],
        })
        x += width
    dashboard = {
        "uid": "mfpo-service", "title": "MFPO job service", "schemaVersion": 38, "version": 1,
        "tags": ["mfpo"], "timezone": "browser", "refresh": "10s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}]},
        "panels": panels,
    }
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboards", "mfpo.json")
    with open(out, "w") as f:
        json.dump(dashboard, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
