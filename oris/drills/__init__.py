"""Incident drills: each playbook of the runbook reproduced against real processes."""
