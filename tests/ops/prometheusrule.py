#!/usr/bin/env python3
"""Print deploy/components/prometheus-operator/prometheusrule.yaml: alerts/herald.rules.yaml wrapped as a
prometheus-operator PrometheusRule, labelled for kube-prometheus-stack's default rule selector.

Usage: python3 tests/ops/prometheusrule.py > deploy/components/prometheus-operator/prometheusrule.yaml
The ops_assets test runs this and fails when the committed file differs.
"""
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, so the file stays readable."""


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _str)


def main() -> int:
    rules = yaml.safe_load((ROOT / "alerts" / "herald.rules.yaml").read_text())
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "herald",
            "namespace": "herald",
            "labels": {
                "app.kubernetes.io/name": "herald",
                "app.kubernetes.io/component": "alerts",
                "release": "kube-prometheus-stack",
            },
        },
        "spec": {"groups": rules["groups"]},
    }
    sys.stdout.write(
        "# Generated from alerts/herald.rules.yaml by tests/ops/prometheusrule.py; do not edit by hand.\n"
    )
    sys.stdout.write(yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=120, allow_unicode=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
